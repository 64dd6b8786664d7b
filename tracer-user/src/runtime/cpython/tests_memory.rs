//! A process's memory made up by a test: bytes at addresses, read through `read_mem`.

use std::collections::BTreeMap;

use super::layout::{CodeLayout, LineFormat, Strings};

/// A 3.11-like code object layout for tests that make code objects up.
pub(crate) const CODE_LAYOUT: CodeLayout = CodeLayout {
    filename: 112,
    name: 128,
    linetable: 136,
    first_line: 68,
    lines: LineFormat::Locations { instructions: 200 },
    strings: Strings::Compact {
        ascii_data: 40,
        compact_data: 56,
    },
};

/// Sparse memory: byte by byte.
#[derive(Default)]
pub(crate) struct Memory {
    bytes: BTreeMap<u64, u8>,
}

impl Memory {
    /// Writes `bytes` at `addr`.
    pub(crate) fn bytes(&mut self, addr: u64, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.bytes.insert(addr + i as u64, b);
        }
    }

    /// Writes a native-endian u64 at `addr`.
    pub(crate) fn u64(&mut self, addr: u64, value: u64) {
        self.bytes(addr, &value.to_ne_bytes());
    }

    /// Writes a native-endian u32 at `addr`.
    pub(crate) fn u32(&mut self, addr: u64, value: u32) {
        self.bytes(addr, &value.to_ne_bytes());
    }

    /// A `read_mem` over it: fails unless every byte asked for was written.
    pub(crate) fn reader(&self) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        |addr, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                match self.bytes.get(&(addr + i as u64)) {
                    Some(&v) => *b = v,
                    None => return false,
                }
            }
            true
        }
    }
}
