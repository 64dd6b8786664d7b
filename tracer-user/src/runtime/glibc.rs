//! glibc: its lock and join code, the owner fields of its `pthread_mutex_t`, and the way it
//! parks a thread after the kernel refuses a PI lock.
//!
//! What is trusted, and why (a wrong owner could invent a deadlock cycle, so every rule errs
//! towards "unknown"):
//! - `pthread_mutex_t` (x86_64 layout: `__lock` at 0, `__owner` at 8, `__nusers` at 12,
//!   `__kind` at 16): the waiter's stack is in glibc's mutex code, the word is locked, `__kind`
//!   has only known bits, `__nusers` is at least one, and `__owner` is a live thread of the
//!   same process other than the waiter (or the waiter itself: relocking a normal mutex it
//!   holds is a deadlock of one thread).
//! - `pthread_join`: the waiter's stack is in a join, and the word is the tid of a live thread
//!   of the same process (glibc waits on the joined thread's `tid` field until it exits).
//!
//! Hosts without libc's debug files (`libc6-dbg`) name only libc's exported functions: the
//! mutex wait is still `pthread_mutex_lock`, but a join (`pthread_join` tail-calls the
//! internal `__pthread_clockjoin_ex`) and glibc's park after a refused PI lock
//! (`pthread_mutex_lock` tail-calls `__pthread_mutex_lock_full`) leave only nameless libc
//! frames under the caller's. So these two are also recognised from memory and the syscall:
//! - a join from the joined thread's descriptor (`struct pthread`) around the word: the word
//!   is the live tid, the 4 bytes after it (`pid_ununsed`) are zero, and 24 bytes on lies the
//!   `futex_offset` of its robust-mutex list head, which glibc sets to the constant
//!   [`ROBUST_FUTEX_OFFSET`] for every thread (held robust mutexes change the list, not it);
//! - the park from its own signature (below) when the waiting code is nameless libc code
//!   ([`nameless_libc_wait`]) rather than named mutex code.
//!
//! Internal glibc locks (`__lll_lock_wait_private`: stdio, malloc, ld.so) are bare ints, not
//! `pthread_mutex_t`: no owner field to read.

use super::{LockWait, Runtime, WaitName};
use crate::{
    model::{Frame, FutexOwner, OwnerSource, WaitingCode},
    procs::maps::Maps,
};

/// Bits glibc defines in `__kind`: kind (0-3), robust (16), PI (32), PP (64), elision
/// (256, 512), and `PTHREAD_MUTEX_PSHARED_BIT` (128).
const KIND_BITS: u32 = 0x3 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200;
/// `pthread_mutex_t.__owner`.
const OWNER_OFFSET: u64 = 8;
/// `pthread_mutex_t.__nusers`.
const NUSERS_OFFSET: u64 = 12;
/// `pthread_mutex_t.__kind`.
const KIND_OFFSET: u64 = 16;
/// The word and the mutex fields after it.
const MUTEX_BYTES: usize = 20;
/// `struct pthread.pid_ununsed`, right after the `tid` word a join waits on.
const PID_UNUSED_OFFSET: u64 = 4;
/// `struct pthread.robust_head.futex_offset`, from the `tid` word (x86_64: `tid`,
/// `pid_ununsed`, `robust_prev`, then `robust_head { list, futex_offset, list_op_pending }`).
const ROBUST_FUTEX_OFFSET_OFFSET: u64 = 24;
/// What glibc stores in every thread's `robust_head.futex_offset`: the offset of the lock
/// word from the robust list entry in a `pthread_mutex_t` (x86_64: `__list.__next` at 32).
const ROBUST_FUTEX_OFFSET: i64 = -32;
/// The join's word and the thread descriptor fields after it, to `robust_head.futex_offset`.
const DESCRIPTOR_BYTES: usize = 32;
/// The bytes read at a futex word: enough for the mutex fields and the descriptor's.
const MEMORY_BYTES: usize = if MUTEX_BYTES > DESCRIPTOR_BYTES {
    MUTEX_BYTES
} else {
    DESCRIPTOR_BYTES
};

