//! Reads of another process's memory through `/proc/PID/mem`, cached per page: a walk reads
//! the same few stack pages over and over, and each pread is a syscall plus a page-table walk.
//!
//! A walk over a stack copy (`--unwind dwarf|auto`) reads the stack from the copy BPF took
//! when the thread blocked: the live stack has moved on since. The rest of the stack mapping
//! is refused (never today's bytes), and code (return-address checks, `[vdso]`) still comes
//! from the live process while it exists.

use std::collections::HashMap;
use std::rc::Rc;

use crate::inspect::ProcessMemory;

const PAGE_SIZE: u64 = 4096;
/// Upper bound on cached pages (16 MiB) so that a pathological walk cannot hoard memory.
const MAX_CACHED_PAGES: usize = 4096;
/// Addresses at or above this are never user memory (57-bit address spaces included).
const USER_LIMIT: u64 = 1 << 56;

/// The stack bytes a walk over a copy reads instead of the process's memory.
pub(super) struct CopiedStack<'a> {
    /// Address of `bytes[0]`.
    pub(super) start: u64,
    /// The copy.
    pub(super) bytes: &'a [u8],
    /// Addresses never read live: the stack mapping the copy came from.
    pub(super) refused: std::ops::Range<u64>,
}

/// A page cache over `/proc/PID/mem`, meant to live for one unwind (memory may change after).
pub(super) struct ProcMem<'a> {
    mem: Option<Rc<ProcessMemory>>,
    copy: Option<CopiedStack<'a>>,
    /// `None` records a page that could not be read (unmapped), so it is not retried.
    pages: HashMap<u64, Option<Box<[u8]>>>,
}

impl<'a> ProcMem<'a> {
    /// A page cache over a process's open memory.
    pub(super) fn new(mem: Rc<ProcessMemory>) -> Self {
        Self {
            mem: Some(mem),
            copy: None,
            pages: HashMap::new(),
        }
    }

    /// Reads of a stack copy, with the process's live memory (if it is still open) for
    /// everything outside the copy's stack mapping.
    pub(super) fn over_copy(copy: CopiedStack<'a>, live: Option<Rc<ProcessMemory>>) -> Self {
        Self {
            mem: live,
            copy: Some(copy),
            pages: HashMap::new(),
        }
    }

    /// The little-endian u64 at `addr`, or `None` if any of its bytes is unreadable.
    pub(super) fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let mut buf = [0u8; 8];
        self.read_bytes(addr, &mut buf)
            .then(|| u64::from_le_bytes(buf))
    }

    /// Fills `buf` from `addr`; false if any byte is unreadable.
    pub(super) fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        if let Some(copy) = &self.copy {
            let Some(end) = addr.checked_add(buf.len() as u64) else {
                return false;
            };
            let copy_end = copy.start + copy.bytes.len() as u64;
            if addr >= copy.start && end <= copy_end {
                let from = (addr - copy.start) as usize;
                buf.copy_from_slice(&copy.bytes[from..from + buf.len()]);
                return true;
            }
            let overlaps = |r: &std::ops::Range<u64>| addr < r.end && end > r.start;
            if overlaps(&copy.refused) || overlaps(&(copy.start..copy_end)) {
                return false;
            }
        }
        let mut done = 0;
        while done < buf.len() {
            let Some(at) = addr.checked_add(done as u64) else {
                return false;
            };
            let page_start = at & !(PAGE_SIZE - 1);
            let in_page = (at - page_start) as usize;
            let Some(page) = self.page(page_start) else {
                return false;
            };
            let n = (page.len() - in_page).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            done += n;
        }
        true
    }

    /// The page at `page_start`, read on first use.
    fn page(&mut self, page_start: u64) -> Option<&[u8]> {
        if page_start >= USER_LIMIT {
            return None;
        }
        if self.pages.len() >= MAX_CACHED_PAGES && !self.pages.contains_key(&page_start) {
            self.pages.clear();
        }
        let mem = self.mem.as_ref()?;
        self.pages
            .entry(page_start)
            .or_insert_with(|| read_page(mem, page_start))
            .as_deref()
    }
}

/// One whole page, or `None` if it is not mapped (a short read counts as unmapped).
fn read_page(mem: &ProcessMemory, page_start: u64) -> Option<Box<[u8]>> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    mem.read(page_start, &mut page).ok()?;
    Some(page.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a walk over a copy reads the copy, refuses the rest of its stack mapping
    /// (today's bytes there are not the stack it blocked with) and reads across the copy's
    /// end nowhere.
    #[test]
    fn copy_reads_only_the_copy_in_its_stack() {
        let mut bytes = vec![0u8; 64];
        bytes[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let copy = CopiedStack {
            start: 0x7000_1000,
            bytes: &bytes,
            refused: 0x7000_0000..0x7001_0000,
        };
        let mut mem = ProcMem::over_copy(copy, None);
        assert_eq!(mem.read_u64(0x7000_1008), Some(0x1122_3344_5566_7788));
        assert_eq!(mem.read_u64(0x7000_1000), Some(0));
        assert_eq!(mem.read_u64(0x7000_1038), Some(0), "last word of the copy");
        assert_eq!(mem.read_u64(0x7000_103c), None, "across the copy's end");
        assert_eq!(
            mem.read_u64(0x7000_0ff8),
            None,
            "below the copy, in its stack"
        );
        assert_eq!(
            mem.read_u64(0x7000_8000),
            None,
            "above the copy, in its stack"
        );
        assert_eq!(
            mem.read_u64(0x5555_0000),
            None,
            "no live memory to read code from"
        );
    }
}
