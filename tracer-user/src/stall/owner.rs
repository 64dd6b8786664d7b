//! Who holds a futex: only what can be trusted.
//!
//! A futex word is just an integer; what it means depends on the code that waits on it. The
//! owner is named only when the evidence says which code that is:
//! - PI futexes (`FUTEX_LOCK_PI`): the kernel itself keeps the owner's tid in the word.
//! - A PI lock the kernel refused with `EDEADLK`: the word recorded at that moment (or now).
//! - glibc `pthread_mutex_t` (x86_64 layout: `__lock` at 0, `__owner` at 8, `__nusers` at 12,
//!   `__kind` at 16): the waiter's stack is in glibc's mutex code, the word is locked, `__kind`
//!   has only known bits, and `__owner` is a live thread of the same process other than the
//!   waiter.
//! - `pthread_join`: the waiter's stack is in a join, and the word is the tid of a live thread
//!   of the same process (glibc waits on the joined thread's `tid` field until it exits).
//!
//! Anything else (Rust std mutexes, condvars, semaphores) has no owner: "unknown", said plainly.
//! A wrong owner could invent a deadlock cycle, so every rule errs towards "unknown".

use tracer_common::syscalls::{self, FUTEX_TID_MASK};

use super::model::{FutexOwner, OwnerSource};
use crate::symbolize::Frame;

/// Bits glibc defines in `__kind`: kind (0-3), robust (16), PI (32), PP (64), elision
/// (256, 512), and `PTHREAD_MUTEX_PSHARED_BIT` (128).
const GLIBC_KIND_BITS: u32 = 0x3 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200;

/// How many innermost user frames are searched for the code that waits.
const FRAMES_SEARCHED: usize = 6;

/// Bytes read at a futex address: the word and, should it be a glibc `pthread_mutex_t`,
/// `__count`, `__owner` (8), `__nusers` (12) and `__kind` (16) after it.
pub const FUTEX_MEMORY_BYTES: usize = 20;

/// The words read around a futex address in the waiting process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FutexMemory {
    /// The futex word.
    pub word: Option<u32>,
    /// The u32 at `uaddr + 8` (`__owner` if this is a glibc mutex).
    pub owner_field: Option<u32>,
    /// The u32 at `uaddr + 12` (`__nusers`).
    pub nusers: Option<u32>,
    /// The u32 at `uaddr + 16` (`__kind`).
    pub kind: Option<u32>,
}

impl FutexMemory {
    /// From the [`FUTEX_MEMORY_BYTES`] at the futex address (native endian).
    pub fn from_bytes(bytes: &[u8; FUTEX_MEMORY_BYTES]) -> Self {
        let u32_at = |off: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[off..off + 4]);
            Some(u32::from_ne_bytes(word))
        };
        Self {
            word: u32_at(0),
            owner_field: u32_at(8),
            nusers: u32_at(12),
            kind: u32_at(16),
        }
    }

    /// Only the word is known (the bytes after it could not be read).
    pub fn word_only(word: Option<u32>) -> Self {
        Self {
            word,
            ..Self::default()
        }
    }
}

/// A PI lock refused with `EDEADLK` before the current wait began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedPiLock {
    /// The lock's address.
    pub uaddr: u64,
    /// Its word now, if readable, else as recorded at the failure.
    pub word: u32,
}

/// What the waiting code is, judged from its innermost user frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitingCode {
    /// A mutex or other lock (glibc or another runtime).
    Lock {
        /// It is glibc's `pthread_mutex_*`/`__lll_lock_wait`.
        glibc_mutex: bool,
    },
    /// A thread join.
    Join,
    /// A condition variable, thread park, semaphore or unknown: waiting for a signal.
    Condition,
    /// No symbols.
    Unknown,
}

/// Classifies the code a thread waits in by the names of its innermost user frames; the
/// innermost recognisable frame decides (`pthread_cond_wait` re-locking its mutex is a
/// condition wait).
pub fn waiting_code(user_stack: &[Frame]) -> WaitingCode {
    let mut any_named = false;
    for frame in user_stack.iter().take(FRAMES_SEARCHED) {
        let Some(name) = frame.name.as_deref() else {
            continue;
        };
        any_named = true;
        let lower = name.to_ascii_lowercase();
        if lower.contains("join") {
            return WaitingCode::Join;
        }
        if ["cond", "park", "sem_", "semaphore", "barrier", "notify"]
            .iter()
            .any(|p| lower.contains(p))
        {
            return WaitingCode::Condition;
        }
        // `__lll_lock_wait_private` serves glibc's internal bare-int locks (stdio, malloc,
        // ld.so), which are not `pthread_mutex_t`: no owner field to read.
        if lower.contains("lll_lock_wait_private") {
            return WaitingCode::Lock { glibc_mutex: false };
        }
        if lower.contains("pthread_mutex") || lower.contains("lll_lock") {
            return WaitingCode::Lock { glibc_mutex: true };
        }
        if [
            "mutex",
            "lock_contended",
            "rwlock",
            "acquire_lock",
            "spinlock",
        ]
        .iter()
        .any(|p| lower.contains(p))
        {
            return WaitingCode::Lock { glibc_mutex: false };
        }
    }
    if any_named {
        WaitingCode::Condition
    } else {
        WaitingCode::Unknown
    }
}

