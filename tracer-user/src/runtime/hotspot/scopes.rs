//! The Java methods a compiled frame is at, inlined ones included, with their bytecode
//! indexes: the compiled method's debug information, as the VM reads it for deoptimization
//! and for `jstack`.
//!
//! An `nmethod` records, for each call's return address, a `PcDesc` (`_pc_offset` from its
//! code's start, `_scope_decode_offset` into its scopes data). A scope is a stream of
//! `UNSIGNED5` numbers: the offset of the enclosing scope (the method this one was inlined
//! into; 0 for none), the method (an index into the nmethod's metadata, 1-based), the bci
//! (stored plus one); locals and monitors follow and are not read. The scopes are chained
//! innermost first.

use super::{HotspotError, frame_layout::FrameLayout, vmstructs::Reader};

/// Most `PcDesc`s searched in one compiled method.
const MAX_PC_DESCS: u64 = 100_000;
/// Deepest chain of inlined scopes followed.
const MAX_SCOPES: usize = 64;
/// `DebugInformationRecorder::serialized_null`: no enclosing scope.
const SERIALIZED_NULL: u32 = 0;

/// One method of a compiled frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Its `Method*`.
    pub method: u64,
    /// Its bytecode index (negative at the method's entry).
    pub bci: i32,
}

/// The scopes of nmethod `nmethod` at `pc`, innermost first; empty if it records none there.
pub(crate) fn scopes_at(
    reader: &Reader<'_>,
    l: &FrameLayout,
    nmethod: u64,
    pc: u64,
) -> Result<Vec<Scope>, HotspotError> {
    let code_begin = reader.u64(nmethod + l.blob_code_begin)?;
    let pc_offset = u32::try_from(pc.wrapping_sub(code_begin))
        .map_err(|_| HotspotError::Implausible("pc offset"))?;
    let offset_at =
        |field: u64| -> Result<u64, HotspotError> { Ok(u64::from(reader.u32(nmethod + field)?)) };
    let pcs = nmethod + offset_at(l.nm_scopes_pcs_offset)?;
    let pcs_end = nmethod + offset_at(l.nm_dependencies_offset)?;
    let metadata = nmethod + offset_at(l.nm_metadata_offset)?;
    let scopes_data = reader.u64(nmethod + l.compiled_scopes_data)?;
    if pcs_end < pcs || (pcs_end - pcs) / l.pc_desc_size > MAX_PC_DESCS {
        return Err(HotspotError::Implausible("PcDesc table"));
    }
    let descs = reader.vec(pcs, (pcs_end - pcs) as usize)?;
    let decode_offset = descs
        .chunks_exact(l.pc_desc_size as usize)
        .find(|d| word32(d, l.pc_desc_pc_offset) == Some(pc_offset))
        .and_then(|d| word32(d, l.pc_desc_scope_offset));
    let Some(mut offset) = decode_offset else {
        return Ok(Vec::new());
    };
    let mut scopes = Vec::new();
    while offset != SERIALIZED_NULL && scopes.len() < MAX_SCOPES {
        // Sender offset, method index, bci: at most 15 bytes.
        let bytes = reader
            .vec(scopes_data + u64::from(offset), 15)
            .or_else(|_| reader.vec(scopes_data + u64::from(offset), 3))?;
        let mut stream = bytes.iter().copied();
        let (Some(sender), Some(index), Some(bci)) = (
            unsigned5(&mut stream),
            unsigned5(&mut stream),
            unsigned5(&mut stream),
        ) else {
            return Err(HotspotError::Implausible("scope"));
        };
        if index == 0 {
            return Err(HotspotError::Implausible("scope without method"));
        }
        let method = reader.u64(metadata + (u64::from(index) - 1) * 8)?;
        scopes.push(Scope {
            method,
            bci: bci as i32 - 1,
        });
        if sender >= offset {
            break;
        }
        offset = sender;
    }
    Ok(scopes)
}

/// The u32 at `at` in `bytes`.
fn word32(bytes: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// One `UNSIGNED5` number (`CompressedReadStream::read_int`).
pub(crate) fn unsigned5(stream: &mut impl Iterator<Item = u8>) -> Option<u32> {
    const LOW: u32 = 192;
    let mut sum: u32 = 0;
    let mut shift = 0;
    for i in 0..5 {
        let byte = u32::from(stream.next()?);
        sum = sum.wrapping_add(byte << shift);
        if byte < LOW || i == 4 {
            break;
        }
        shift += 6;
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::{
        super::{frame_layout::tests::jdk17, vmstructs::tests::Image},
        *,
    };

    /// Check the scopes of a call site where `ReentrantLock.lock` (bci 4) was inlined into
    /// `LockDeadlock.take` (bci 1), and that a pc without a `PcDesc` has none.
    #[test]
    fn inlined_scopes_innermost_first() {
        let l = jdk17();
        let mut image = Image::new(0x10_0000, 0x30_0000);
        let nm = 0x20_0000u64;
        let code = nm + 0x100;
        image.put_u64(nm + l.blob_code_begin, code);
        image.put(nm + l.nm_scopes_pcs_offset, &0x400u32.to_le_bytes());
        image.put(nm + l.nm_dependencies_offset, &0x420u32.to_le_bytes());
        image.put(nm + l.nm_metadata_offset, &0x500u32.to_le_bytes());
        let data = 0x21_0000;
        image.put_u64(nm + l.compiled_scopes_data, data);
        // Two PcDescs: a call at code + 0x40 (scope at 1), one at + 0x7c (scope at 200).
        for (i, (pc_offset, scope)) in [(0x40u32, 1u32), (0x7c, 200)].iter().enumerate() {
            let desc = nm + 0x400 + i as u64 * 16;
            image.put(desc + l.pc_desc_pc_offset, &pc_offset.to_le_bytes());
            image.put(desc + l.pc_desc_scope_offset, &scope.to_le_bytes());
        }
        // Metadata: [take, lock].
        image.put_u64(nm + 0x500, 0x7a4e);
        image.put_u64(nm + 0x508, 0x10c4);
        // Scope at 200: the inlined `lock`, its sender at 1, method 2, bci 4 (stored 5).
        image.put(data + 200, &[1, 2, 5]);
        // Scope at 1: `take`, no sender, method 1, bci 1 (stored 2).
        image.put(data + 1, &[0, 1, 2]);
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let scopes = scopes_at(&reader, &l, nm, code + 0x7c).expect("scopes");
        assert_eq!(
            scopes,
            [
                Scope {
                    method: 0x10c4,
                    bci: 4
                },
                Scope {
                    method: 0x7a4e,
                    bci: 1
                }
            ]
        );
        assert_eq!(
            scopes_at(&reader, &l, nm, code + 0x40)
                .expect("scopes")
                .len(),
            1
        );
        assert!(
            scopes_at(&reader, &l, nm, code + 0x44)
                .expect("scopes")
                .is_empty()
        );
    }

    /// Check multi-byte `UNSIGNED5` numbers and a stream cut short.
    #[test]
    fn unsigned5_numbers() {
        assert_eq!(unsigned5(&mut [5u8].into_iter()), Some(5));
        assert_eq!(unsigned5(&mut [0xD0u8, 0x1C].into_iter()), Some(2000));
        assert_eq!(unsigned5(&mut [0xD0u8].into_iter()), None);
    }
}
