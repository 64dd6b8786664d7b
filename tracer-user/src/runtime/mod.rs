//! The runtime seam: what stallwatch knows about the code a thread runs in, one file per
//! runtime (glibc, Rust's std, and later CPython, HotSpot, GHC...).
//!
//! A blocked thread's native facts (syscall, futex word, native stack) say *that* it waits; the
//! runtime it runs in says *what for*. Each [`Runtime`] contributes, for the processes it is
//! detected in:
//!
//! - **detection** from the process's mappings, once per process (again after an exec or a
//!   `dlopen` changes its code; `crate::procs` calls [`detect`]);
//! - **wait names**: substrings of function names that mark waiting code (a lock, a join, a
//!   condition). Frame names identify their code wherever it runs (glibc linked statically is
//!   still glibc), so the names of every registered runtime are matched in every process;
//!   [`waiting_code`] classifies a stack once;
//! - optionally a **lock owner**, read from the memory at the futex a thread waits on through a
//!   `read_mem` closure (framehop's habit), so it is unit-tested on recorded bytes and replayed
//!   from recordings; only runtimes detected in the process are asked;
//! - optionally a **view** read from its own structures once per scan ([`Runtime::view`]):
//!   for each blocked thread its frames (interpreted functions, put in among the native
//!   frames where the interpreter runs them), its name, and what it waits for in the
//!   runtime's terms (the lock object and its owner, the thread it joins); for the process,
//!   its version and its green threads. Memory is only read, never written, and the process
//!   is never stopped. What a view reads is recorded (`model::RuntimeThread`,
//!   `model::RuntimeProcess`), so the analysis replays without the process.
//!
//! Adding a runtime is one file implementing [`Runtime`] and one line in [`RUNTIMES`]; see
//! `docs/architecture.md`.

mod cpython;
mod event_loops;
mod ghc;
mod glibc;
mod hotspot;
mod rust_std;

use std::{
    any::Any,
    collections::{BTreeMap, HashMap},
};

use crate::{
    model::{Frame, FutexOwner, RuntimeProcess, RuntimeThread, WaitingCode},
    procs::maps::Maps,
};

pub(crate) use cpython::offcpu::PythonStacks;
pub(crate) use event_loops::{LoopInFrames, loop_in_frames};
pub(crate) use glibc::{nameless_libc_wait, parked_by_glibc};

/// How many innermost user frames are searched for the code that waits.
const FRAMES_SEARCHED: usize = 6;

/// Every runtime stallwatch knows, in the order their lock owners are asked for.
static RUNTIMES: [&dyn Runtime; 5] = [
    &glibc::Glibc,
    &rust_std::RustStd,
    &cpython::CPython,
    &hotspot::Hotspot,
    &ghc::Ghc,
];

/// Wait names many native libraries use, whatever runtime they belong to (tokio's and others'
/// semaphores and notifiers, CPython's `PyThread_acquire_lock`, spin locks).
const GENERIC_WAIT_NAMES: &[WaitName] = &[
    WaitName::new("semaphore", WaitingCode::Condition),
    WaitName::new("notify", WaitingCode::Condition),
    WaitName::new("acquire_lock", WaitingCode::Lock { glibc_mutex: false }),
    WaitName::new("spinlock", WaitingCode::Lock { glibc_mutex: false }),
];

/// A substring of a function name (lower case) that marks waiting code, and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitName {
    /// Lower-case substring of the function name.
    pub contains: &'static str,
    /// What code with such a name waits for.
    pub means: WaitingCode,
}

impl WaitName {
    /// `contains` (lower case) means `means`.
    pub(crate) const fn new(contains: &'static str, means: WaitingCode) -> Self {
        Self { contains, means }
    }

    /// Which of two names matching the same function wins: a join over a condition over a
    /// lock (`pthread_cond_wait` re-locking its mutex is a condition wait), then the longer
    /// (more specific) name: `lll_lock_wait_private` over `lll_lock`, `pthread_mutex` over
    /// `mutex`.
    fn precedence(&self) -> (u8, usize) {
        let class = match self.means {
            WaitingCode::Join => 3,
            WaitingCode::Condition => 2,
            WaitingCode::Lock { .. } => 1,
            WaitingCode::Unknown => 0,
        };
        (class, self.contains.len())
    }
}

