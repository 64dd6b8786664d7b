//! The tables HotSpot exports for its serviceability agent: every structure field, type size
//! and constant the VM's debuggers need, read out of the process's memory.
//!
//! `libjvm.so` exports `gHotSpotVMStructs` (a pointer to an array of `VMStructEntry`),
//! `gHotSpotVMTypes` (`VMTypeEntry`), `gHotSpotVMIntConstants` and `gHotSpotVMLongConstants`,
//! and for each array the offsets of its entries' members and its stride
//! (`gHotSpotVMStructEntryFieldNameOffset`, `...ArrayStride`, ...). The entry layouts are
//! themselves read from those exports, so nothing here assumes a JDK version: every array
//! ends at an entry whose name pointer is null. These tables are why no field offset of the
//! VM is ever hard-coded by this runtime.

use std::collections::HashMap;

use super::HotspotError;

/// Where the exported table symbols are in the process (load bias applied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableSymbols {
    /// Each exported `gHotSpot*` symbol's address, by name.
    pub addresses: HashMap<String, u64>,
}

impl TableSymbols {
    /// The address of export `name`.
    fn get(&self, name: &'static str) -> Result<u64, HotspotError> {
        self.addresses
            .get(name)
            .copied()
            .ok_or(HotspotError::MissingSymbol(name))
    }
}

/// One `VMStructEntry`: a field of a VM type, or a static's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldAt {
    /// A member at this offset in its type, bytes.
    Offset(u64),
    /// A static variable at this address.
    Static(u64),
}

/// The parsed tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VmStructs {
    /// Fields by (type name, field name).
    pub fields: HashMap<(String, String), FieldAt>,
    /// Type sizes in bytes, by type name.
    pub type_sizes: HashMap<String, u64>,
    /// Int and long constants, by name.
    pub constants: HashMap<String, i64>,
}

/// More entries than any JDK has (JDK 17 has about 2000 fields): a guard against reading
/// garbage for ever.
const MAX_ENTRIES: usize = 20_000;
/// The longest name read (type and field names are short identifiers).
const MAX_NAME_BYTES: usize = 128;

/// Reads through a `read_mem` closure.
pub(crate) struct Reader<'a> {
    /// Fills the buffer from the address; false if unreadable.
    pub read_mem: &'a dyn Fn(u64, &mut [u8]) -> bool,
}

impl Reader<'_> {
    /// `N` bytes at `addr`.
    pub(crate) fn bytes<const N: usize>(&self, addr: u64) -> Result<[u8; N], HotspotError> {
        let mut buf = [0u8; N];
        if (self.read_mem)(addr, &mut buf) {
            Ok(buf)
        } else {
            Err(HotspotError::Unreadable(addr))
        }
    }

    /// The u64 at `addr`.
    pub(crate) fn u64(&self, addr: u64) -> Result<u64, HotspotError> {
        self.bytes(addr).map(u64::from_ne_bytes)
    }

    /// The u32 at `addr`.
    pub(crate) fn u32(&self, addr: u64) -> Result<u32, HotspotError> {
        self.bytes(addr).map(u32::from_ne_bytes)
    }

    /// The u16 at `addr`.
    pub(crate) fn u16(&self, addr: u64) -> Result<u16, HotspotError> {
        self.bytes(addr).map(u16::from_ne_bytes)
    }

    /// The u8 at `addr`.
    pub(crate) fn u8(&self, addr: u64) -> Result<u8, HotspotError> {
        self.bytes::<1>(addr).map(|[b]| b)
    }

    /// `len` bytes at `addr`.
    pub(crate) fn vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, HotspotError> {
        let mut buf = vec![0u8; len];
        if (self.read_mem)(addr, &mut buf) {
            Ok(buf)
        } else {
            Err(HotspotError::Unreadable(addr))
        }
    }

    /// The NUL-terminated string at `addr` (read in small chunks: it may end near the end of
    /// a mapping); `None` for a null pointer.
    pub(crate) fn c_string(&self, addr: u64) -> Result<Option<String>, HotspotError> {
        if addr == 0 {
            return Ok(None);
        }
        let mut text = Vec::new();
        while text.len() < MAX_NAME_BYTES {
            let at = addr + text.len() as u64;
            // The last chunk may cross into unmapped memory: then byte by byte.
            let chunk: Vec<u8> = match self.bytes::<16>(at) {
                Ok(chunk) => chunk.to_vec(),
                Err(_) => vec![self.u8(at)?],
            };
            if let Some(end) = chunk.iter().position(|&b| b == 0) {
                text.extend_from_slice(&chunk[..end]);
                return Ok(Some(String::from_utf8_lossy(&text).into_owned()));
            }
            text.extend_from_slice(&chunk);
        }
        Err(HotspotError::Unreadable(addr))
    }
}

