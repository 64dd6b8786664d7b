//! Reads of another process's memory through `/proc/PID/mem`, cached per page: a walk reads
//! the same few stack pages over and over, and each pread is a syscall plus a page-table walk.

use std::collections::HashMap;
use std::rc::Rc;

use crate::inspect::ProcessMemory;

const PAGE_SIZE: u64 = 4096;
/// Upper bound on cached pages (16 MiB) so that a pathological walk cannot hoard memory.
const MAX_CACHED_PAGES: usize = 4096;
/// Addresses at or above this are never user memory (57-bit address spaces included).
const USER_LIMIT: u64 = 1 << 56;

/// A page cache over `/proc/PID/mem`, meant to live for one unwind (memory may change after).
pub(super) struct ProcMem {
    mem: Rc<ProcessMemory>,
    /// `None` records a page that could not be read (unmapped), so it is not retried.
    pages: HashMap<u64, Option<Box<[u8]>>>,
}

impl ProcMem {
    /// A page cache over a process's open memory.
    pub(super) fn new(mem: Rc<ProcessMemory>) -> Self {
        Self {
            mem,
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
        let mem = &self.mem;
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
