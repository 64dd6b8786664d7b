//! What `watch` gathers about one blocked thread and its process: raw facts only.
//!
//! [`BlockedThread`] is filled in by the impure gathering step (BPF maps, `/proc`, unwinding,
//! symbolization, memory reads); `stall::analyze` infers owners and verdicts from these values
//! alone, so the analysis is unit-tested with hand-written threads and replayed from
//! recordings (`crate::record`), without root.

use serde::{Deserialize, Serialize};

use super::{
    FdDescription, Frame, PollReturns, RefusedPiLock, RuntimeProcess, RuntimeThread, SyscallCall,
    ThreadState,
};

/// One wait: thread and start time (CLOCK_MONOTONIC ns).
pub(crate) type WaitKey = (u32, u64);

/// Where a wait was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Origin {
    /// Recorded by the BPF programs at switch-out: start time and stacks are exact.
    Traced,
    /// Already in progress when `watch` attached, read from `/proc`: the start time is the
    /// kernel's last-ran time of the thread, and the user stack is unwound from `/proc` SP/PC.
    Snapshot,
}

/// A futex wait's raw facts: the word and the memory after it, read at the scan, and a PI lock
/// the kernel refused just before. Who holds the lock is inferred from these by the analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FutexFacts {
    /// The futex word's address.
    pub uaddr: u64,
    /// Futex command (`op & FUTEX_CMD_MASK`).
    pub op: u32,
    /// The bytes at `uaddr` as far as they could be read at the scan, up to
    /// `runtime::lock_memory_bytes()` (the word and, should it be a lock with fields after its
    /// word, those fields). Empty if even the word was unreadable.
    pub memory: Vec<u8>,
    /// A `FUTEX_LOCK_PI` refused with `EDEADLK` just before this wait (glibc then parks the
    /// thread on a word of its own stack, so this is the lock it wants).
    pub refused_pi_lock: Option<RefusedPiLock>,
}

impl FutexFacts {
    /// The futex word's value, if it could be read.
    pub(crate) fn word(&self) -> Option<u32> {
        let bytes = self.memory.get(..4)?;
        Some(u32::from_ne_bytes(bytes.try_into().ok()?))
    }

    /// The lock the thread wants: the refused PI lock, else the futex word's address.
    pub(crate) fn lock_uaddr(&self) -> u64 {
        self.refused_pi_lock.map_or(self.uaddr, |r| r.uaddr)
    }
}

/// One thread in a blocking wait, with everything gathered about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct BlockedThread {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Sleep state (S or D).
    pub state: ThreadState,
    /// When the wait began, CLOCK_MONOTONIC ns.
    pub since_ns: u64,
    /// How long it has lasted at the time of the scan, ns.
    pub blocked_for_ns: u64,
    /// Where the wait was seen.
    pub origin: Origin,
    /// The syscall, if the thread is in one stallwatch follows.
    pub call: Option<SyscallCall>,
    /// Futex facts, for futex waits.
    pub futex: Option<FutexFacts>,
    /// What the waited-on fd is, for fd waits (read, recv, accept, epoll).
    pub fd: Option<FdDescription>,
    /// Returns from poll-style calls seen for this thread while tracing (none for waits read
    /// from `/proc`).
    pub poll_returns: Option<PollReturns>,
    /// Kernel wait channel from `/proc`, if read.
    pub wchan: Option<String>,
    /// Kernel stack, innermost first.
    pub kernel_stack: Vec<Frame>,
    /// User stack, innermost first (with interpreted frames where a runtime adds them).
    pub user_stack: Vec<Frame>,
    /// User stack pointer when the wait began, if known.
    pub user_sp: Option<u64>,
    /// What the thread's runtime (`crate::runtime`) read about it at the scan, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeThread>,
}

impl BlockedThread {
    /// This wait's identity.
    pub(crate) fn key(&self) -> WaitKey {
        (self.tid, self.since_ns)
    }

    /// The thread's name as people know it: its runtime's name for it (a Python or Java
    /// thread name) when there is one, else its comm.
    pub(crate) fn name(&self) -> &str {
        self.runtime
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .unwrap_or(&self.comm)
    }
}

/// A process whose threads `watch` looked at in a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessView {
    /// Process id.
    pub pid: u32,
    /// Every thread of the process at the scan.
    pub tids: Vec<u32>,
    /// The runtimes detected in it (`crate::runtime`), by name.
    pub runtimes: Vec<String>,
    /// What the runtimes that read their own structures read about it at the scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_views: Vec<RuntimeProcess>,
    /// Not watched (`-p`): inspected only because a watched thread waits on it (the process
    /// at the other end of its pipe or local socket). Its findings are reported only as the
    /// links of a watched thread's wait chain, and never change the exit status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
}
