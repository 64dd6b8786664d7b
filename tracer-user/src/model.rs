//! Owned domain types: what a capture produced, independent of aya and of the BPF map layout.
//!
//! `capture` converts BPF maps into these; everything after it (aggregation, symbolization,
//! export, reports) works on them only, so it can be unit-tested with recorded input and no root.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use tracer_common::{state, syscalls};

/// A stack as recorded in the kernel: instruction pointers, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RawStack {
    /// No stack exists or none was asked for (a kernel thread's user stack, `-K`, `-U`).
    #[default]
    None,
    /// A stack should exist but could not be recorded (counted in [`Counters`]).
    Missed,
    /// The addresses, innermost first.
    Frames(Vec<u64>),
}

/// Thread-state class at switch-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ThreadState {
    /// Interruptible sleep (S).
    Sleeping,
    /// Uninterruptible sleep (D).
    Disk,
    /// Preempted or yielded while runnable (R): waiting for a CPU, not blocked.
    Runnable,
    /// Stopped, traced, parked, or another state.
    Other,
}

impl ThreadState {
    /// From a `tracer_common::state` class bit.
    pub fn from_class(class: u32) -> Self {
        match class {
            state::SLEEPING => Self::Sleeping,
            state::DISK => Self::Disk,
            state::RUNNABLE => Self::Runnable,
            _ => Self::Other,
        }
    }

    /// One-letter code as in `ps` (S, D, R, ?).
    pub fn letter(self) -> char {
        match self {
            Self::Sleeping => 'S',
            Self::Disk => 'D',
            Self::Runnable => 'R',
            Self::Other => '?',
        }
    }

    /// True for waits that are blocked time (S, D, other), false for runnable (CPU) waits.
    pub fn is_blocked(self) -> bool {
        self != Self::Runnable
    }
}

/// What a wait was on: the syscall the thread was in when it left the CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wait {
    /// A `tracer_common::syscalls::kind` value (`kind::NONE` outside tracked syscalls).
    pub kind: u32,
    /// Syscall number, if in a tracked syscall.
    pub syscall_nr: Option<u32>,
    /// Futex address, fd, epoll fd... (meaning depends on `kind`); 0 when none.
    pub resource: u64,
    /// Futex command for futex waits.
    pub futex_op: Option<u32>,
}

impl Wait {
    /// Short name of the kind: "futex", "epoll", "read", ... or "other".
    pub fn kind_name(&self) -> &'static str {
        syscalls::kind_name(self.kind)
    }

    /// Syscall name, if known.
    pub fn syscall_name(&self) -> Option<&'static str> {
        self.syscall_nr.and_then(syscalls::name)
    }

    /// Human label of the resource, e.g. `uaddr=0x7f..` or `fd=5`, if the kind has one.
    pub fn resource_label(&self) -> Option<String> {
        use syscalls::kind;
        match self.kind {
            kind::FUTEX | kind::FUTEX_WAITV => Some(format!("uaddr=0x{:x}", self.resource)),
            // fds and pids are C ints: the register's upper half is not part of the value.
            kind::EPOLL => Some(format!("epfd={}", self.resource as i32)),
            kind::READ | kind::RECV | kind::ACCEPT => Some(format!("fd={}", self.resource as i32)),
            kind::WAIT_CHILD => Some(format!("pid={}", self.resource as i32)),
            _ => None,
        }
    }
}

/// The thread that woke a wait (`--wakers`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Waker {
    /// Waker's process id.
    pub pid: u32,
    /// Waker's thread id.
    pub tid: u32,
    /// Waker's thread name.
    pub comm: String,
    /// Waker's kernel stack.
    pub kernel_stack: RawStack,
    /// Waker's user stack.
    pub user_stack: RawStack,
}

