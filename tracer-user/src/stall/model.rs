//! What `watch` knows about one blocked thread, and what it concluded.
//!
//! [`BlockedThread`] is filled in by the impure gathering step (BPF maps, `/proc`, unwinding,
//! symbolization); everything in `stall` after that is a pure function of these values, so the
//! verdict logic is unit-tested with hand-written threads and no root.

use crate::symbolize::Frame;

/// Where a wait was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Recorded by the BPF programs at switch-out: start time and stacks are exact.
    Traced,
    /// Already in progress when `watch` attached, read from `/proc`: the start time is the
    /// kernel's last-ran time of the thread, and the user stack is unwound from `/proc` SP/PC.
    Snapshot,
}

/// The syscall a thread is blocked in, with the arguments the analysis needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCall {
    /// Syscall number (x86_64).
    pub nr: u32,
    /// `tracer_common::syscalls::kind` value.
    pub kind: u32,
    /// Futex address, fd, epoll fd... (see `tracer_common::SyscallCtx::resource`).
    pub resource: u64,
    /// Futex op or poll/epoll timeout in ms.
    pub detail: u64,
    /// Raw timeout argument (see `tracer_common::SyscallCtx::timeout`).
    pub timeout: u64,
}

/// Whether a wait can end by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Ends only when something else acts: a futex wait or lock without timeout, epoll/poll
    /// with -1, blocking read/recv/accept, join, waitpid.
    Indefinite,
    /// Has a timeout or is a sleep: ends by itself.
    Timed,
    /// Not in a syscall stallwatch knows (page fault, uninterruptible I/O, untracked syscall).
    Unknown,
}

/// How a futex's owner was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerSource {
    /// A PI futex: the kernel keeps the owner's tid in the word.
    PiWord,
    /// A glibc `pthread_mutex_t`: `__owner` at offset 8, a live thread of the same process.
    GlibcMutex,
    /// `pthread_join`: the word is the joined thread's tid, cleared when it exits.
    Join,
    /// A `FUTEX_LOCK_PI` the kernel refused with `EDEADLK` before the thread was parked.
    FailedPiLock,
}

/// The thread that holds (or, for a join, is) what a thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexOwner {
    /// Owner thread id.
    pub tid: u32,
    /// How it was found.
    pub source: OwnerSource,
}

/// A futex wait: what it is on, and who holds it when that can be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexWait {
    /// The futex word's address.
    pub uaddr: u64,
    /// Futex command (`op & FUTEX_CMD_MASK`).
    pub op: u32,
    /// The word's current value, if it could be read.
    pub word: Option<u32>,
    /// The address of the lock the thread wants, when it differs from `uaddr` (a PI lock
    /// refused with `EDEADLK`, after which glibc parks the thread on a word of its own stack).
    pub lock_uaddr: Option<u64>,
    /// Who holds the lock (or the thread joined); `None` when it cannot be known.
    pub owner: Option<FutexOwner>,
}

/// The fd a thread waits on, as far as `/proc` tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// The fd number in the process.
    pub fd: i32,
    /// socket, pipe, fifo, file, eventfd, timerfd, epoll, signalfd, other.
    pub fd_type: String,
    /// Socket local address.
    pub local: Option<String>,
    /// Socket peer address.
    pub peer: Option<String>,
    /// One-line description: `TCP 127.0.0.1:41234 -> 127.0.0.1:5432 (ESTABLISHED)`,
    /// `pipe:[1234], write end held by 4711 (writer) fd 5`, `epoll on 3: eventfd, ...`.
    pub description: String,
    /// For an epoll fd: whether any fd in its interest list could be made ready from
    /// outside the process (socket, pipe, timerfd...).
    pub external: bool,
}

/// One thread in a blocking wait, with everything gathered about it.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedThread {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// `ps` state letter: S, D...
    pub state: char,
    /// When the wait began, CLOCK_MONOTONIC ns.
    pub since_ns: u64,
    /// How long it has lasted at the time of the scan, ns.
    pub blocked_for_ns: u64,
    /// Where the wait was seen.
    pub origin: Origin,
    /// The syscall, if the thread is in one stallwatch follows.
    pub call: Option<SyscallCall>,
    /// Timed or indefinite.
    pub timing: Timing,
    /// Futex details for futex waits.
    pub futex: Option<FutexWait>,
    /// What the waited-on fd is, for fd waits (read, recv, accept, epoll).
    pub fd: Option<FdInfo>,
    /// The thread was returning from epoll_wait/poll/select shortly before this wait began:
    /// it runs an event loop, and this wait is not its poll.
    pub event_loop: bool,
    /// Kernel wait channel from `/proc`, if read.
    pub wchan: Option<String>,
    /// Kernel stack, innermost first.
    pub kernel_stack: Vec<Frame>,
    /// User stack, innermost first.
    pub user_stack: Vec<Frame>,
    /// User stack pointer when the wait began, if known.
    pub user_sp: Option<u64>,
}

/// A process whose threads `watch` looked at in a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessView {
    /// Process id.
    pub pid: u32,
    /// Every thread of the process at the scan.
    pub tids: Vec<u32>,
}

/// What a blocked thread's situation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Part of a cycle in the wait-for graph.
    Deadlock,
    /// Waits on a thread in a deadlock cycle (a lock it holds, or its exit).
    BlockedByDeadlock,
    /// Every thread of the process is in an indefinite wait nothing outside can end.
    ProcessStalled,
    /// An event-loop thread blocked outside its poll call.
    EventLoopBlocked,
    /// An indefinite wait past the threshold on a named resource.
    Stall,
    /// Waiting for work: an idle pool worker, a server in accept, a loop in epoll -1.
    Idle,
}

impl Verdict {
    /// True for verdicts that are problems (reported and counted in the exit status).
    pub fn is_problem(self) -> bool {
        !matches!(self, Self::Idle)
    }

    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deadlock => "deadlock",
            Self::BlockedByDeadlock => "blocked_by_deadlock",
            Self::ProcessStalled => "process_stalled",
            Self::EventLoopBlocked => "event_loop_blocked",
            Self::Stall => "stall",
            Self::Idle => "idle",
        }
    }
}

/// One edge of a deadlock cycle: `tid` waits for `resource`, held by `owner_tid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleEdge {
    /// The waiting thread.
    pub tid: u32,
    /// What it waits for, e.g. `mutex 0x7f12...` or `thread 4242 to exit`.
    pub waits_for_resource: String,
    /// The thread holding it.
    pub owner_tid: u32,
}

/// A deadlock: a cycle in one process's wait-for graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// Process id.
    pub pid: u32,
    /// The edges in order; the last edge's owner is the first edge's thread.
    pub edges: Vec<CycleEdge>,
}

/// A blocked thread with its verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The thread.
    pub thread: BlockedThread,
    /// What it is.
    pub verdict: Verdict,
    /// One line saying why, e.g. "waits for mutex 0x55.. held by 4243, which waits for ...".
    pub explanation: String,
}

/// The result of one scan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    /// Every blocked thread past the threshold, with a verdict.
    pub findings: Vec<Finding>,
    /// Deadlock cycles.
    pub cycles: Vec<Cycle>,
}
