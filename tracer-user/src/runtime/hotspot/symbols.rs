//! Where `libjvm.so`'s serviceability exports are in a process: their stated addresses from
//! the file's dynamic symbol table, plus the load bias of the library's mapping.
//!
//! The file is opened through the process (`/proc/PID/map_files`, see `procs::files`), so a
//! JVM in a container or with its JDK upgraded in place is still read from its own
//! `libjvm.so`. This is done once per process (the runtime's memo).

use object::{Object, ObjectSegment, ObjectSymbol};

use super::{HotspotError, vmstructs::TableSymbols};
use crate::procs::{
    files::MappedFile,
    maps::{Mapping, Maps},
};

/// The prefix of every export the tables need.
const EXPORT_PREFIX: &str = "gHotSpot";

/// Whether a mapping is of HotSpot's VM library.
pub(crate) fn is_libjvm(mapping: &Mapping) -> bool {
    mapping.file_path().rsplit('/').next() == Some("libjvm.so")
}

/// A PT_LOAD segment: file bytes at `offset..offset+filesz` load at stated address `vaddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    /// Stated address.
    pub vaddr: u64,
    /// File offset.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
}

/// The load bias (run-time address minus stated address) given that file offset
/// `mapping_offset` is mapped at `mapping_start`: the segment covering that offset decides.
pub(crate) fn load_bias(
    segments: &[LoadSegment],
    mapping_start: u64,
    mapping_offset: u64,
) -> Option<u64> {
    let segment = segments.iter().find(|s| {
        s.offset & !0xfff <= mapping_offset && mapping_offset < s.offset.saturating_add(s.filesz)
    })?;
    Some(
        mapping_start
            .wrapping_sub(mapping_offset)
            .wrapping_add(segment.offset)
            .wrapping_sub(segment.vaddr),
    )
}

/// The run-time addresses of `libjvm.so`'s `gHotSpot*` exports in process `pid`.
pub(crate) fn table_symbols(pid: u32, maps: &Maps) -> Result<TableSymbols, HotspotError> {
    let mapping = maps
        .iter()
        .filter(|m| is_libjvm(m))
        .min_by_key(|m| m.offset)
        .ok_or(HotspotError::NoLibjvm)?;
    let file = MappedFile::open(pid, mapping).map_err(HotspotError::Open)?;
    let cache = object::ReadCache::new(&file.file);
    let elf = object::File::parse(&cache).map_err(HotspotError::Elf)?;
    let segments: Vec<LoadSegment> = elf
        .segments()
        .map(|s| LoadSegment {
            vaddr: s.address(),
            offset: s.file_range().0,
            filesz: s.file_range().1,
        })
        .collect();
    let bias =
        load_bias(&segments, mapping.start, mapping.offset).ok_or(HotspotError::NoLoadSegment)?;
    let mut symbols = TableSymbols::default();
    for symbol in elf.dynamic_symbols() {
        let Ok(name) = symbol.name() else { continue };
        if name.starts_with(EXPORT_PREFIX) && symbol.address() != 0 {
            symbols
                .addresses
                .insert(name.to_owned(), symbol.address().wrapping_add(bias));
        }
    }
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the bias comes from the segment covering the mapped offset (libjvm.so's
    /// usual layout: a read-only segment at 0, text, then data at a higher address than its
    /// file offset).
    #[test]
    fn bias_from_the_covering_segment() {
        let segments = [
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x1b_5000,
            },
            LoadSegment {
                vaddr: 0x1b_6000,
                offset: 0x1b5_000,
                filesz: 0xe0_0000,
            },
            LoadSegment {
                vaddr: 0x12d_9c40,
                offset: 0x12d_8c40,
                filesz: 0x8_0000,
            },
        ];
        let base = 0x7f93_a5c0_0000;
        assert_eq!(load_bias(&segments, base, 0), Some(base));
        assert_eq!(
            load_bias(&segments, base + 0x1b_6000, 0x1b_5000),
            Some(base)
        );
        assert_eq!(
            load_bias(&segments, base + 0x12d_9000, 0x12d_8000),
            Some(base)
        );
        assert_eq!(load_bias(&segments, base, 0x4000_0000), None);
        let m = Mapping::parse(
            "7f93a5c00000-7f93a5db5000 r--p 00000000 fe:00 9 /usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
        )
        .expect("maps line");
        assert!(is_libjvm(&m));
    }
}