/// How far above the stack pointer a futex word still counts as on the thread's own stack.
const OWN_STACK_WINDOW: u64 = 64 * 1024;

/// The GNU C library.
pub(super) struct Glibc;

const GLIBC_MUTEX: WaitingCode = WaitingCode::Lock { glibc_mutex: true };
const OTHER_LOCK: WaitingCode = WaitingCode::Lock { glibc_mutex: false };

impl Runtime for Glibc {
    fn name(&self) -> &'static str {
        "glibc"
    }

    /// Every process but one that runs musl (whose `pthread_mutex_t` is laid out otherwise):
    /// glibc may be linked statically, so its absence from the mappings proves nothing.
    fn detect(&self, maps: &Maps) -> bool {
        !maps.iter().any(|m| {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            name.starts_with("ld-musl-") || name.starts_with("libc.musl-")
        })
    }

    fn wait_names(&self) -> &'static [WaitName] {
        const NAMES: &[WaitName] = &[
            WaitName::new("join", WaitingCode::Join),
            WaitName::new("cond", WaitingCode::Condition),
            WaitName::new("sem_", WaitingCode::Condition),
            WaitName::new("barrier", WaitingCode::Condition),
            WaitName::new("lll_lock_wait_private", OTHER_LOCK),
            WaitName::new("pthread_mutex", GLIBC_MUTEX),
            WaitName::new("lll_lock", GLIBC_MUTEX),
            WaitName::new("rwlock", OTHER_LOCK),
        ];
        NAMES
    }

    fn lock_memory_bytes(&self) -> usize {
        MEMORY_BYTES
    }

    fn lock_owner(&self, wait: &LockWait<'_>) -> Option<FutexOwner> {
        match wait.code {
            WaitingCode::Join => {
                let tid = wait.read_u32(wait.uaddr)?;
                wait.is_live_other(tid).then_some(FutexOwner {
                    tid,
                    source: OwnerSource::Join,
                })
            }
            WaitingCode::Lock { glibc_mutex: true } => {
                let locked = wait.read_u32(wait.uaddr).is_some_and(|w| w != 0);
                let kind_ok = wait
                    .read_u32(wait.uaddr + KIND_OFFSET)
                    .is_some_and(|k| k & !KIND_BITS == 0);
                let users_ok = wait
                    .read_u32(wait.uaddr + NUSERS_OFFSET)
                    .is_some_and(|n| n >= 1);
                let tid = wait.read_u32(wait.uaddr + OWNER_OFFSET)?;
                let live = tid == wait.waiter_tid || wait.is_live_other(tid);
                (locked && kind_ok && users_ok && live).then_some(FutexOwner {
                    tid,
                    source: OwnerSource::GlibcMutex,
                })
            }
            // Waiting code no frame names (a stripped libc): a join only if the memory is the
            // joined thread's descriptor.
            WaitingCode::Condition | WaitingCode::Unknown => {
                let tid = wait.read_u32(wait.uaddr)?;
                let descriptor = wait.read_u32(wait.uaddr + PID_UNUSED_OFFSET) == Some(0)
                    && read_i64(wait, wait.uaddr + ROBUST_FUTEX_OFFSET_OFFSET)
                        == Some(ROBUST_FUTEX_OFFSET);
                (descriptor && wait.is_live_other(tid)).then_some(FutexOwner {
                    tid,
                    source: OwnerSource::Join,
                })
            }
            WaitingCode::Lock { glibc_mutex: false } => None,
        }
    }
}

/// The native-endian i64 at `addr`.
fn read_i64(wait: &LockWait<'_>, addr: u64) -> Option<i64> {
    let mut bytes = [0u8; 8];
    (wait.read_mem)(addr, &mut bytes).then(|| i64::from_ne_bytes(bytes))
}