/// What a runtime reads to name a lock's owner: the futex wait and the waiting process.
#[derive(Clone, Copy)]
pub(crate) struct LockWait<'a> {
    /// The futex word's address.
    pub uaddr: u64,
    /// What the waiting code is ([`waiting_code`]).
    pub code: WaitingCode,
    /// The waiting thread.
    pub waiter_tid: u32,
    /// Every thread of the waiter's process.
    pub live_tids: &'a [u32],
    /// Reads the waiter's memory: fills the buffer from the address, false if unreadable.
    /// Only the [`lock_memory_bytes`] at `uaddr` are there (recorded by `watch`'s gather).
    pub read_mem: &'a dyn Fn(u64, &mut [u8]) -> bool,
}

impl LockWait<'_> {
    /// The native-endian u32 at `addr`.
    pub(crate) fn read_u32(&self, addr: u64) -> Option<u32> {
        read_u32(addr, self.read_mem)
    }

    /// Whether `tid` is a live thread of the waiter's process other than the waiter.
    pub(crate) fn is_live_other(&self, tid: u32) -> bool {
        tid != 0 && tid != self.waiter_tid && self.live_tids.contains(&tid)
    }
}

/// The native-endian u64 at `addr` in the memory `read_mem` reads.
pub(crate) fn read_u64(addr: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<u64> {
    read_bytes(addr, read_mem).map(u64::from_ne_bytes)
}

/// The native-endian u32 at `addr` in the memory `read_mem` reads.
pub(crate) fn read_u32(addr: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<u32> {
    read_bytes(addr, read_mem).map(u32::from_ne_bytes)
}

/// The native-endian u16 at `addr` in the memory `read_mem` reads.
pub(crate) fn read_u16(addr: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<u16> {
    read_bytes(addr, read_mem).map(u16::from_ne_bytes)
}

fn read_bytes<const N: usize>(
    addr: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    read_mem(addr, &mut bytes).then_some(bytes)
}

/// A process whose runtime view is asked for, once per scan in which it has blocked threads.
pub(crate) struct ProcessInput<'a> {
    /// Process id.
    pub pid: u32,
    /// Its mappings.
    pub maps: &'a Maps,
    /// Every thread of the process.
    pub tids: &'a [u32],
    /// Its threads blocked past the threshold.
    pub blocked: &'a [BlockedInput<'a>],
    /// Reads the process's memory now: fills the buffer from the address, false if unreadable.
    pub read_mem: &'a dyn Fn(u64, &mut [u8]) -> bool,
}

/// A blocked thread, as a runtime view is asked about it.
pub(crate) struct BlockedInput<'a> {
    /// Thread id.
    pub tid: u32,
    /// The futex word it sleeps on, for futex waits.
    pub futex_uaddr: Option<u64>,
    /// Its native user frames, innermost first (DWARF-unwound, symbolized).
    pub native: &'a [Frame],
}

/// What a runtime read about one process at a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// About the process as a whole (recorded in its `ProcessView`).
    pub process: RuntimeProcess,
    /// About its blocked threads, by tid (threads it knows nothing about are left out). A
    /// runtime may add other threads of the process that wait for a lock (a lock wait made of
    /// short re-parks never lasts past the threshold by itself): `watch::gather` reads them
    /// from `/proc` when they sleep.
    pub threads: BTreeMap<u32, ThreadView>,
}

/// What a runtime read about one blocked thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThreadView {
    /// The facts recorded with the thread.
    pub facts: RuntimeThread,
    /// The thread's whole user stack with this runtime's frames put in among the native ones
    /// (where its interpreter runs them), innermost first; `None` to leave the stack as is.
    pub frames: Option<Vec<Frame>>,
}

/// A runtime's memo for one process, kept while the process lives (what it found once: the
/// interpreter's address, its version, structure layouts).
pub(crate) type Memo = Option<Box<dyn Any>>;

