//! Java objects as the VM lays them out: an object's class and its name, a field of an object
//! found by name in its class's metadata, a `String`'s text.
//!
//! Java field offsets are not in the VM's tables (they are chosen when a class is loaded), so
//! they are looked up the way the VM does: the class's `FieldInfo` array (JDK 8 to 20: u2
//! slots, the name a constant pool index, the offset packed with a tag), then its
//! superclasses. What is found is cached per (class, field) for the process's lifetime:
//! classes are not unloaded while their objects live, and the classes read here
//! (`java.lang.Thread`, `String`, lock classes) are never unloaded.

use std::collections::HashMap;

use super::{
    HotspotError,
    layout::{ACC_STATIC, Flags, Layout},
    vmstructs::{Reader, VmStructs},
};

/// Longest class or field name read, bytes.
const MAX_SYMBOL_BYTES: u16 = 512;
/// Longest Java string read (thread names), characters.
const MAX_STRING_CHARS: u32 = 256;
/// Deepest class hierarchy walked.
const MAX_SUPERS: usize = 32;
/// Most fields a class is searched through.
const MAX_FIELDS: u16 = 4096;

/// Reads Java objects through a layout; caches field offsets.
pub(crate) struct Heap<'a> {
    /// The process's memory.
    pub reader: Reader<'a>,
    /// The layout.
    pub layout: &'a Layout,
    /// Field offsets found so far, by (class, field name); `None`: the class has no such field.
    pub field_offsets: &'a mut HashMap<(u64, &'static str), Option<u64>>,
}

