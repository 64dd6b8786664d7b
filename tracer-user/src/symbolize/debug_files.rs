//! Detached debug files: the names a stripped binary has only in its separate debug file.
//!
//! Distributions strip their binaries and ship the symbols and DWARF apart (Debian's
//! `-dbgsym` and `-dbg` packages), found by the binary's build id or by the file name its
//! `.gnu_debuglink` section names. The lookup order is gdb's, so a file gdb finds is found here:
//!
//! 1. by build id, in each debug directory: `/usr/lib/debug/.build-id/xx/yyyy.debug`, then
//!    `/lib/debug/.build-id/...` (`xx` the first byte in hex, `yyyy` the rest);
//! 2. by `.gnu_debuglink` name: next to the binary (`DIR/NAME`), in `DIR/.debug/NAME`, then
//!    under each debug directory with the binary's directory appended
//!    (`/usr/lib/debug/DIR/NAME`).
//!
//! A candidate must be the binary's: the same build id when both have one, else (a debug link
//! to a file without a build id) the CRC32 the debug link records. A binary whose own
//! `.debug_info` is there needs no lookup.
//!
//! Why not leave it to blazesym, which follows debug links itself: checked with blazesym 0.2.7,
//! it looks up build ids only in files that also have a `.gnu_debuglink`, never in `.debug/`,
//! and takes the directory and build id from the path it is given, which for a file we opened
//! through `/proc/self/fd/N` (deleted or replaced since it was mapped) is `/proc/self/fd`. Here
//! the build id and debug link come from the open file, and the directory from the path the
//! process mapped. A debug file found is symbolized on its own, by the address the file offset
//! has in the binary ([`DebugFile::virt_offset`]): a debug file's sections keep the binary's
//! addresses but not its file layout. (blazesym still resolves the debug file's own
//! `.gnu_debugaltlink` to a `dwz` supplementary file, as Debian's are.)
//!
//! Limit: `DIR` is the directory as the process saw it, so a process in another mount namespace
//! finds by debug link only what lies at the same path in ours; by build id it always works.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, ReadCache};

/// Where distributions install debug files, searched in this order.
pub(crate) const DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];

/// What a binary says about its debug file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DebugLinks {
    /// The build id (`NT_GNU_BUILD_ID`), if any.
    pub build_id: Option<Vec<u8>>,
    /// The `.gnu_debuglink` file name and the CRC32 of the file it names, if any.
    pub debuglink: Option<(PathBuf, u32)>,
}

/// How a candidate debug file must prove it belongs to the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    /// Found by build id: its build id must be the binary's.
    BuildId,
    /// Found by debug link name: the same build id, or the recorded CRC32 without one.
    DebugLink,
}

/// A PT_LOAD segment of the binary: where file bytes land in its stated addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Load {
    file_offset: u64,
    file_size: u64,
    vaddr: u64,
}

/// A debug file found for a binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DebugFile {
    /// Its path.
    pub path: PathBuf,
    /// The binary's loadable segments.
    loads: Vec<Load>,
}

impl DebugFile {
    /// The address (as the binary and its debug file state it) of a file offset of the
    /// binary, if a loadable segment holds it.
    pub(crate) fn virt_offset(&self, file_offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| l.file_offset <= file_offset && file_offset - l.file_offset < l.file_size)
            .map(|l| l.vaddr + (file_offset - l.file_offset))
    }
}

/// The debug file of the binary open as `binary`, mapped by its process from `mapped_path`,
/// searched in `debug_dirs`; `None` when the binary has its own debug info or none is found.
pub(crate) fn find(binary: &File, mapped_path: &Path, debug_dirs: &[&str]) -> Option<DebugFile> {
    let cache = ReadCache::new(binary);
    let elf = object::File::parse(&cache).ok()?;
    if elf.section_by_name(".debug_info").is_some() {
        return None;
    }
    let links = links_of(&elf);
    let loads = elf
        .segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            Load {
                file_offset,
                file_size,
                vaddr: s.address(),
            }
        })
        .collect();
    let own = binary.metadata().ok().map(|m| (m.dev(), m.ino()));
    candidates(&links, mapped_path, debug_dirs)
        .into_iter()
        .find(|(path, proof)| belongs(path, *proof, &links, own))
        .map(|(path, _)| DebugFile { path, loads })
}

/// The build id and debug link of a parsed binary.
fn links_of<'data>(elf: &impl Object<'data>) -> DebugLinks {
    DebugLinks {
        build_id: elf.build_id().ok().flatten().map(<[u8]>::to_vec),
        debuglink: elf
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (PathBuf::from(std::ffi::OsStr::from_bytes(name)), crc)),
    }
}