/// What stallwatch knows about one runtime. See the module docs.
pub(crate) trait Runtime: Sync {
    /// Short name, as in recordings (`glibc`, `rust_std`, ...).
    fn name(&self) -> &'static str;

    /// Whether a process with these mappings runs this runtime.
    fn detect(&self, maps: &Maps) -> bool;

    /// Function-name substrings that mark this runtime's waiting code.
    fn wait_names(&self) -> &'static [WaitName];

    /// How many bytes at a futex address [`Runtime::lock_owner`] reads.
    fn lock_memory_bytes(&self) -> usize {
        0
    }

    /// The thread holding the lock (or joined by the join) `wait` waits for, if this
    /// runtime's code waits there and the owner can be trusted.
    fn lock_owner(&self, wait: &LockWait<'_>) -> Option<FutexOwner> {
        let _ = wait;
        None
    }

    /// Whether this runtime reads its own structures ([`Runtime::view`]).
    fn has_view(&self) -> bool {
        false
    }

    /// Reads this runtime's view of a process it was detected in: its own threads, their
    /// frames and what they wait for, from memory only (never stopping the process). `memo` is
    /// this runtime's memo for the process, `None` at the first call. `None` if the process
    /// does not (yet) run this runtime in a way it can read.
    fn view(&self, process: &ProcessInput<'_>, memo: &mut Memo) -> Option<View> {
        let _ = (process, memo);
        None
    }
}

/// The runtimes detected in one process, as a set over [`RUNTIMES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Runtimes(u32);

impl Runtimes {
    /// The runtimes of the set, in registration order.
    pub(crate) fn iter(self) -> impl Iterator<Item = &'static dyn Runtime> {
        RUNTIMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, r)| *r)
    }

    /// Their names.
    pub(crate) fn names(self) -> Vec<String> {
        self.iter().map(|r| r.name().to_owned()).collect()
    }

    /// The set of the named runtimes (unknown names are ignored: a recording from a newer
    /// stallwatch).
    pub(crate) fn from_names(names: &[String]) -> Self {
        let bits = RUNTIMES
            .iter()
            .enumerate()
            .filter(|(_, r)| names.iter().any(|n| n == r.name()))
            .fold(0, |bits, (i, _)| bits | (1 << i));
        Self(bits)
    }
}

/// The runtimes a process with these mappings runs.
pub(crate) fn detect(maps: &Maps) -> Runtimes {
    let bits = RUNTIMES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.detect(maps))
        .fold(0, |bits, (i, _)| bits | (1 << i));
    Runtimes(bits)
}

/// How many bytes at a futex address to read for the lock owners of every runtime.
pub(crate) fn lock_memory_bytes() -> usize {
    RUNTIMES
        .iter()
        .map(|r| r.lock_memory_bytes())
        .max()
        .unwrap_or(0)
        .max(4)
}

/// Classifies the code a thread waits in by the names of its innermost user frames; the
/// innermost frame with a recognised name decides. Named frames none of which is recognised
/// are a condition wait (waiting for a signal of some kind); no names at all, or nameless libc
/// code right under the first named frame ([`nameless_libc_wait`]: libc's internals without
/// its debug files), is unknown: what libc waits for is then told from memory and the syscall
/// (`glibc`'s join and park rules), not from the caller's name.
pub(crate) fn waiting_code(user_stack: &[Frame]) -> WaitingCode {
    let mut any_named = false;
    for frame in user_stack.iter().take(FRAMES_SEARCHED) {
        let Some(name) = frame.name.as_deref() else {
            continue;
        };
        any_named = true;
        let lower = name.to_ascii_lowercase();
        let best = RUNTIMES
            .iter()
            .flat_map(|r| r.wait_names())
            .chain(GENERIC_WAIT_NAMES)
            .filter(|n| lower.contains(n.contains))
            .max_by_key(|n| n.precedence());
        if let Some(n) = best {
            return n.means;
        }
    }
    if any_named && !nameless_libc_wait(user_stack) {
        WaitingCode::Condition
    } else {
        WaitingCode::Unknown
    }
}

