//! The parts of `/proc/PID/maps` the unwinder needs: which ranges hold code (to build
//! modules and to judge return addresses) and which range holds the stack (to bound scans).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;

use super::UnwindError;

pub(super) use crate::procmaps::Mapping;

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
