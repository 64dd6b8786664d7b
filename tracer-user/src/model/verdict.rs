//! What `stall::analyze` concludes about blocked threads: owners, verdicts, the structured
//! reason for each, deadlock cycles. Reports put these into words (`report::describe`); no
//! stage before them makes or reads English.

use super::{BlockedThread, GreenThread};

/// Whether a wait can end by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Ends only when something else acts: a futex wait or lock without timeout, epoll/poll
    /// with -1, blocking read/recv/accept, join, waitpid.
    Indefinite,
    /// Has a timeout or is a sleep: ends by itself.
    Timed,
    /// Not in a syscall stallwatch knows (page fault, uninterruptible I/O, untracked syscall).
    Unknown,
}

/// What the waiting code is, judged from its innermost user frames by the names the runtimes
/// know (`crate::runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitingCode {
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

/// How a futex's owner was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnerSource {
    /// A PI futex: the kernel keeps the owner's tid in the word.
    PiWord,
    /// A glibc `pthread_mutex_t`: `__owner` at offset 8, a live thread of the same process.
    GlibcMutex,
    /// `pthread_join`: the word is the joined thread's tid, cleared when it exits.
    Join,
    /// A `FUTEX_LOCK_PI` the kernel refused with `EDEADLK` before the thread was parked.
    FailedPiLock,
    /// A runtime's lock object records its owner (`threading.RLock`, a Java monitor), read
    /// by the runtime's view.
    RuntimeLock,
    /// A runtime's join (`Thread.join`): the thread object waited for, read by the runtime's
    /// view.
    RuntimeJoin,
}

impl OwnerSource {
    /// The "owner" is a thread waited for to exit, not a lock holder.
    pub(crate) fn is_join(self) -> bool {
        matches!(self, Self::Join | Self::RuntimeJoin)
    }
}

/// The thread that holds (or, for a join, is) what a thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FutexOwner {
    /// Owner thread id.
    pub tid: u32,
    /// How it was found.
    pub source: OwnerSource,
}

/// What a blocked thread's situation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Verdict {
    /// Part of a cycle in the wait-for graph.
    Deadlock,
    /// Waits on a thread in a deadlock cycle (a lock it holds, or its exit).
    BlockedByDeadlock,
    /// Every thread of the process is in an indefinite wait nothing outside can end, and
    /// one waits for a lock.
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
    pub(crate) fn is_problem(self) -> bool {
        !matches!(self, Self::Idle)
    }

    /// Name used in reports and JSON.
    pub(crate) fn name(self) -> &'static str {
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

/// Another thread named in a reason: its tid, and its name when it is among the blocked
/// threads of the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThreadRef {
    /// Thread id.
    pub tid: u32,
    /// Thread name, if known.
    pub comm: Option<String>,
}