/// Where to look, in order (see the module docs), with what each candidate must prove.
fn candidates(
    links: &DebugLinks,
    mapped_path: &Path,
    debug_dirs: &[&str],
) -> Vec<(PathBuf, Proof)> {
    let mut out = Vec::new();
    // A one-byte id has no file name part.
    if let Some(id) = links.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex: String = id[1..].iter().map(|b| format!("{b:02x}")).collect();
        for dir in debug_dirs {
            let path = Path::new(dir)
                .join(".build-id")
                .join(format!("{:02x}", id[0]))
                .join(format!("{hex}.debug"));
            out.push((path, Proof::BuildId));
        }
    }
    // A debug link is a bare file name; anything else is not followed.
    let name = links
        .debuglink
        .as_ref()
        .map(|(name, _)| name)
        .filter(|n| n.components().count() == 1 && n.file_name().is_some());
    if let (Some(name), Some(dir)) = (name, mapped_path.parent()) {
        out.push((dir.join(name), Proof::DebugLink));
        out.push((dir.join(".debug").join(name), Proof::DebugLink));
        let relative = dir.strip_prefix("/").unwrap_or(dir);
        for debug_dir in debug_dirs {
            let path = Path::new(debug_dir).join(relative).join(name);
            out.push((path, Proof::DebugLink));
        }
    }
    out
}

/// Whether the file at `path` is the debug file of the binary with `links` (and not the binary
/// itself, identified by `own` (device, inode)).
fn belongs(path: &Path, proof: Proof, links: &DebugLinks, own: Option<(u64, u64)>) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file() || own == Some((meta.dev(), meta.ino())) {
        return false;
    }
    let cache = ReadCache::new(&file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    let theirs = elf.build_id().ok().flatten();
    match (proof, links.build_id.as_deref(), theirs) {
        (_, Some(ours), Some(theirs)) => ours == theirs,
        (Proof::DebugLink, _, _) => {
            let expected = links.debuglink.as_ref().map(|(_, crc)| *crc);
            drop(cache);
            expected.is_some() && crc32_of(file).ok() == expected
        }
        (Proof::BuildId, _, _) => false,
    }
}

/// CRC32 (the debug link's checksum: IEEE, as zlib's `crc32`) of a whole file.
fn crc32_of(mut file: File) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(build_id: Option<&[u8]>, debuglink: Option<&str>) -> DebugLinks {
        DebugLinks {
            build_id: build_id.map(<[u8]>::to_vec),
            debuglink: debuglink.map(|n| (PathBuf::from(n), 0x1234)),
        }
    }

    fn paths(c: Vec<(PathBuf, Proof)>) -> Vec<String> {
        c.into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    /// Check that candidates come in gdb's order: build id in each debug directory, then the
    /// debug link next to the binary, in `.debug/`, and under each debug directory.
    #[test]
    fn candidates_in_gdb_order() {
        let l = links(Some(&[0x15, 0xdf, 0xff, 0x32]), Some("ls.debug"));
        let c = candidates(&l, Path::new("/usr/bin/ls"), DEBUG_DIRS);
        assert_eq!(c[0].1, Proof::BuildId);
        assert_eq!(c[2].1, Proof::DebugLink);
        assert_eq!(
            paths(c),
            [
                "/usr/lib/debug/.build-id/15/dfff32.debug",
                "/lib/debug/.build-id/15/dfff32.debug",
                "/usr/bin/ls.debug",
                "/usr/bin/.debug/ls.debug",
                "/usr/lib/debug/usr/bin/ls.debug",
                "/lib/debug/usr/bin/ls.debug",
            ]
        );
    }

    /// Check that a binary without build id looks up its debug link only, one with neither
    /// looks nowhere, and a debug link that is not a bare name is not followed.
    #[test]
    fn candidates_without_build_id_or_link() {
        let only_link = candidates(&links(None, Some("a.debug")), Path::new("/opt/a"), &["/d"]);
        assert_eq!(
            paths(only_link),
            ["/opt/a.debug", "/opt/.debug/a.debug", "/d/opt/a.debug"]
        );
        assert!(candidates(&links(None, None), Path::new("/opt/a"), &["/d"]).is_empty());
        assert!(
            candidates(
                &links(None, Some("../../etc/x")),
                Path::new("/opt/a"),
                &["/d"]
            )
            .is_empty()
        );
        assert_eq!(
            paths(candidates(
                &links(Some(&[1, 2]), None),
                Path::new("a"),
                &["/d"]
            )),
            ["/d/.build-id/01/02.debug"]
        );
    }

    /// Check that a file offset maps to its address through the segment holding it, and an
    /// offset in no segment to nothing.
    #[test]
    fn file_offsets_map_to_addresses() {
        let debug = DebugFile {
            path: PathBuf::from("/x.debug"),
            loads: vec![
                Load {
                    file_offset: 0,
                    file_size: 0x600,
                    vaddr: 0,
                },
                Load {
                    file_offset: 0x1000,
                    file_size: 0x200,
                    vaddr: 0x1000,
                },
                Load {
                    file_offset: 0x2df0,
                    file_size: 0x220,
                    vaddr: 0x3df0,
                },
            ],
        };
        assert_eq!(debug.virt_offset(0x1139), Some(0x1139));
        assert_eq!(debug.virt_offset(0x2e00), Some(0x3e00));
        assert_eq!(debug.virt_offset(0x1200), None);
    }

    /// Check that the CRC32 is zlib's (the value gdb's debug link records).
    #[test]
    fn crc32_is_zlibs() {
        let path = std::env::temp_dir().join(format!("stallwatch-crc-{}", std::process::id()));
        std::fs::write(&path, b"123456789").unwrap();
        let crc = crc32_of(File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(crc, 0xcbf4_3926);
    }
}
