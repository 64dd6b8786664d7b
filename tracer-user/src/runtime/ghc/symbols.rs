//! Where the GHC RTS is in a process: the file it is linked into (the executable, or
//! `libHSrts*.so` for a dynamically linked program), its symbols and the GHC version.
//!
//! GHC links its RTS statically by default, so the mappings show only the executable; the
//! RTS is recognised by its symbols, which GHC programs keep (they are not stripped by
//! default). The version comes from the `.comment` section, where every object GHC compiles
//! adds `GHC 9.0.2`. This is read once per process (the runtime's memo), from the file the
//! process maps (`/proc/PID/map_files/`), never from the process itself.

use std::fs::File;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache};

use super::layout::RtsAddresses;
use crate::procs::maps::{Mapping, Maps};

/// What was found about the RTS of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RtsImage {
    /// The GHC version (`9.0.2`), from `.comment`.
    pub version: Option<String>,
    /// The RTS is the threaded one (it has `yieldCapability`).
    pub threaded: bool,
    /// The thread lists' addresses, relocated, when every symbol was found.
    pub addresses: Option<RtsAddresses>,
}

/// The file holding the RTS: a mapped `libHSrts*.so`, else the executable (the first file
/// mapping, as the kernel maps it first).
fn rts_mapping(maps: &Maps) -> Option<&Mapping> {
    let file_name = |m: &Mapping| m.path.rsplit('/').next().unwrap_or_default().to_owned();
    maps.iter()
        .filter(|m| m.is_file())
        .find(|m| file_name(m).starts_with("libHSrts"))
        .or_else(|| maps.iter().find(|m| m.is_file()))
}

/// Reads the RTS's symbols and version from the file `pid` maps it from; `None` if that
/// file is not a GHC program (it lacks `hs_main` and the RTS's thread lists).
pub(super) fn read(pid: u32, maps: &Maps) -> Option<RtsImage> {
    let mapping = rts_mapping(maps)?;
    let first = maps
        .iter()
        .filter(|m| m.path == mapping.path && m.inode == mapping.inode)
        .min_by_key(|m| m.start)?;
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", first.start, first.end);
    let file = File::open(&path)
        .or_else(|_| File::open(&mapping.path))
        .ok()?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let symbol = |name: &str| {
        elf.symbols()
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| s.address())
    };
    symbol("hs_main").or_else(|| symbol("hs_init_ghc"))?;
    let first_load = elf.segments().map(|s| s.address()).min()? & !0xfff;
    let bias = first
        .start
        .wrapping_sub(first.offset)
        .wrapping_sub(first_load);
    let at = |name: &str| symbol(name).map(|a| a.wrapping_add(bias));
    let addresses = (|| {
        Some(RtsAddresses {
            generations: at("generations")?,
            oldest_gen: at("oldest_gen")?,
            end_tso_queue: at("stg_END_TSO_QUEUE_closure")?,
            tso_info: at("stg_TSO_info")?,
        })
    })();
    let version = elf
        .section_by_name(".comment")
        .and_then(|s| s.data().ok())
        .and_then(ghc_version);
    Some(RtsImage {
        version,
        threaded: symbol("yieldCapability").is_some(),
        addresses,
    })
}

/// The GHC version in a `.comment` section: the first `GHC <digits and dots>`.
pub(super) fn ghc_version(comment: &[u8]) -> Option<String> {
    comment
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter_map(|s| s.strip_prefix("GHC "))
        .find(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the version is found among the compilers' `.comment` strings.
    #[test]
    fn version_from_comment() {
        let comment = b"GCC: (Debian 12.2.0-14+deb12u1) 12.2.0\0GHC 9.0.2\0";
        assert_eq!(ghc_version(comment).as_deref(), Some("9.0.2"));
        assert_eq!(ghc_version(b"GCC: (GNU) 13\0GHC version\0"), None);
    }
}