/// Whether a mapped file is glibc's C library, or its thread library where glibc before 2.34
/// kept joins and mutexes (`libc.so.6`, `libpthread.so.0`, `libc-2.31.so`...).
fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    ["libc", "libpthread"].iter().any(|lib| {
        name.strip_prefix(lib).is_some_and(|rest| {
            rest.starts_with(".so") || (rest.starts_with('-') && rest.contains(".so"))
        })
    })
}

/// Whether the innermost user frames, up to the first named one, are nameless frames in libc:
/// a wait in libc's internal code entered from a caller outside libc through an exported
/// function that tail-called it, as a libc without its debug files shows it. (With the debug
/// files those frames have names and the wait names classify them.)
pub(crate) fn nameless_libc_wait(user_stack: &[Frame]) -> bool {
    let inner = user_stack.iter().take_while(|f| f.name.is_none());
    let mut inner_count = 0;
    for frame in inner {
        if !frame.module.as_deref().is_some_and(is_libc) {
            return false;
        }
        inner_count += 1;
    }
    let caller = user_stack.get(inner_count);
    inner_count > 0 && caller.is_some_and(|f| !f.module.as_deref().is_some_and(is_libc))
}

/// Whether a thread shows the signature of glibc parking it for ever inside
/// `pthread_mutex_lock` after the kernel refused a PI lock (`EDEADLK`: the lock chain loops
/// back to it; or `ESRCH`: the owner died): a futex wait without timeout on a zero word on its
/// own stack, called from glibc's mutex code. (With `watch` attached at the refusal, the
/// refused lock itself is known instead.) Without libc's debug files the mutex code has no
/// name (`pthread_mutex_lock` tail-calls `__pthread_mutex_lock_full`): nameless libc code right
/// under the caller ([`nameless_libc_wait`]) counts as well.
pub(crate) fn parked_by_glibc(
    op: u32,
    uaddr: u64,
    word: Option<u32>,
    user_sp: Option<u64>,
    code: WaitingCode,
    user_stack: &[Frame],
) -> bool {
    const FUTEX_WAIT: u32 = 0;
    const FUTEX_WAIT_BITSET: u32 = 9;
    let on_own_stack = user_sp.is_some_and(|sp| uaddr >= sp && uaddr - sp < OWN_STACK_WINDOW);
    matches!(op, FUTEX_WAIT | FUTEX_WAIT_BITSET)
        && word == Some(0)
        && on_own_stack
        && (code == GLIBC_MUTEX || (code == WaitingCode::Unknown && nameless_libc_wait(user_stack)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: [u32; 3] = [100, 101, 102];

    /// A recorded glibc mutex at 0x1000: the word 2 (locked, contended), `__owner`,
    /// `__nusers` 1, `__kind` 0, optionally overridden.
    fn mutex_bytes(word: u32, owner: u32, kind: u32) -> [u8; MUTEX_BYTES] {
        let mut bytes = [0u8; MUTEX_BYTES];
        bytes[0..4].copy_from_slice(&word.to_ne_bytes());
        bytes[8..12].copy_from_slice(&owner.to_ne_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_ne_bytes());
        bytes[16..20].copy_from_slice(&kind.to_ne_bytes());
        bytes
    }

    /// The owner glibc names for `bytes` recorded at 0x1000.
    fn owner(bytes: &[u8], code: WaitingCode, waiter: u32) -> Option<FutexOwner> {
        let read_mem = |addr: u64, buf: &mut [u8]| {
            let Some(start) = addr.checked_sub(0x1000).map(|o| o as usize) else {
                return false;
            };
            match bytes.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        };
        let wait = LockWait {
            uaddr: 0x1000,
            code,
            waiter_tid: waiter,
            live_tids: &LIVE,
            read_mem: &read_mem,
        };
        Glibc.lock_owner(&wait)
    }

    /// Check that a glibc mutex owner is trusted only when it is a live other thread of the
    /// process and the mutex fields look like a locked mutex.
    #[test]
    fn glibc_mutex_owner_needs_every_check() {
        let found = owner(&mutex_bytes(2, 101, 0), GLIBC_MUTEX, 100);
        assert_eq!(
            found.map(|o| (o.tid, o.source)),
            Some((101, OwnerSource::GlibcMutex))
        );
        assert_eq!(owner(&mutex_bytes(2, 999, 0), GLIBC_MUTEX, 100), None);
        // Relocking a mutex it holds: the waiter is its own owner.
        let own = owner(&mutex_bytes(2, 100, 0), GLIBC_MUTEX, 100);
        assert_eq!(own.map(|o| o.tid), Some(100));
        assert_eq!(owner(&mutex_bytes(0, 101, 0), GLIBC_MUTEX, 100), None);
        assert_eq!(
            owner(&mutex_bytes(2, 101, 0x1234_0000), GLIBC_MUTEX, 100),
            None
        );
        assert_eq!(owner(&mutex_bytes(2, 101, 0), OTHER_LOCK, 100), None);
        // Only the word could be read: no owner.
        assert_eq!(owner(&mutex_bytes(2, 101, 0)[..4], GLIBC_MUTEX, 100), None);
    }

    /// Check that a join names the joined thread, and the same word in a condition wait means
    /// nothing.
    #[test]
    fn join_owner() {
        let word = 101u32.to_ne_bytes();
        let found = owner(&word, WaitingCode::Join, 100).unwrap();
        assert_eq!((found.tid, found.source), (101, OwnerSource::Join));
        assert_eq!(owner(&word, WaitingCode::Condition, 100), None);
        assert_eq!(owner(&999u32.to_ne_bytes(), WaitingCode::Join, 100), None);
    }

    /// Check that glibc's park after a refused PI lock is recognised only on a zero word on the
    /// thread's own stack, in glibc's mutex code.
    #[test]
    fn glibc_park_signature() {
        let sp = 0x7ff0_0000_0000;
        assert!(parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            GLIBC_MUTEX,
            &[]
        ));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(2),
            Some(sp),
            GLIBC_MUTEX,
            &[]
        ));
        assert!(!parked_by_glibc(
            9,
            0x5555_0000,
            Some(0),
            Some(sp),
            GLIBC_MUTEX,
            &[]
        ));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            None,
            GLIBC_MUTEX,
            &[]
        ));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            WaitingCode::Condition,
            &[]
        ));
        assert!(!parked_by_glibc(
            6,
            sp + 0x74,
            Some(0),
            Some(sp),
            GLIBC_MUTEX,
            &[]
        ));
    }

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    /// A stack as a libc without debug files symbolizes it: `None` is a nameless libc frame,
    /// a name is a named frame of `module`.
    fn stripped(frames: &[Option<&str>], module: &str) -> Vec<Frame> {
        frames
            .iter()
            .map(|name| Frame {
                name: name.map(str::to_owned),
                module: Some(if name.is_some() { module } else { LIBC }.to_owned()),
                ..Frame::default()
            })
            .collect()
    }

    /// The joined thread's descriptor as recorded at a join's word (glibc 2.36, x86_64):
    /// `tid`, `pid_ununsed`, `robust_prev` and `robust_head.list` (both pointing at the empty
    /// list head), `robust_head.futex_offset`.
    fn descriptor_bytes(tid: u32, pid_unused: u32, futex_offset: i64) -> [u8; DESCRIPTOR_BYTES] {
        let mut bytes = [0u8; DESCRIPTOR_BYTES];
        bytes[0..4].copy_from_slice(&tid.to_ne_bytes());
        bytes[4..8].copy_from_slice(&pid_unused.to_ne_bytes());
        bytes[8..16].copy_from_slice(&0x1010u64.to_ne_bytes());
        bytes[16..24].copy_from_slice(&0x1010u64.to_ne_bytes());
        bytes[24..32].copy_from_slice(&futex_offset.to_ne_bytes());
        bytes
    }

    /// Check that a join no frame names (stripped libc: nameless frames under the caller) is
    /// recognised from the joined thread's descriptor, and only from it.
    #[test]
    fn join_from_the_thread_descriptor() {
        let unknown = WaitingCode::Unknown;
        let found = owner(&descriptor_bytes(101, 0, -32), unknown, 100).unwrap();
        assert_eq!((found.tid, found.source), (101, OwnerSource::Join));
        let cond = owner(&descriptor_bytes(101, 0, -32), WaitingCode::Condition, 100);
        assert_eq!(cond.map(|o| o.tid), Some(101));
        // Not a live other thread, not a descriptor, or not all of it recorded: no owner.
        assert_eq!(owner(&descriptor_bytes(999, 0, -32), unknown, 100), None);
        assert_eq!(owner(&descriptor_bytes(100, 0, -32), unknown, 100), None);
        assert_eq!(owner(&descriptor_bytes(101, 7, -32), unknown, 100), None);
        assert_eq!(owner(&descriptor_bytes(101, 0, 0), unknown, 100), None);
        assert_eq!(
            owner(&descriptor_bytes(101, 0, -32)[..8], unknown, 100),
            None
        );
        // A bare word equal to a live tid in unnamed code is no join.
        assert_eq!(owner(&101u32.to_ne_bytes(), unknown, 100), None);
        // A mutex wait is never taken for a join.
        let as_lock = owner(&descriptor_bytes(101, 0, -32), OTHER_LOCK, 100);
        assert_eq!(as_lock, None);
    }

    /// Check which stacks are libc internals without names right under their caller, as the
    /// stripped libc of a deadlocked program's join and parked PI waiter show.
    #[test]
    fn nameless_libc_frames_under_a_caller() {
        let program = "/opt/abba";
        let join = stripped(&[None, None, Some("main"), None], program);
        assert!(nameless_libc_wait(&join));
        // Named libc code (an exported function) decides by its name instead.
        let mutex = stripped(&[None, Some("pthread_mutex_lock"), Some("worker")], LIBC);
        assert!(!nameless_libc_wait(&mutex));
        // Nameless code outside libc, or nothing named at all, is not libc's.
        let mut jit = stripped(&[None, Some("main")], program);
        jit[0].module = Some("/opt/libjit.so".into());
        assert!(!nameless_libc_wait(&jit));
        assert!(!nameless_libc_wait(&stripped(&[None, None], program)));
        assert!(!nameless_libc_wait(&stripped(&[Some("main")], program)));
        assert!(is_libc("/lib/x86_64-linux-gnu/libc-2.31.so"));
        assert!(is_libc("/lib/x86_64-linux-gnu/libpthread.so.0"));
        assert!(!is_libc("/usr/lib/libcap.so.2"));
        assert!(!is_libc("/usr/lib/libcurl.so.4"));
    }

    /// Check that glibc's park is recognised without the mutex code's names when nameless
    /// libc code sits right under the caller, and not when a named function waits.
    #[test]
    fn glibc_park_in_a_stripped_libc() {
        let sp = 0x7ff0_0000_0000;
        let unknown = WaitingCode::Unknown;
        let parked = stripped(&[None, None, Some("lock_a_while_holding_b")], "/opt/abba");
        assert!(parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            unknown,
            &parked
        ));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(1),
            Some(sp),
            unknown,
            &parked
        ));
        let sem = stripped(&[None, Some("sem_wait"), Some("worker")], LIBC);
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            unknown,
            &sem
        ));
        assert!(!parked_by_glibc(
            9,
            sp + 0x74,
            Some(0),
            Some(sp),
            unknown,
            &[]
        ));
    }

    /// Check that musl processes are not taken for glibc ones.
    #[test]
    fn musl_is_not_glibc() {
        let glibc = Maps::parse("1000-2000 r-xp 0 fe:00 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n");
        let musl = Maps::parse("1000-2000 r-xp 0 fe:00 1 /lib/ld-musl-x86_64.so.1\n");
        assert!(Glibc.detect(&glibc));
        assert!(!Glibc.detect(&musl));
    }
}