/// The layout of one exported array: its address, its stride and its members' offsets, by the
/// suffix of their export (`TypeName`, `FieldName`...).
struct Table {
    first: u64,
    stride: u64,
    members: HashMap<&'static str, u64>,
}

impl Table {
    /// Reads the layout of table `array` whose entry exports start with `entry`.
    fn read(
        reader: &Reader<'_>,
        symbols: &TableSymbols,
        array: &'static str,
        entry: &[(&'static str, &'static str)],
        stride: &'static str,
    ) -> Result<Self, HotspotError> {
        let first = reader.u64(symbols.get(array)?)?;
        let stride = reader.u64(symbols.get(stride)?)?;
        if stride == 0 || first == 0 {
            return Err(HotspotError::BadTable(array));
        }
        let mut members = HashMap::new();
        for &(member, export) in entry {
            members.insert(member, reader.u64(symbols.get(export)?)?);
        }
        Ok(Self {
            first,
            stride,
            members,
        })
    }

    /// The address of member `member` of entry `index`.
    fn at(&self, index: usize, member: &str) -> u64 {
        self.first + index as u64 * self.stride + self.members[member]
    }

    /// Calls `each` with every entry's index, until the one whose `name_member` is null.
    fn for_each(
        &self,
        reader: &Reader<'_>,
        name_member: &str,
        mut each: impl FnMut(usize, String) -> Result<(), HotspotError>,
    ) -> Result<(), HotspotError> {
        for index in 0..MAX_ENTRIES {
            let Some(name) = reader.c_string(reader.u64(self.at(index, name_member))?)? else {
                return Ok(());
            };
            each(index, name)?;
        }
        Err(HotspotError::BadTable("entries without end"))
    }
}

/// Reads the four tables from the process's memory.
pub(crate) fn read(reader: &Reader<'_>, symbols: &TableSymbols) -> Result<VmStructs, HotspotError> {
    let mut tables = VmStructs::default();
    let structs = Table::read(
        reader,
        symbols,
        "gHotSpotVMStructs",
        &[
            ("type", "gHotSpotVMStructEntryTypeNameOffset"),
            ("field", "gHotSpotVMStructEntryFieldNameOffset"),
            ("static", "gHotSpotVMStructEntryIsStaticOffset"),
            ("offset", "gHotSpotVMStructEntryOffsetOffset"),
            ("address", "gHotSpotVMStructEntryAddressOffset"),
        ],
        "gHotSpotVMStructEntryArrayStride",
    )?;
    structs.for_each(reader, "type", |i, type_name| {
        let Some(field) = reader.c_string(reader.u64(structs.at(i, "field"))?)? else {
            return Ok(());
        };
        let at = if reader.u32(structs.at(i, "static"))? != 0 {
            FieldAt::Static(reader.u64(structs.at(i, "address"))?)
        } else {
            FieldAt::Offset(reader.u64(structs.at(i, "offset"))?)
        };
        tables.fields.insert((type_name, field), at);
        Ok(())
    })?;
    let types = Table::read(
        reader,
        symbols,
        "gHotSpotVMTypes",
        &[
            ("type", "gHotSpotVMTypeEntryTypeNameOffset"),
            ("size", "gHotSpotVMTypeEntrySizeOffset"),
        ],
        "gHotSpotVMTypeEntryArrayStride",
    )?;
    types.for_each(reader, "type", |i, type_name| {
        let size = reader.u64(types.at(i, "size"))?;
        tables.type_sizes.insert(type_name, size);
        Ok(())
    })?;
    for (array, name, value, stride, wide) in [
        (
            "gHotSpotVMIntConstants",
            "gHotSpotVMIntConstantEntryNameOffset",
            "gHotSpotVMIntConstantEntryValueOffset",
            "gHotSpotVMIntConstantEntryArrayStride",
            false,
        ),
        (
            "gHotSpotVMLongConstants",
            "gHotSpotVMLongConstantEntryNameOffset",
            "gHotSpotVMLongConstantEntryValueOffset",
            "gHotSpotVMLongConstantEntryArrayStride",
            true,
        ),
    ] {
        let table = Table::read(
            reader,
            symbols,
            array,
            &[("name", name), ("value", value)],
            stride,
        )?;
        table.for_each(reader, "name", |i, constant| {
            let at = table.at(i, "value");
            let value = if wide {
                reader.u64(at)? as i64
            } else {
                i64::from(reader.u32(at)? as i32)
            };
            tables.constants.insert(constant, value);
            Ok(())
        })?;
    }
    Ok(tables)
}

