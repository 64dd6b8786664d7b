//! The parts of `/proc/PID/maps` the unwinder needs: which ranges hold code (to build
//! modules and to judge return addresses) and which range holds the stack (to bound scans).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;

use super::UnwindError;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Mapping {
    pub start: u64,
    pub end: u64,
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

impl Mapping {
    /// Parses `start-end perms offset dev inode [path]`; `None` for malformed lines.
    pub fn parse(line: &str) -> Option<Self> {
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
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether this is the kernel's vDSO, which has no file behind it.
    pub fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }

    /// Whether this mapping is backed by a regular file (deleted or not).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
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
pub(super) struct Maps {
    mappings: Vec<Mapping>,
    /// Hash of the executable mappings only: heap growth and thread stacks come and go
    /// without changing the modules, exec and dlopen/dlclose change this.
    code_hash: u64,
}

impl Maps {
    /// Reads `/proc/PID/maps`.
    pub fn read(pid: u32) -> Result<Self, UnwindError> {
        match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(source) if source.kind() == io::ErrorKind::NotFound => {
                Err(UnwindError::ProcessGone { pid, source })
            }
            Err(source) => Err(UnwindError::MapsUnreadable { pid, source }),
        }
    }

    /// Parses the text of a maps file, skipping malformed lines.
    pub fn parse(text: &str) -> Self {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(Mapping::parse).collect();
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

    /// Identifies the set of executable mappings (see the field's docs).
    pub fn code_hash(&self) -> u64 {
        self.code_hash
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }

    /// Whether `addr` lies in executable memory (file-backed, vDSO or anonymous JIT code).
    pub fn is_code(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|m| m.executable)
    }

    /// The executable mappings, in address order.
    pub fn code(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter().filter(|m| m.executable)
    }
}
