//! Who holds a futex: only what can be trusted.
//!
//! A futex word is just an integer; what it means depends on the code that waits on it. The
//! kernel's own futex semantics come first:
//! - PI futexes (`FUTEX_LOCK_PI`): the kernel itself keeps the owner's tid in the word.
//! - A PI lock the kernel refused with `EDEADLK`: the word recorded at that moment (or now).
//!
//! Anything else is asked of the runtimes detected in the process (`crate::runtime`), each of
//! which knows its own locks (glibc's `pthread_mutex_t` and joins). Locks no runtime can name
//! an owner for (Rust std mutexes, condvars, semaphores) have none: "unknown", said plainly.
//! A wrong owner could invent a deadlock cycle, so every rule errs towards "unknown".

use tracer_common::syscalls::{self, FUTEX_TID_MASK};

use crate::{
    model::{FutexFacts, FutexOwner, OwnerSource, WaitingCode},
    runtime::{self, LockWait, Runtimes},
};

/// The owner of the futex a thread waits on, if it can be trusted. `live_tids` are every
/// thread of the waiter's process, `runtimes` those detected in it.
pub(crate) fn infer_owner(
    futex: &FutexFacts,
    code: WaitingCode,
    waiter_tid: u32,
    live_tids: &[u32],
    runtimes: Runtimes,
) -> Option<FutexOwner> {
    let live_other = |tid: u32| tid != 0 && tid != waiter_tid && live_tids.contains(&tid);
    if let Some(refused) = futex.refused_pi_lock {
        let tid = refused.word & FUTEX_TID_MASK;
        return live_other(tid).then_some(FutexOwner {
            tid,
            source: OwnerSource::FailedPiLock,
        });
    }
    if futex.op == syscalls::FUTEX_LOCK_PI || futex.op == syscalls::FUTEX_LOCK_PI2 {
        let tid = futex.word()? & FUTEX_TID_MASK;
        return (tid != 0 && tid != waiter_tid).then_some(FutexOwner {
            tid,
            source: OwnerSource::PiWord,
        });
    }
    let read_mem = |addr: u64, buf: &mut [u8]| recorded_read(futex, addr, buf);
    let wait = LockWait {
        uaddr: futex.uaddr,
        code,
        waiter_tid,
        live_tids,
        read_mem: &read_mem,
    };
    runtime::lock_owner(runtimes, &wait)
}

/// Reads from the memory recorded at the futex: only bytes that were read.
fn recorded_read(futex: &FutexFacts, addr: u64, buf: &mut [u8]) -> bool {
    let Some(start) = addr.checked_sub(futex.uaddr) else {
        return false;
    };
    let Ok(start) = usize::try_from(start) else {
        return false;
    };
    match futex.memory.get(start..start.saturating_add(buf.len())) {
        Some(bytes) => {
            buf.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RefusedPiLock;

    const LIVE: [u32; 3] = [100, 101, 102];

    fn facts(op: u32, word: u32) -> FutexFacts {
        FutexFacts {
            uaddr: 0x2000,
            op,
            memory: word.to_ne_bytes().to_vec(),
            refused_pi_lock: None,
        }
    }

    fn all() -> Runtimes {
        Runtimes::from_names(&["glibc".into(), "rust_std".into()])
    }

    /// Check that PI words and refused PI locks name their owner, and a join its thread.
    #[test]
    fn pi_and_join_owners() {
        let pi = facts(6, 0x8000_0000 | 102);
        let owner = infer_owner(&pi, WaitingCode::Unknown, 100, &LIVE, all()).unwrap();
        assert_eq!((owner.tid, owner.source), (102, OwnerSource::PiWord));
        let mut parked = facts(0, 0);
        parked.refused_pi_lock = Some(RefusedPiLock {
            uaddr: 0x1000,
            word: 0x8000_0000 | 101,
        });
        let owner = infer_owner(&parked, WaitingCode::Unknown, 100, &LIVE, all());
        assert_eq!(owner.map(|o| o.source), Some(OwnerSource::FailedPiLock));
        let join = facts(0, 101);
        let owner = infer_owner(&join, WaitingCode::Join, 100, &LIVE, all()).unwrap();
        assert_eq!((owner.tid, owner.source), (101, OwnerSource::Join));
        // The same word in a condition wait means nothing.
        assert_eq!(
            infer_owner(&join, WaitingCode::Condition, 100, &LIVE, all()),
            None
        );
        // Nor does it where no runtime that knows joins was detected.
        assert_eq!(
            infer_owner(&join, WaitingCode::Join, 100, &LIVE, Runtimes::default()),
            None
        );
    }

    /// Check that the recorded memory is read only where it was recorded.
    #[test]
    fn recorded_reads_stay_inside_the_record() {
        let f = FutexFacts {
            memory: vec![1, 2, 3, 4, 5, 6, 7, 8],
            ..facts(0, 0)
        };
        let mut buf = [0u8; 4];
        assert!(recorded_read(&f, 0x2004, &mut buf));
        assert_eq!(buf, [5, 6, 7, 8]);
        assert!(!recorded_read(&f, 0x2006, &mut buf));
        assert!(!recorded_read(&f, 0x1fff, &mut buf));
    }
}