/// The owner the first runtime of `runtimes` that knows one names.
pub(crate) fn lock_owner(runtimes: Runtimes, wait: &LockWait<'_>) -> Option<FutexOwner> {
    runtimes.iter().find_map(|r| r.lock_owner(wait))
}

/// The views of every runtime of `runtimes` that reads its own structures, with their memos
/// for the process.
pub(crate) fn views(
    runtimes: Runtimes,
    process: &ProcessInput<'_>,
    memos: &mut HashMap<&'static str, Memo>,
) -> Vec<View> {
    runtimes
        .iter()
        .filter(|r| r.has_view())
        .filter_map(|r| r.view(process, memos.entry(r.name()).or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrameKind;
    use crate::stall::fixtures::frames;

    const GLIBC: WaitingCode = WaitingCode::Lock { glibc_mutex: true };

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

    /// Check the waiting code of stacks as a libc without its debug files symbolizes them
    /// (recorded on Debian 12, glibc 2.36): exported names still classify, nameless libc
    /// code right under its caller is unknown (not a condition wait).
    #[test]
    fn waiting_code_of_a_stripped_libc() {
        let libc = Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned());
        let program = Some("/opt/abba".to_owned());
        let frame = |name: Option<&str>, module: &Option<String>| Frame {
            name: name.map(str::to_owned),
            module: module.clone(),
            ..Frame::default()
        };
        // `libc.so.6+0x8612b` (`__lll_lock_wait`), `pthread_mutex_lock+0x111`, caller.
        let mutex = [
            frame(None, &libc),
            frame(Some("pthread_mutex_lock"), &libc),
            frame(Some("lock_b_while_holding_a"), &program),
        ];
        assert_eq!(waiting_code(&mutex), GLIBC);
        // A join (`__futex_abstimed_wait_common`, `__pthread_clockjoin_ex`) from `main`.
        let join = [
            frame(None, &libc),
            frame(None, &libc),
            frame(Some("main"), &program),
        ];
        assert_eq!(waiting_code(&join), WaitingCode::Unknown);
        let cond = [
            frame(None, &libc),
            frame(Some("pthread_cond_wait"), &libc),
            frame(Some("main"), &program),
        ];
        assert_eq!(waiting_code(&cond), WaitingCode::Condition);
        let lll_private = [
            frame(Some("__lll_lock_wait_private"), &libc),
            frame(None, &libc),
            frame(Some("main"), &program),
        ];
        assert_eq!(
            waiting_code(&lll_private),
            WaitingCode::Lock { glibc_mutex: false }
        );
    }

    /// Check that within one function name a join beats a condition beats a lock, and a
    /// longer name beats a shorter one of the same class.
    #[test]
    fn precedence_within_one_name() {
        for (name, want) in [
            ("__pthread_mutex_cond_lock", WaitingCode::Condition),
            ("__pthread_mutex_lock_full", GLIBC),
            (
                "pthread_rwlock_wrlock",
                WaitingCode::Lock { glibc_mutex: false },
            ),
            ("std::thread::park", WaitingCode::Condition),
            (
                "PyThread_acquire_lock_timed",
                WaitingCode::Lock { glibc_mutex: false },
            ),
            ("some_function", WaitingCode::Condition),
        ] {
            assert_eq!(waiting_code(&frames(&[name])), want, "{name}");
        }
    }

    /// A runtime made up for the test: in process 7 its interpreter keeps the name of the
    /// function each thread runs, NUL-terminated, at `0x5000 + tid * 0x100`, and runs it inside
    /// `toy_eval`; the word at `0x4000` counts its views (its memo remembers the first). (A
    /// real runtime finds that table per process, from its symbols.)
    struct Toy;

    impl Runtime for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }

        fn detect(&self, maps: &Maps) -> bool {
            maps.iter().any(|m| m.path.ends_with("/libtoy.so"))
        }

        fn wait_names(&self) -> &'static [WaitName] {
            &[]
        }

        fn has_view(&self) -> bool {
            true
        }

        fn view(&self, process: &ProcessInput<'_>, memo: &mut Memo) -> Option<View> {
            let base: u64 = match process.pid {
                7 => 0x5000,
                _ => return None,
            };
            let first = memo.get_or_insert_with(|| Box::new(process.tids.len()));
            let first_tids = *first.downcast_ref::<usize>()?;
            let mut threads = BTreeMap::new();
            for blocked in process.blocked {
                let mut name = [0u8; 16];
                let at = base + u64::from(blocked.tid) * 0x100;
                if !(process.read_mem)(at, &mut name) {
                    continue;
                }
                let Some(len) = name.iter().position(|&b| b == 0) else {
                    continue;
                };
                let Ok(function) = std::str::from_utf8(&name[..len]) else {
                    continue;
                };
                let eval = blocked
                    .native
                    .iter()
                    .position(|f| f.name.as_deref() == Some("toy_eval"));
                let frames = eval.map(|eval| {
                    let mut frames = blocked.native.to_vec();
                    let kind = FrameKind::Interpreted {
                        runtime: self.name().into(),
                    };
                    frames.insert(eval, Frame::named(function, kind));
                    frames
                });
                let facts = RuntimeThread {
                    runtime: self.name().into(),
                    name: Some(format!("toy-{first_tids}")),
                    wait: None,
                    event_loop: false,
                    task: None,
                };
                threads.insert(blocked.tid, ThreadView { facts, frames });
            }
            let process = RuntimeProcess {
                runtime: self.name().into(),
                version: None,
                interpreters: Some(1),
                green_threads: Vec::new(),
                service_tids: Vec::new(),
            };
            Some(View { process, threads })
        }
    }

    /// Check that a runtime's frames, read from recorded memory through `read_mem`, are put
    /// in where its interpreter runs them, that its memo persists between views, and that
    /// nothing is made up when the memory is not there (the seam CPython, HotSpot and GHC
    /// plug into).
    #[test]
    fn runtime_frames_come_from_recorded_memory() {
        let mut memory = vec![0u8; 0x200];
        memory[0x100..0x105].copy_from_slice(b"main\0");
        let read_mem = |addr: u64, buf: &mut [u8]| {
            let Some(start) = addr.checked_sub(0x5000).map(|a| a as usize) else {
                return false;
            };
            match memory.get(start..start + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        };
        let native = frames(&["futex_wait", "toy_eval", "main"]);
        let maps = Maps::parse("1000-2000 r-xp 0 fe:00 1 /opt/libtoy.so\n");
        let blocked = |tid| BlockedInput {
            tid,
            futex_uaddr: None,
            native: &native,
        };
        let blocked = [blocked(1), blocked(9)];
        let input = |pid, tids: &'static [u32]| ProcessInput {
            pid,
            maps: &maps,
            tids,
            blocked: &blocked,
            read_mem: &read_mem,
        };
        let mut memo = None;
        let view = Toy.view(&input(7, &[1, 9]), &mut memo).expect("a view");
        let merged = view.threads[&1].frames.clone().expect("frames");
        let names: Vec<&str> = merged.iter().filter_map(|f| f.name.as_deref()).collect();
        assert_eq!(names, ["futex_wait", "main", "toy_eval", "main"]);
        assert_eq!(
            merged[1].kind,
            FrameKind::Interpreted {
                runtime: "toy".into()
            }
        );
        assert!(!view.threads.contains_key(&9), "no memory, no frames");
        let again = Toy.view(&input(7, &[1, 9, 10]), &mut memo).expect("a view");
        assert_eq!(again.threads[&1].facts.name.as_deref(), Some("toy-2"));
        assert_eq!(Toy.view(&input(8, &[1]), &mut None), None);
        assert!(Toy.detect(&maps));
    }

    /// Check that runtime sets round-trip through their names and detection finds glibc and
    /// Rust's std in an ordinary process.
    #[test]
    fn detection_and_names() {
        let maps = Maps::parse(
            "7f0000000000-7f0000100000 r-xp 00028000 fe:00 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n",
        );
        let found = detect(&maps);
        assert_eq!(found.names(), ["glibc", "rust_std"]);
        assert_eq!(Runtimes::from_names(&found.names()), found);
        assert_eq!(Runtimes::from_names(&["cobol".into()]), Runtimes::default());
        assert!(lock_memory_bytes() >= 32);
    }
}