/// How far above the stack pointer a futex word still counts as on the thread's own stack.
const OWN_STACK_WINDOW: u64 = 64 * 1024;

/// Whether a thread shows the signature of glibc parking it for ever inside
/// `pthread_mutex_lock` after the kernel refused a PI lock (`EDEADLK`: the lock chain loops
/// back to it; or `ESRCH`: the owner died): a futex wait without timeout on a zero word on its
/// own stack, called from glibc's mutex code. (With `watch` attached at the refusal, the
/// refused lock itself is known instead; see [`RefusedPiLock`].)
pub fn parked_by_glibc(
    op: u32,
    uaddr: u64,
    word: Option<u32>,
    user_sp: Option<u64>,
    code: WaitingCode,
) -> bool {
    const FUTEX_WAIT: u32 = 0;
    const FUTEX_WAIT_BITSET: u32 = 9;
    let on_own_stack = user_sp.is_some_and(|sp| uaddr >= sp && uaddr - sp < OWN_STACK_WINDOW);
    matches!(op, FUTEX_WAIT | FUTEX_WAIT_BITSET)
        && word == Some(0)
        && on_own_stack
        && code == WaitingCode::Lock { glibc_mutex: true }
}

/// The owner of the futex a thread waits on, if it can be trusted.
///
/// `op` is the futex command, `live_tids` every thread of the waiter's process.
pub fn infer_owner(
    op: u32,
    memory: &FutexMemory,
    refused: Option<RefusedPiLock>,
    code: WaitingCode,
    waiter_tid: u32,
    live_tids: &[u32],
) -> Option<FutexOwner> {
    let live_other = |tid: u32| tid != 0 && tid != waiter_tid && live_tids.contains(&tid);
    if let Some(refused) = refused {
        let tid = refused.word & FUTEX_TID_MASK;
        return live_other(tid).then_some(FutexOwner {
            tid,
            source: OwnerSource::FailedPiLock,
        });
    }
    if op == syscalls::FUTEX_LOCK_PI || op == syscalls::FUTEX_LOCK_PI2 {
        let tid = memory.word? & FUTEX_TID_MASK;
        return (tid != 0 && tid != waiter_tid).then_some(FutexOwner {
            tid,
            source: OwnerSource::PiWord,
        });
    }
    match code {
        WaitingCode::Join => {
            let tid = memory.word?;
            live_other(tid).then_some(FutexOwner {
                tid,
                source: OwnerSource::Join,
            })
        }
        WaitingCode::Lock { glibc_mutex: true } => {
            let locked = memory.word.is_some_and(|w| w != 0);
            let kind_ok = memory.kind.is_some_and(|k| k & !GLIBC_KIND_BITS == 0);
            let users_ok = memory.nusers.is_some_and(|n| n >= 1);
            let tid = memory.owner_field?;
            // The waiter itself may be the owner: relocking a normal mutex it holds is a
            // deadlock of one thread (error-checking and recursive mutexes never wait there).
            let live = tid == waiter_tid || live_other(tid);
            (locked && kind_ok && users_ok && live).then_some(FutexOwner {
                tid,
                source: OwnerSource::GlibcMutex,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::fixtures::frames;

    fn glibc_mutex(owner: u32) -> FutexMemory {
        FutexMemory {
            word: Some(2),
            owner_field: Some(owner),
            nusers: Some(1),
            kind: Some(0),
        }
    }

    const LIVE: [u32; 3] = [100, 101, 102];
    const GLIBC: WaitingCode = WaitingCode::Lock { glibc_mutex: true };

    /// Check that a glibc mutex owner is trusted only when it is a live other thread of the
    /// process and the mutex fields look like a locked mutex.
    #[test]
    fn glibc_mutex_owner_needs_every_check() {
        let owner = infer_owner(0, &glibc_mutex(101), None, GLIBC, 100, &LIVE);
        assert_eq!(
            owner.map(|o| (o.tid, o.source)),
            Some((101, OwnerSource::GlibcMutex))
        );
        assert_eq!(
            infer_owner(0, &glibc_mutex(999), None, GLIBC, 100, &LIVE),
            None
        );
        // Relocking a mutex it holds: the waiter is its own owner.
        let own = infer_owner(0, &glibc_mutex(100), None, GLIBC, 100, &LIVE);
        assert_eq!(own.map(|o| o.tid), Some(100));
        let unlocked = FutexMemory {
            word: Some(0),
            ..glibc_mutex(101)
        };
        assert_eq!(infer_owner(0, &unlocked, None, GLIBC, 100, &LIVE), None);
        let odd_kind = FutexMemory {
            kind: Some(0x1234_0000),
            ..glibc_mutex(101)
        };
        assert_eq!(infer_owner(0, &odd_kind, None, GLIBC, 100, &LIVE), None);
        let rust_code = WaitingCode::Lock { glibc_mutex: false };
        assert_eq!(
            infer_owner(0, &glibc_mutex(101), None, rust_code, 100, &LIVE),
            None
        );
    }

    /// Check that PI words and refused PI locks name their owner, and a join its thread.
    #[test]
    fn pi_and_join_owners() {
        let pi = FutexMemory {
            word: Some(0x8000_0000 | 102),
            ..FutexMemory::default()
        };
        let owner = infer_owner(6, &pi, None, WaitingCode::Unknown, 100, &LIVE).unwrap();
        assert_eq!((owner.tid, owner.source), (102, OwnerSource::PiWord));
        let refused = RefusedPiLock {
            uaddr: 0x1000,
            word: 0x8000_0000 | 101,
        };
        let parked = FutexMemory {
            word: Some(0),
            ..FutexMemory::default()
        };
        let owner = infer_owner(0, &parked, Some(refused), WaitingCode::Unknown, 100, &LIVE);
        assert_eq!(owner.map(|o| o.source), Some(OwnerSource::FailedPiLock));
        let join = FutexMemory {
            word: Some(101),
            ..FutexMemory::default()
        };
        let owner = infer_owner(0, &join, None, WaitingCode::Join, 100, &LIVE).unwrap();
        assert_eq!((owner.tid, owner.source), (101, OwnerSource::Join));
        // The same word in a condition wait means nothing.
        assert_eq!(
            infer_owner(0, &join, None, WaitingCode::Condition, 100, &LIVE),
            None
        );
    }

    /// Check that glibc's park after a refused PI lock is recognised only on a zero word on the
    /// thread's own stack, in glibc's mutex code.
    #[test]
    fn glibc_park_signature() {
        let sp = 0x7ff0_0000_0000;
        assert!(parked_by_glibc(9, sp + 0x74, Some(0), Some(sp), GLIBC));
        assert!(!parked_by_glibc(9, sp + 0x74, Some(2), Some(sp), GLIBC));
        assert!(!parked_by_glibc(9, 0x5555_0000, Some(0), Some(sp), GLIBC));
        assert!(!parked_by_glibc(9, sp + 0x74, Some(0), None, GLIBC));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            WaitingCode::Condition
        ));
        assert!(!parked_by_glibc(6, sp + 0x74, Some(0), Some(sp), GLIBC));
    }

    /// Check that the glibc mutex fields are read at their x86_64 offsets.
    #[test]
    fn mutex_fields_from_bytes() {
        let mut bytes = [0u8; FUTEX_MEMORY_BYTES];
        bytes[0..4].copy_from_slice(&2u32.to_ne_bytes());
        bytes[8..12].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_ne_bytes());
        bytes[16..20].copy_from_slice(&0x20u32.to_ne_bytes());
        let m = FutexMemory::from_bytes(&bytes);
        assert_eq!(
            (m.word, m.owner_field, m.nusers, m.kind),
            (Some(2), Some(4242), Some(1), Some(0x20))
        );
    }

    /// Check that the innermost recognisable frame decides what the waiting code is.
    #[test]
    fn waiting_code_from_frames() {
        assert_eq!(
            waiting_code(&frames(&[
                "__lll_lock_wait",
                "pthread_mutex_lock",
                "worker"
            ])),
            GLIBC
        );
        assert_eq!(
            waiting_code(&frames(&[
                "syscall",
                "std::sys::sync::mutex::futex::Mutex::lock_contended"
            ])),
            WaitingCode::Lock { glibc_mutex: false }
        );
        assert_eq!(
            waiting_code(&frames(&[
                "__futex_abstimed_wait_common",
                "__pthread_cond_wait",
                "pthread_mutex_lock"
            ])),
            WaitingCode::Condition
        );
        assert_eq!(
            waiting_code(&frames(&[
                "__futex_abstimed_wait_common",
                "__pthread_clockjoin_ex"
            ])),
            WaitingCode::Join
        );
        assert_eq!(waiting_code(&[Frame::default()]), WaitingCode::Unknown);
        assert_eq!(
            waiting_code(&frames(&["__lll_lock_wait_private", "_IO_flockfile"])),
            WaitingCode::Lock { glibc_mutex: false }
        );
    }
}