/// Why a thread got its verdict, as facts for the report to phrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// In a deadlock cycle: waits for a lock held by `owner`.
    InCycle {
        /// The holder of what it waits for.
        owner: ThreadRef,
    },
    /// Waits (through a chain of owners) on `member` of a deadlock cycle.
    BehindDeadlock {
        /// The cycle member its chain leads into.
        member: ThreadRef,
    },
    /// All `threads` threads of the program (its runtime's service threads aside) wait
    /// indefinitely on private futexes, and at least one of them waits for a lock (a lock-wait
    /// frame, a runtime lock, a lock owner in the process) or, without one, for a result.
    AllThreadsWait {
        /// How many threads of the program wait.
        threads: usize,
        /// Without a lock among the waits: the thread waiting for the result of work handed
        /// to other threads (a future), which none of them is doing.
        result_waiter: Option<ThreadRef>,
    },
    /// An OS thread waits in its runtime's scheduler for its green thread while no thread of
    /// the process has run past the threshold: every green thread is blocked (GHC: on MVars,
    /// STM, in foreign calls), a likely deadlock the runtime does not report.
    GreenThreadsBlocked {
        /// The runtime's green threads, as read at the scan (empty if they could not be).
        green_threads: Vec<GreenThread>,
    },
    /// It came back to a poll-style call repeatedly, the last time just before this wait,
    /// which is not a poll.
    EventLoopOutsidePoll,
    /// Its frames show it runs an event loop (asyncio's `run_forever` read by its runtime, or
    /// a native loop: libuv's `uv_run`, glib, libevent, tokio), and this wait is not the
    /// loop's own poll.
    EventLoopInFrames {
        /// The native loop's library (`libuv`, `glib`...), `None` for a runtime's loop.
        library: Option<String>,
        /// The first frame outside the loop's machinery and the wait's plumbing: the call that
        /// blocked the loop, if named.
        blocking_call: Option<String>,
        /// The task the loop is running, if named.
        task: Option<String>,
    },
    /// Uninterruptible sleep (D) outside a followed syscall.
    Uninterruptible,
    /// Waits for a lock held by `owner`.
    LockHeld {
        /// The holder.
        owner: ThreadRef,
    },
    /// glibc parked it for ever after the kernel refused a PI lock before `watch` attached.
    ParkedAfterRefusedPiLock,
    /// Waits for a lock whose owner cannot be known.
    LockWithoutOwner,
    /// Blocked reading or receiving on an fd that is not a terminal.
    NoInput,
    /// Reads a pipe or FIFO whose writer is alive and not stuck: waiting for its input.
    WaitingForInput {
        /// The process holding the write end.
        writer: PipeWriter,
    },
    /// Reads a pipe or FIFO with no write end visible in `/proc` (held in another PID
    /// namespace, or an fd in flight): someone holds it, or the read would have ended.
    WriterNotVisible,
    /// Reads a pipe or FIFO whose every writer has all its threads stuck.
    WriterBlocked {
        /// A stuck writer.
        writer: PipeWriter,
    },
    /// Reads a pipe whose only write end its own process holds, and it has no other thread.
    ReadsOwnPipe,
    /// Receives on a TCP connection whose last data went out: a request the peer has not
    /// answered.
    RequestUnanswered {
        /// How long ago data was last sent, ms.
        sent_ms_ago: u32,
    },
    /// Waits on a pipe or local socket whose other end is a process with problems of its own
    /// (a deadlock, a stall, a blocked event loop): no answer or input will come until they
    /// end. `stall::peer_chain` gives it after the per-thread verdicts.
    PeerBlocked {
        /// The process (and thread, when known) at the other end.
        peer: PeerRef,
        /// The verdict of the peer thread its wait leads to.
        peer_verdict: Verdict,
        /// The reason its own facts gave before the peer was looked at (an unanswered
        /// request, a stuck writer...).
        own: Box<Reason>,
    },
    /// Receives on a local connection whose peer read the whole request (nothing unread in
    /// its receive queue) and has no blocked problem thread: the peer holds the request, as
    /// a blocking queue pop or a long poll does, and answers when it has something.
    RequestHeldByPeer {
        /// The process (and thread, when known) at the other end.
        peer: PeerRef,
        /// How long ago the request was sent, ms, when the connection's timing is known.
        sent_ms_ago: Option<u32>,
    },
    /// Receives on a TCP connection whose last data came in: waiting for the next message
    /// (a subscriber, a blocking queue pop, a keep-alive connection).
    LastMessageReceived {
        /// How long ago data was last received, ms.
        received_ms_ago: u32,
    },
    /// Its earlier waits on the same resource (the same fd or futex) ended by themselves, and
    /// this one has not lasted far longer than they did: a periodic wait (a receive with a
    /// socket timeout, a read of a heartbeat), not a hang.
    Periodic {
        /// How many earlier waits past the threshold on the resource were seen to end.
        ended_before: u32,
        /// The typical time from the start of one of these waits to the next, ms.
        period_ms: u32,
        /// How long the earlier waits typically lasted (at most), ms.
        typical_wait_ms: u32,
    },
    /// Receives on a unix stream connection whose peer has not read what this end sent: the
    /// request it waits for an answer to sits in the peer's receive queue.
    RequestUnread {
        /// Bytes in the peer's receive queue.
        unread_bytes: u32,
    },
    /// Receives on a unix stream connection whose peer has read everything this end sent:
    /// waiting for the peer to send (an answer it works on, or the next message).
    PeerReadEverything,
    /// Waits for `thread` to exit (a join).
    ThreadExit {
        /// The thread joined.
        thread: ThreadRef,
    },
    /// Waits for a signal: a condition variable, park, or futex of unknown use.
    Signal,
    /// Reads a terminal.
    TerminalInput,
    /// A server waiting for connections.
    Connections,
    /// Waits for a child process.
    ChildProcess,
    /// Waits for events (poll, epoll...).
    Events,
}

/// The process at the other end of a pipe or local socket, and the thread there when it can
/// be known (the process's only thread, or its one thread blocked on that other end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerRef {
    /// Its pid.
    pub pid: u32,
    /// The thread at the other end, when known.
    pub tid: Option<u32>,
}

/// The process at the write end of a pipe a thread reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PipeWriter {
    /// Its pid.
    pub pid: u32,
    /// Its name, if it could be read.
    pub comm: Option<String>,
}

/// A blocked thread with what the analysis inferred about it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Finding {
    /// The thread's facts.
    pub thread: BlockedThread,
    /// What the waiting code is.
    pub code: WaitingCode,
    /// Whether the wait can end by itself.
    pub timing: Timing,
    /// The thread runs an event loop (its frames say so, or it came back to a poll-style
    /// call repeatedly, the last time shortly before this wait began), and this wait is not
    /// its poll.
    pub event_loop: bool,
    /// Who holds what it waits for (or, for a join, the thread joined), when that can be
    /// trusted.
    pub owner: Option<FutexOwner>,
    /// The process (and thread, when known) at the other end of the pipe or local socket it
    /// waits on, when that is another process.
    pub peer: Option<PeerRef>,
    /// What it is.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
}

/// One edge of a deadlock cycle: `tid` waits for the lock at `lock_uaddr`, held by `owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CycleEdge {
    /// The waiting thread.
    pub tid: u32,
    /// The lock it waits for (or, for a join, the futex of the thread it joins).
    pub lock_uaddr: u64,
    /// The thread holding it.
    pub owner: FutexOwner,
}

/// A deadlock: a cycle in one process's wait-for graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// Process id.
    pub pid: u32,
    /// The edges in order; the last edge's owner is the first edge's thread.
    pub edges: Vec<CycleEdge>,
}

/// The result of one scan.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Analysis {
    /// Every blocked thread past the threshold, with a verdict.
    pub findings: Vec<Finding>,
    /// Deadlock cycles.
    pub cycles: Vec<Cycle>,
}
