//! Kernel tids for Python thread states that only know their `pthread_t` (CPython 3.8–3.10;
//! `PyThreadState.native_thread_id` exists from 3.11).
//!
//! On glibc a `pthread_t` is the address of the thread's descriptor (`struct pthread`), which
//! keeps the kernel tid at an offset that depends on glibc's version and build. Rather than
//! trust a hard-coded offset, it is calibrated on the process's own threads: each descriptor
//! must point to itself where glibc keeps `header.self` (x86_64's TLS ABI fixes that), and the
//! offset taken is the first at which every thread's descriptor holds a distinct live tid of
//! the process, one of them the pid (the main thread's tid is the pid), right after a
//! consistent doubly-linked list node (glibc's `list_t list` precedes `tid`: its `next`
//! node's `prev` points back to it). The calibration is
//! checked again every scan, and redone when a thread no longer checks out. Not glibc (musl),
//! or no Python state on the main thread: no tids, said plainly rather than guessed.

use crate::runtime::{read_u32, read_u64};

/// Where x86_64 glibc keeps `tcbhead_t.self` in the descriptor (after `tcb` and `dtv`).
const SELF_POINTER: u64 = 16;
/// How much of the descriptor is searched for the tid (glibc keeps it within the first
/// kilobyte: after the TCB header and the thread list links).
const SEARCHED_BYTES: usize = 1024;

/// Size of the list node (`list_t`: `next`, `prev`) glibc keeps right before the tid.
const LIST_NODE: u64 = 16;

/// Whether a consistent list node ends at `at`: `node.next.prev == node`.
fn list_node_before(at: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> bool {
    let Some(node) = at.checked_sub(LIST_NODE) else {
        return false;
    };
    read_u64(node, read_mem)
        .filter(|&next| next != 0)
        .and_then(|next| read_u64(next + 8, read_mem))
        == Some(node)
}

/// Whether `ident` looks like a glibc thread descriptor: it points to itself.
fn is_descriptor(ident: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> bool {
    ident != 0 && read_u64(ident + SELF_POINTER, read_mem) == Some(ident)
}

/// The offset of the tid in the thread descriptors `idents`, if one checks out (see the
/// module docs).
pub(crate) fn calibrate(
    idents: &[u64],
    pid: u32,
    live_tids: &[u32],
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    if idents.is_empty() || !idents.iter().all(|&i| is_descriptor(i, read_mem)) {
        return None;
    }
    let descriptors: Vec<Vec<u8>> = idents
        .iter()
        .map(|&ident| {
            let mut bytes = vec![0u8; SEARCHED_BYTES];
            read_mem(ident, &mut bytes).then_some(bytes)
        })
        .collect::<Option<_>>()?;
    (0..SEARCHED_BYTES - 4)
        .step_by(4)
        .find(|&offset| {
            let tids: Vec<u32> = descriptors
                .iter()
                .map(|d| u32::from_ne_bytes(d[offset..offset + 4].try_into().expect("4 bytes")))
                .collect();
            tids.contains(&pid)
                && all_live_and_distinct(&tids, live_tids)
                && idents
                    .iter()
                    .all(|&i| list_node_before(i + offset as u64, read_mem))
        })
        .map(|offset| offset as u64)
}

/// Whether a calibrated `offset` still gives every thread a distinct live tid.
pub(crate) fn check(
    idents: &[u64],
    offset: u64,
    live_tids: &[u32],
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> bool {
    let tids: Option<Vec<u32>> = idents
        .iter()
        .map(|&i| tid_at(i, offset, live_tids, read_mem))
        .collect();
    tids.is_some_and(|tids| all_live_and_distinct(&tids, live_tids))
}

/// The live tid in the descriptor `ident` at `offset`.
pub(crate) fn tid_at(
    ident: u64,
    offset: u64,
    live_tids: &[u32],
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<u32> {
    if !is_descriptor(ident, read_mem) {
        return None;
    }
    read_u32(ident + offset, read_mem).filter(|tid| live_tids.contains(tid))
}

fn all_live_and_distinct(tids: &[u32], live_tids: &[u32]) -> bool {
    tids.iter().all(|t| live_tids.contains(t))
        && tids.iter().enumerate().all(|(i, t)| !tids[..i].contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::Memory;

    const PID: u32 = 4000;
    const LIVE: [u32; 3] = [4000, 4001, 4002];

    /// Descriptors at 0x10000 and 0x20000 with their tids at 720 (glibc 2.36's offset) after
    /// their list nodes (linked in a ring with a head at 0x30000), and a field before that
    /// holds the pid in both: a decoy without a list node.
    fn memory() -> Memory {
        let mut memory = Memory::default();
        let (a, b, head) = (0x10000u64 + 704, 0x20000u64 + 704, 0x30000u64);
        for (node, next, prev) in [(head, a, b), (a, b, head), (b, head, a)] {
            memory.u64(node, next);
            memory.u64(node + 8, prev);
        }
        for (base, tid) in [(0x10000u64, 4000u32), (0x20000, 4002)] {
            memory.bytes(base, &[0u8; 704]);
            memory.bytes(base + 720, &[0u8; SEARCHED_BYTES - 720]);
            memory.u64(base + SELF_POINTER, base);
            memory.u32(base + 600, PID);
            memory.u32(base + 720, tid);
        }
        memory
    }

    /// Check that the tid's offset is the first that gives every thread a distinct live tid,
    /// one of them the pid, after a consistent list node, and that the calibration is
    /// checked against each thread.
    #[test]
    fn calibrates_against_every_thread() {
        let memory = memory();
        let read = memory.reader();
        let idents = [0x10000, 0x20000];
        assert_eq!(calibrate(&idents, PID, &LIVE, &read), Some(720));
        assert_eq!(tid_at(0x20000, 720, &LIVE, &read), Some(4002));
        assert!(check(&idents, 720, &LIVE, &read));
        assert!(
            !check(&idents, 600, &LIVE, &read),
            "the decoy is not distinct"
        );
        // One thread alone is not fooled by the decoy: it has no list node before it.
        assert_eq!(calibrate(&idents[..1], PID, &LIVE, &read), Some(720));
    }

    /// Check that what is not a glibc descriptor (no self pointer), and threads whose tids are
    /// not live, give nothing rather than a guess.
    #[test]
    fn refuses_what_does_not_check_out() {
        let mut memory = memory();
        {
            let read = memory.reader();
            assert_eq!(calibrate(&[0x10000, 0x20000], PID, &[4000], &read), None);
            assert_eq!(calibrate(&[0x10000, 0x20000], 9, &LIVE, &read), None);
            assert_eq!(calibrate(&[], PID, &LIVE, &read), None);
        }
        memory.u64(0x20000 + SELF_POINTER, 0);
        assert_eq!(
            calibrate(&[0x10000, 0x20000], PID, &LIVE, &memory.reader()),
            None
        );
        assert_eq!(tid_at(0x20000, 720, &LIVE, &memory.reader()), None);
    }
}