impl Heap<'_> {
    /// The class (`Klass*`) of object `oop`.
    pub(crate) fn klass_of(&self, oop: u64) -> Result<u64, HotspotError> {
        let at = oop + self.layout.oop_klass;
        if self.layout.compressed_klass {
            let narrow = self.reader.u32(at)?;
            let base = self.reader.u64(self.layout.narrow_klass_base)?;
            let shift = self.reader.u32(self.layout.narrow_klass_shift)?;
            Ok(base + (u64::from(narrow) << shift))
        } else {
            self.reader.u64(at)
        }
    }

    /// The name of class `klass`, in Java's dotted form (`java.lang.Object`).
    pub(crate) fn class_name(&self, klass: u64) -> Result<String, HotspotError> {
        let symbol = self.reader.u64(klass + self.layout.klass_name)?;
        Ok(self.symbol(symbol)?.replace('/', "."))
    }

    /// The text of `Symbol*` `symbol`.
    fn symbol(&self, symbol: u64) -> Result<String, HotspotError> {
        let length = self.reader.u16(symbol + self.layout.symbol_length)?;
        if length > MAX_SYMBOL_BYTES {
            return Err(HotspotError::Implausible("symbol length"));
        }
        let body = self
            .reader
            .vec(symbol + self.layout.symbol_body, usize::from(length))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The offset of instance field `name` in objects of class `klass` (declared by it or a
    /// superclass); `None` if it has none.
    pub(crate) fn field_offset(
        &mut self,
        klass: u64,
        name: &'static str,
    ) -> Result<Option<u64>, HotspotError> {
        if let Some(&found) = self.field_offsets.get(&(klass, name)) {
            return Ok(found);
        }
        let mut class = klass;
        let mut found = None;
        for _ in 0..MAX_SUPERS {
            if class == 0 {
                break;
            }
            found = self.declared_field(class, name)?;
            if found.is_some() {
                break;
            }
            class = self.reader.u64(class + self.layout.klass_super)?;
        }
        self.field_offsets.insert((klass, name), found);
        Ok(found)
    }

    /// The offset of instance field `name` declared by class `klass` itself.
    fn declared_field(&self, klass: u64, name: &str) -> Result<Option<u64>, HotspotError> {
        let l = self.layout;
        let info = l.field_info;
        let fields = self.reader.u64(klass + l.ik_fields)?;
        let count = self.reader.u16(klass + l.ik_java_fields_count)?;
        let constants = self.reader.u64(klass + l.ik_constants)?;
        if fields == 0 || count > MAX_FIELDS {
            return Ok(None);
        }
        for i in 0..u64::from(count) {
            let slot = |s: u64| fields + l.array_u2_data + (i * info.slots + s) * 2;
            let flags = self.reader.u16(slot(info.access_flags))?;
            if flags & ACC_STATIC != 0 {
                continue;
            }
            let name_index = u64::from(self.reader.u16(slot(info.name_index))?);
            let symbol = if flags & info.internal_flag != 0 {
                self.reader.u64(l.vm_symbols + name_index * 8)?
            } else {
                self.reader
                    .u64(constants + l.constant_pool_size + name_index * 8)?
            };
            if self.symbol(symbol)? != name {
                continue;
            }
            let low = u32::from(self.reader.u16(slot(info.low_packed))?);
            let high = u32::from(self.reader.u16(slot(info.high_packed))?);
            let packed = (high << 16) | low;
            let tag = packed & ((1 << info.tag_size) - 1);
            return Ok((tag == info.tag_offset).then_some(u64::from(packed >> info.tag_size)));
        }
        Ok(None)
    }

    /// The reference held by field `name` of object `oop` (0 for null); `None` if its class has
    /// no such field.
    pub(crate) fn reference_field(
        &mut self,
        oop: u64,
        name: &'static str,
    ) -> Result<Option<u64>, HotspotError> {
        let klass = self.klass_of(oop)?;
        let Some(offset) = self.field_offset(klass, name)? else {
            return Ok(None);
        };
        self.reference_at(oop + offset).map(Some)
    }

    /// The reference stored at `addr` in an object (compressed or not).
    fn reference_at(&self, addr: u64) -> Result<u64, HotspotError> {
        if !self.layout.compressed_oops {
            return self.reader.u64(addr);
        }
        let narrow = self.reader.u32(addr)?;
        if narrow == 0 {
            return Ok(0);
        }
        let base = self.reader.u64(self.layout.narrow_oop_base)?;
        let shift = self.reader.u32(self.layout.narrow_oop_shift)?;
        Ok(base + (u64::from(narrow) << shift))
    }

    /// The `long` field `name` of object `oop`; `None` if its class has no such field.
    pub(crate) fn long_field(
        &mut self,
        oop: u64,
        name: &'static str,
    ) -> Result<Option<u64>, HotspotError> {
        let klass = self.klass_of(oop)?;
        let Some(offset) = self.field_offset(klass, name)? else {
            return Ok(None);
        };
        self.reader.u64(oop + offset).map(Some)
    }

    /// The text of `java.lang.String` `string` (compact strings: a `byte[] value` and a
    /// `byte coder`, 0 for Latin-1 and 1 for UTF-16, since JDK 9).
    pub(crate) fn string(&mut self, string: u64) -> Result<String, HotspotError> {
        let klass = self.klass_of(string)?;
        let value_offset = self
            .field_offset(klass, "value")?
            .ok_or(HotspotError::MissingField("String.value".into()))?;
        let coder_offset = self
            .field_offset(klass, "coder")?
            .ok_or(HotspotError::MissingField("String.coder".into()))?;
        let value = self.reference_at(string + value_offset)?;
        let utf16 = self.reader.u8(string + coder_offset)? == 1;
        if value == 0 {
            return Err(HotspotError::Implausible("string without value"));
        }
        let (length, data) = self.array(value)?;
        let bytes = self
            .reader
            .vec(data, length.min(MAX_STRING_CHARS * 2) as usize)?;
        Ok(if utf16 {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            bytes.iter().map(|&b| char::from(b)).collect()
        })
    }

    /// The length and the address of the first element of array `array`: the length follows
    /// the class pointer; the elements start after the header whose size the array class's
    /// layout helper holds.
    fn array(&self, array: u64) -> Result<(u32, u64), HotspotError> {
        let klass_bytes = if self.layout.compressed_klass { 4 } else { 8 };
        let length = self
            .reader
            .u32(array + self.layout.oop_klass + klass_bytes)?;
        let klass = self.klass_of(array)?;
        let helper = self.reader.u32(klass + self.layout.klass_layout_helper)?;
        let (shift, mask) = self.layout.lh_header_size;
        let header = u64::from((helper >> shift) & mask);
        Ok((length, array + header))
    }
}

/// The `UseCompressedOops` and `UseCompressedClassPointers` flags, from the VM's flag table
/// (`JVMFlag::flags`, `numFlags` entries of `sizeof(JVMFlag)` with `_name` and `_addr`).
pub(crate) fn read_flags(reader: &Reader<'_>, t: &VmStructs) -> Result<Flags, HotspotError> {
    let table = reader.u64(t.address("JVMFlag", "flags")?)?;
    let count = reader.u64(t.address("JVMFlag", "numFlags")?)?;
    let size = t.size("JVMFlag")?;
    let name_at = t.offset("JVMFlag", "_name")?;
    let addr_at = t.offset("JVMFlag", "_addr")?;
    let mut flags = Flags {
        compressed_oops: false,
        compressed_klass: false,
    };
    let (mut oops, mut klass) = (None, None);
    for i in 0..count.min(10_000) {
        let entry = table + i * size;
        let name = reader.u64(entry + name_at)?;
        if name == 0 {
            continue;
        }
        let text = reader.vec(name, 27).unwrap_or_default();
        if text.starts_with(b"UseCompressedOops\0") {
            oops = Some(reader.u64(entry + addr_at)?);
        } else if text.starts_with(b"UseCompressedClassPointers\0") {
            klass = Some(reader.u64(entry + addr_at)?);
        }
    }
    let (Some(oops), Some(klass)) = (oops, klass) else {
        return Err(HotspotError::MissingField("UseCompressed* flags".into()));
    };
    flags.compressed_oops = reader.u8(oops)? != 0;
    flags.compressed_klass = reader.u8(klass)? != 0;
    Ok(flags)
}