impl VmStructs {
    /// The offset of member `field` of VM type `type_name`.
    pub(crate) fn offset(&self, type_name: &str, field: &str) -> Result<u64, HotspotError> {
        match self.fields.get(&(type_name.to_owned(), field.to_owned())) {
            Some(FieldAt::Offset(offset)) => Ok(*offset),
            _ => Err(HotspotError::MissingField(format!("{type_name}::{field}"))),
        }
    }

    /// The address of static `field` of VM type `type_name`.
    pub(crate) fn address(&self, type_name: &str, field: &str) -> Result<u64, HotspotError> {
        match self.fields.get(&(type_name.to_owned(), field.to_owned())) {
            Some(FieldAt::Static(address)) => Ok(*address),
            _ => Err(HotspotError::MissingField(format!("{type_name}::{field}"))),
        }
    }

    /// The size of VM type `type_name`, bytes.
    pub(crate) fn size(&self, type_name: &str) -> Result<u64, HotspotError> {
        self.type_sizes
            .get(type_name)
            .copied()
            .ok_or_else(|| HotspotError::MissingField(format!("sizeof({type_name})")))
    }

    /// The int or long constant `name`.
    pub(crate) fn constant(&self, name: &str) -> Result<i64, HotspotError> {
        self.constants
            .get(name)
            .copied()
            .ok_or_else(|| HotspotError::MissingField(format!("constant {name}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A process image made up for tests: little-endian bytes at `base`.
    pub(crate) struct Image {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl Image {
        pub(crate) fn new(base: u64, len: usize) -> Self {
            Self {
                base,
                bytes: vec![0; len],
            }
        }

        pub(crate) fn put(&mut self, addr: u64, value: &[u8]) {
            let at = (addr - self.base) as usize;
            self.bytes[at..at + value.len()].copy_from_slice(value);
        }

        pub(crate) fn put_u64(&mut self, addr: u64, value: u64) {
            self.put(addr, &value.to_le_bytes());
        }

        pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(at) = addr.checked_sub(self.base).map(|a| a as usize) else {
                return false;
            };
            match self.bytes.get(at..at + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }

    /// Lays out tables the way JDK 17's `libjvm.so` does (the entry layouts recorded from a
    /// live JVM 17.0.15: `VMStructEntry` of 48 bytes with type, field, type string, is-static,
    /// offset, address at 0, 8, 16, 24, 32, 40; `VMTypeEntry` of 40 bytes; constants of 16).
    pub(crate) fn jdk17_like(
        fields: &[(&str, &str, FieldAt)],
        types: &[(&str, u64)],
        constants: &[(&str, i64)],
    ) -> (Image, TableSymbols) {
        let mut image = Image::new(0x10_0000, 0x10_0000);
        let mut symbols = TableSymbols::default();
        let mut sym = 0x10_0000;
        let mut export = |image: &mut Image, name: &str, value: u64| {
            image.put_u64(sym, value);
            symbols.addresses.insert(name.to_owned(), sym);
            sym += 8;
        };
        let mut strings = 0x18_0000;
        let mut string = |image: &mut Image, text: &str| {
            let at = strings;
            image.put(at, text.as_bytes());
            strings += text.len() as u64 + 1;
            at
        };
        for (name, value) in [
            ("gHotSpotVMStructEntryTypeNameOffset", 0),
            ("gHotSpotVMStructEntryFieldNameOffset", 8),
            ("gHotSpotVMStructEntryIsStaticOffset", 24),
            ("gHotSpotVMStructEntryOffsetOffset", 32),
            ("gHotSpotVMStructEntryAddressOffset", 40),
            ("gHotSpotVMStructEntryArrayStride", 48),
            ("gHotSpotVMTypeEntryTypeNameOffset", 0),
            ("gHotSpotVMTypeEntrySizeOffset", 32),
            ("gHotSpotVMTypeEntryArrayStride", 40),
            ("gHotSpotVMIntConstantEntryNameOffset", 0),
            ("gHotSpotVMIntConstantEntryValueOffset", 8),
            ("gHotSpotVMIntConstantEntryArrayStride", 16),
            ("gHotSpotVMLongConstantEntryNameOffset", 0),
            ("gHotSpotVMLongConstantEntryValueOffset", 8),
            ("gHotSpotVMLongConstantEntryArrayStride", 16),
        ] {
            export(&mut image, name, value);
        }
        let structs = 0x11_0000;
        for (i, (type_name, field, at)) in fields.iter().enumerate() {
            let entry = structs + i as u64 * 48;
            let type_name = string(&mut image, type_name);
            let field = string(&mut image, field);
            image.put_u64(entry, type_name);
            image.put_u64(entry + 8, field);
            let (is_static, offset, address) = match at {
                FieldAt::Offset(o) => (0u32, *o, 0),
                FieldAt::Static(a) => (1, 0, *a),
            };
            image.put(entry + 24, &is_static.to_le_bytes());
            image.put_u64(entry + 32, offset);
            image.put_u64(entry + 40, address);
        }
        export(&mut image, "gHotSpotVMStructs", structs);
        let type_table = 0x12_0000;
        for (i, (type_name, size)) in types.iter().enumerate() {
            let entry = type_table + i as u64 * 40;
            let type_name = string(&mut image, type_name);
            image.put_u64(entry, type_name);
            image.put_u64(entry + 32, *size);
        }
        export(&mut image, "gHotSpotVMTypes", type_table);
        let ints = 0x13_0000;
        let longs = 0x14_0000;
        let (mut n_int, mut n_long) = (0, 0);
        for (name, value) in constants {
            let name_at = string(&mut image, name);
            if i32::try_from(*value).is_ok() {
                let entry = ints + n_int * 16;
                image.put_u64(entry, name_at);
                image.put(entry + 8, &(*value as i32).to_le_bytes());
                n_int += 1;
            } else {
                let entry = longs + n_long * 16;
                image.put_u64(entry, name_at);
                image.put_u64(entry + 8, *value as u64);
                n_long += 1;
            }
        }
        export(&mut image, "gHotSpotVMIntConstants", ints);
        export(&mut image, "gHotSpotVMLongConstants", longs);
        (image, symbols)
    }

    /// Check that fields, statics, type sizes and int and long constants are read from tables
    /// laid out as JDK 17 lays them out, up to their null-named end.
    #[test]
    fn reads_jdk17_layout_tables() {
        let (image, symbols) = jdk17_like(
            &[
                ("JavaThread", "_osthread", FieldAt::Offset(0x230)),
                ("OSThread", "_thread_id", FieldAt::Offset(0xd0)),
                (
                    "ThreadsSMRSupport",
                    "_java_thread_list",
                    FieldAt::Static(0x7f93_a70f_78e8),
                ),
            ],
            &[("ObjectMonitor", 208), ("JavaThread", 1384)],
            &[
                ("FieldInfo::field_slots", 6),
                ("_thread_blocked", 10),
                ("markWord::no_hash_in_place", 0x1_0000_0000_i64 << 3),
                ("negative", -2),
            ],
        );
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let tables = read(&reader, &symbols).expect("tables");
        assert_eq!(tables.offset("JavaThread", "_osthread").ok(), Some(0x230));
        assert_eq!(tables.offset("OSThread", "_thread_id").ok(), Some(0xd0));
        assert_eq!(
            tables
                .address("ThreadsSMRSupport", "_java_thread_list")
                .ok(),
            Some(0x7f93_a70f_78e8)
        );
        assert!(
            tables
                .offset("ThreadsSMRSupport", "_java_thread_list")
                .is_err()
        );
        assert!(tables.offset("JavaThread", "_nope").is_err());
        assert_eq!(tables.size("ObjectMonitor").ok(), Some(208));
        assert_eq!(tables.constant("FieldInfo::field_slots").ok(), Some(6));
        assert_eq!(tables.constant("negative").ok(), Some(-2));
        assert_eq!(
            tables.constant("markWord::no_hash_in_place").ok(),
            Some(0x8_0000_0000)
        );
        assert_eq!(tables.fields.len(), 3);
    }

    /// Check that a missing export or an unreadable table is an error, not an empty table.
    #[test]
    fn missing_exports_are_errors() {
        let (image, mut symbols) = jdk17_like(&[], &[], &[]);
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        assert!(read(&reader, &symbols).is_ok());
        symbols.addresses.remove("gHotSpotVMTypeEntrySizeOffset");
        assert!(matches!(
            read(&reader, &symbols),
            Err(HotspotError::MissingSymbol("gHotSpotVMTypeEntrySizeOffset"))
        ));
        symbols
            .addresses
            .insert("gHotSpotVMTypeEntrySizeOffset".into(), 0x9999_9999);
        assert!(matches!(
            read(&reader, &symbols),
            Err(HotspotError::Unreadable(0x9999_9999))
        ));
    }
}