/// Off-CPU time aggregated over identical (thread, stacks, wait, state, waker) tuples.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffCpuSample {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Kernel stack at switch-out.
    pub kernel_stack: RawStack,
    /// User stack at switch-out.
    pub user_stack: RawStack,
    /// What the thread waited on.
    pub wait: Wait,
    /// State class at switch-out.
    pub state: Option<ThreadState>,
    /// Who woke it, with `--wakers` when known.
    pub waker: Option<Waker>,
    /// Sum of the waits' durations.
    pub total_ns: u64,
    /// Number of waits.
    pub count: u64,
    /// Longest single wait.
    pub max_ns: u64,
    /// True for a wait still in progress when the trace ended (charged up to the end).
    pub still_blocked: bool,
}

/// Event and loss counts from the kernel side. Losses are everything recorded imperfectly or
/// not at all; filtered events are not losses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Waits begun and tracked.
    pub waits_started: u64,
    /// Waits ended and charged.
    pub waits_charged: u64,
    /// Waits outside the min/max duration filter.
    pub waits_filtered_duration: u64,
    /// Waits lost: per-thread map full.
    pub drop_threads_full: u64,
    /// Waits lost: aggregate map full.
    pub drop_totals_full: u64,
    /// Stacks lost: stack map full.
    pub drop_stacks_full: u64,
    /// Kernel stacks that could not be walked.
    pub kernel_stack_errors: u64,
    /// User stacks that could not be walked.
    pub user_stack_errors: u64,
    /// Stacks reused from the per-thread memo.
    pub stack_memo_hits: u64,
    /// Wakers recorded.
    pub wakers_recorded: u64,
    /// New-process notices lost (symbolization of short-lived processes may suffer).
    pub drop_new_process_notice: u64,
    /// Waits lost because their end (switch-in) was never seen.
    #[serde(default)]
    pub drop_unmatched_wait: u64,
}

impl Counters {
    /// The non-zero loss counters, named, for reports.
    pub fn losses(&self) -> Vec<(&'static str, u64)> {
        [
            ("thread map full", self.drop_threads_full),
            ("aggregate map full", self.drop_totals_full),
            ("stack map full", self.drop_stacks_full),
            ("kernel stack error", self.kernel_stack_errors),
            ("user stack error", self.user_stack_errors),
            ("new-process notice lost", self.drop_new_process_notice),
            ("wait end not seen", self.drop_unmatched_wait),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// Everything one `stallwatch profile` run collected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// Aggregated samples.
    pub samples: Vec<OffCpuSample>,
    /// Kernel-side counters.
    pub counters: Counters,
    /// How long the trace ran.
    pub duration: Duration,
    /// Process names by pid, read while the processes lived.
    pub process_names: BTreeMap<u32, String>,
}

/// A wait still in progress, read live from the kernel's per-thread state (`watch`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlightWait {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name at switch-out.
    pub comm: String,
    /// When the thread left the CPU (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// State class at switch-out.
    pub state: Option<ThreadState>,
    /// Syscall number, if the thread was in a tracked syscall.
    pub syscall_nr: Option<u32>,
    /// `tracer_common::syscalls::kind`.
    pub kind: u32,
    /// Resource argument (futex address, fd...).
    pub resource: u64,
    /// Detail argument (futex op, poll timeout).
    pub detail: u64,
    /// Timeout argument.
    pub timeout: u64,
    /// User (ip, sp, bp) at switch-out, when recorded.
    pub user_regs: Option<(u64, u64, u64)>,
    /// Kernel stack at switch-out.
    pub kernel_stack: RawStack,
    /// User stack at switch-out (frame-pointer walk).
    pub user_stack: RawStack,
    /// A PI lock refused with EDEADLK before this wait: (address, word at the failure, time).
    pub refused_pi_lock: Option<(u64, u32, u64)>,
    /// Last return from epoll_wait/poll/select (CLOCK_MONOTONIC ns) and how many there were.
    pub last_poll_exit: Option<(u64, u64)>,
}
