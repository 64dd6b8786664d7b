//! `/proc/PID/maps`, parsed once for everything that needs it: the symbolizer (which files
//! back which code), the unwinder (code ranges, the stack's range), runtime detection (which
//! libraries are loaded).

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
};

/// Identity of a mapped file as `/proc/PID/maps` reports it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct FileKey {
    /// Device (major, minor).
    pub dev: (u32, u32),
    /// Inode.
    pub inode: u64,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Mapped with execute permission.
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major, minor) of the mapped file; (0, 0) for anonymous memory.
    pub dev: (u32, u32),
    /// Inode of the mapped file; 0 for anonymous memory and pseudo files like `[vdso]`.
    pub inode: u64,
    /// Path, `[vdso]`-style pseudo name, or empty; deleted files end in ` (deleted)`.
    pub path: String,
}

/// How the kernel marks the path of a mapped file that was deleted or replaced.
const DELETED_SUFFIX: &str = " (deleted)";

impl Mapping {
    /// Parses `start-end perms offset dev inode [path]`; `None` for malformed lines.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut rest = line;
        let range = next_field(&mut rest)?;
        let perms = next_field(&mut rest)?;
        let offset = next_field(&mut rest)?;
        let dev = next_field(&mut rest)?;
        let inode = next_field(&mut rest)?;
        let (start, end) = range.split_once('-')?;
        let (major, minor) = dev.split_once(':')?;
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            executable: perms.as_bytes().get(2) == Some(&b'x'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            dev: (
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode: inode.parse().ok()?,
            path: rest.trim().to_string(),
        })
        .filter(|m| m.start < m.end)
    }

    /// Whether `addr` lies inside this mapping.
    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether this is the kernel's vDSO, which has no file behind it.
    pub(crate) fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }

    /// Whether this is anonymous memory: unnamed, named by the process (`[anon:NAME]`), or a
    /// memfd (`/memfd:NAME (deleted)`), where JIT compilers put the code they generate.
    pub(crate) fn is_anonymous(&self) -> bool {
        self.path.is_empty() || self.path.starts_with("[anon:") || self.path.starts_with("/memfd:")
    }

    /// Whether this mapping is backed by a regular file (deleted or not).
    pub(crate) fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// Whether the mapped file was deleted (or replaced) since it was mapped.
    pub(crate) fn is_deleted(&self) -> bool {
        self.path.ends_with(DELETED_SUFFIX)
    }

    /// The file's path without the ` (deleted)` mark.
    pub(crate) fn file_path(&self) -> &str {
        self.path.strip_suffix(DELETED_SUFFIX).unwrap_or(&self.path)
    }

    /// The mapped file's identity.
    pub(crate) fn file_key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            inode: self.inode,
        }
    }
}

/// Splits off the next whitespace-separated field of `rest`.
fn next_field<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let trimmed = rest.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (field, tail) = trimmed.split_at(end);
    *rest = tail;
    (!field.is_empty()).then_some(field)
}

/// All mappings of one process, sorted by start address.
#[derive(Debug, Default)]
pub(crate) struct Maps {
    mappings: Vec<Mapping>,
    /// Hash of the executable mappings only: heap growth and thread stacks come and go
    /// without changing the modules, exec and dlopen/dlclose change this.
    code_hash: u64,
}

impl Maps {
    /// Parses the text of a maps file, skipping malformed lines.
    pub(crate) fn parse(text: &str) -> Self {
        Self::from_mappings(text.lines().filter_map(Mapping::parse).collect())
    }

    /// Maps made of these mappings (in any order).
    pub(crate) fn from_mappings(mut mappings: Vec<Mapping>) -> Self {
        mappings.sort_by_key(|m| m.start);
        let mut hasher = DefaultHasher::new();
        mappings
            .iter()
            .filter(|m| m.executable)
            .for_each(|m| m.hash(&mut hasher));
        Self {
            mappings,
            code_hash: hasher.finish(),
        }
    }

    /// Whether no mapping is known (a zombie's maps are empty).
    pub(crate) fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// Identifies the set of executable mappings (see the field's docs).
    pub(crate) fn code_hash(&self) -> u64 {
        self.code_hash
    }

    /// The mapping containing `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }

    /// The executable mapping of a named file or pseudo file (`[vdso]`) containing `addr`:
    /// what code symbolizes through. Anonymous executable memory (JIT code) is not one.
    pub(crate) fn module_at(&self, addr: u64) -> Option<&Mapping> {
        self.find(addr)
            .filter(|m| m.executable && !m.path.is_empty())
    }

    /// Whether `addr` lies in executable memory (file-backed, vDSO or anonymous JIT code).
    pub(crate) fn is_code(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|m| m.executable)
    }

    /// Whether any executable memory is anonymous (unnamed, named by the process with
    /// `[anon:NAME]`, or a memfd): code generated at run time, which a JIT perf map may name.
    pub(crate) fn has_anonymous_code(&self) -> bool {
        self.code().any(Mapping::is_anonymous)
    }

    /// The executable mappings, in address order.
    pub(crate) fn code(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter().filter(|m| m.executable)
    }

    /// Every mapping, in address order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that maps lines with odd spacing, deleted files and pseudo paths parse, and junk
    /// does not.
    #[test]
    fn parses_maps_lines() {
        let m = Mapping::parse(
            "7ff6-7ff8 r-xp 00026000 fe:00 326279                     /usr/lib/a b.so (deleted)",
        )
        .unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x7ff6, 0x7ff8, 0x26000));
        assert_eq!((m.dev, m.inode), ((0xfe, 0), 326279));
        assert!(m.executable && m.is_file());
        assert_eq!(m.path, "/usr/lib/a b.so (deleted)");
        assert!(m.is_deleted());
        assert_eq!(m.file_path(), "/usr/lib/a b.so");
        let vdso = Mapping::parse("1000-3000 r-xp 00000000 00:00 0 [vdso]").unwrap();
        assert!(vdso.is_vdso() && !vdso.is_file());
        assert!(Mapping::parse("1000-3000 rw-p 0 00:00 0").is_some_and(|m| m.path.is_empty()));
        assert!(Mapping::parse("zz-3000 r-xp 0 00:00 0").is_none());
        assert!(Mapping::parse("3000-1000 r-xp 0 00:00 0").is_none());
    }

    /// Check that executable mappings of named files are found by address, and neither data
    /// nor anonymous code is a module.
    #[test]
    fn modules_are_named_executable_mappings() {
        let text = "\
55d0c0000000-55d0c0002000 r--p 00000000 fd:01 123 /usr/bin/my app
55d0c0002000-55d0c0010000 r-xp 00002000 fd:01 123 /usr/bin/my app
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]
7ffe0000-7fff0000 rw-p 00000000 00:00 0 [stack]
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
";
        let maps = Maps::parse(text);
        assert_eq!(maps.code().filter(|m| !m.path.is_empty()).count(), 2);
        let m = maps.module_at(0x55d0c0002010).unwrap();
        assert_eq!(m.path, "/usr/bin/my app");
        assert_eq!(m.offset, 0x2000);
        assert!(maps.module_at(0x55d0c0010000).is_none());
        assert!(maps.module_at(0x55d0c0000010).is_none());
        assert_eq!(maps.module_at(0x7ffd1004).unwrap().path, "[vdso]");
        assert!(maps.module_at(0x7f0000000010).is_none());
        assert!(maps.is_code(0x7f0000000010));
    }
}
