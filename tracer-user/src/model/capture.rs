//! What the kernel side recorded: `profile`'s aggregated off-CPU samples and counters, and the
//! waits still in flight that `watch` reads while tracing.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Frame, RawStack, SyscallCall, ThreadState, UserRegs};

/// The thread that woke a wait (`--wakers`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Waker {
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
pub(crate) struct OffCpuSample {
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
    /// The syscall the thread waited in, if a tracked one (`detail` is the futex op; the
    /// timeout is not kept).
    pub call: Option<SyscallCall>,
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
    /// The Python frames the thread was running, innermost first (`profile --python`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python_stack: Vec<RawPyFrame>,
}

/// One Python frame as recorded at switch-out: where its code object is, not yet its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct RawPyFrame {
    /// Address of the code object in the process.
    pub code: u64,
    /// The frame's instruction pointer (an address inside the code object).
    pub instr: u64,
    /// The frame's marker byte (`is_entry` or `owner`, by version), low 3 bits.
    pub marker: u8,
}

/// Event and loss counts from the kernel side, plus the user frames user space dropped as not
/// real (`stacks::validate`). Losses are everything recorded imperfectly or not at all;
/// filtered events are not losses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
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
    /// User frames in no executable mapping (not return addresses): each cut its stack short.
    #[serde(default)]
    pub user_frames_outside_code: u64,
    /// User frames after one outside code, dropped with it (found by the same bad walk).
    #[serde(default)]
    pub user_frames_after_bad_frame: u64,
    /// Python stacks recorded at switch-out (`--python`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_stacks: u64,
    /// Python stacks that could not be read or stored (`--python`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_stack_errors: u64,
    /// Stack copies shipped to user space, one per new site (`--unwind dwarf|auto`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sites_shipped: u64,
    /// User stacks lost: the stack could not be copied (sp's page unreadable).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stack_copy_errors: u64,
    /// User stacks lost: the site ring buffer was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop_site_ring_full: u64,
    /// User stacks lost: the known-sites map was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop_sites_full: u64,
    /// User stacks lost: a wait names a site whose copy never arrived.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sites_missing: u64,
    /// Sites whose copy could not be unwound past its first frame (no CFI for the code, a
    /// stack unlike its CFI).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sites_not_unwound: u64,
    /// Sites whose process was gone, its maps never read, before the copy could be unwound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sites_process_gone: u64,
    /// Python threads BPF found in their thread lists before user space listed them
    /// (`--python`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_threads_found: u64,
    /// Thread states BPF read looking threads up (`--python`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_thread_states_read: u64,
    /// Lookups of threads with no thread state (native threads of Python processes, or not
    /// bound yet; `--python`). Not a loss.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_thread_not_found: u64,
    /// Lookups that failed or whose thread could not be stored (`--python`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_thread_search_errors: u64,
}

/// serde's `skip_serializing_if` for counters added later: absent when zero, so recordings
/// without stack copies or Python stacks read and write as before.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What was lost: each kernel-side loss counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LossReason {
    /// Waits lost: per-thread map full.
    ThreadMapFull,
    /// Waits lost: aggregate map full.
    AggregateMapFull,
    /// Stacks lost: stack map full.
    StackMapFull,
    /// Kernel stacks that could not be walked.
    KernelStackError,
    /// User stacks that could not be walked.
    UserStackError,
    /// New-process notices lost.
    NewProcessNoticeLost,
    /// Waits whose end (switch-in) was never seen.
    WaitEndNotSeen,
    /// User frames in no executable mapping, where a stack was cut.
    UserFrameOutsideCode,
    /// User frames dropped after a frame outside code.
    UserFrameAfterBadFrame,
    /// Python stacks that could not be read or stored (`--python`).
    PythonStackError,
    /// User stacks that could not be copied (`--unwind dwarf|auto`).
    StackCopyError,
    /// Stack copies not shipped: site ring buffer full.
    SiteRingFull,
    /// Stack copies not shipped: known-sites map full.
    SiteMapFull,
    /// Waits whose stack copy never arrived.
    SiteMissing,
    /// Stack copies that could not be unwound past their first frame.
    SiteNotUnwound,
    /// Stack copies of processes gone before they could be unwound.
    SiteProcessGone,
    /// Python thread lookups that failed (`--python`).
    PythonThreadSearchError,
}

impl LossReason {
    /// The name reports and JSON use, e.g. `stack map full`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ThreadMapFull => "thread map full",
            Self::AggregateMapFull => "aggregate map full",
            Self::StackMapFull => "stack map full",
            Self::KernelStackError => "kernel stack error",
            Self::UserStackError => "user stack error",
            Self::NewProcessNoticeLost => "new-process notice lost",
            Self::WaitEndNotSeen => "wait end not seen",
            Self::UserFrameOutsideCode => "user frame outside code",
            Self::UserFrameAfterBadFrame => "user frame after a bad frame",
            Self::PythonStackError => "python stack error",
            Self::StackCopyError => "user stack copy error",
            Self::SiteRingFull => "site ring full",
            Self::SiteMapFull => "site map full",
            Self::SiteMissing => "site copy missing",
            Self::SiteNotUnwound => "site not unwound",
            Self::SiteProcessGone => "site of a process gone",
            Self::PythonThreadSearchError => "python thread search error",
        }
    }
}

/// One kind of loss and how often it happened.
pub(crate) type Loss = (LossReason, u64);

impl Counters {
    /// The non-zero loss counters.
    pub(crate) fn losses(&self) -> Vec<Loss> {
        [
            (LossReason::ThreadMapFull, self.drop_threads_full),
            (LossReason::AggregateMapFull, self.drop_totals_full),
            (LossReason::StackMapFull, self.drop_stacks_full),
            (LossReason::KernelStackError, self.kernel_stack_errors),
            (LossReason::UserStackError, self.user_stack_errors),
            (
                LossReason::NewProcessNoticeLost,
                self.drop_new_process_notice,
            ),
            (LossReason::WaitEndNotSeen, self.drop_unmatched_wait),
            (
                LossReason::UserFrameOutsideCode,
                self.user_frames_outside_code,
            ),
            (
                LossReason::UserFrameAfterBadFrame,
                self.user_frames_after_bad_frame,
            ),
            (LossReason::PythonStackError, self.python_stack_errors),
            (LossReason::StackCopyError, self.stack_copy_errors),
            (LossReason::SiteRingFull, self.drop_site_ring_full),
            (LossReason::SiteMapFull, self.drop_sites_full),
            (LossReason::SiteMissing, self.sites_missing),
            (LossReason::SiteNotUnwound, self.sites_not_unwound),
            (LossReason::SiteProcessGone, self.sites_process_gone),
            (
                LossReason::PythonThreadSearchError,
                self.python_thread_search_errors,
            ),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// Everything one `stallwatch profile` run collected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Capture {
    /// Aggregated samples.
    pub samples: Vec<OffCpuSample>,
    /// Kernel-side counters.
    pub counters: Counters,
    /// How long the trace ran.
    pub duration: Duration,
    /// Process names by pid, read while the processes lived.
    pub process_names: BTreeMap<u32, String>,
}

/// A sample with its stacks turned into frames. All frame lists are innermost first; a stack
/// that is [`RawStack::None`] or [`RawStack::Missed`] gives an empty list (exporters look at
/// the raw stack in `sample` to tell the two apart).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResolvedSample {
    /// The sample as captured.
    pub sample: OffCpuSample,
    /// Name of the process (its main thread's comm, or the thread's comm as a last resort).
    pub process_name: String,
    /// User frames of the blocked thread.
    pub user: Vec<Frame>,
    /// Kernel frames of the blocked thread.
    pub kernel: Vec<Frame>,
    /// User frames of the waker, if any.
    pub waker_user: Vec<Frame>,
    /// Kernel frames of the waker, if any.
    pub waker_kernel: Vec<Frame>,
}

/// A `FUTEX_LOCK_PI` the kernel refused with `EDEADLK` shortly before a wait began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefusedPiLock {
    /// The lock's address.
    pub uaddr: u64,
    /// The lock's word: as read now if it still can be, else as recorded at the refusal
    /// (its owner's tid is in the low 30 bits).
    pub word: u32,
}

/// Returns from poll-style calls (epoll_wait, poll, select) seen since tracing began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PollReturns {
    /// The last return (CLOCK_MONOTONIC ns).
    pub last_ns: u64,
    /// How many there were.
    pub count: u64,
}

/// A wait still in progress, read live from the kernel's per-thread state (`watch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InFlightWait {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name at switch-out.
    pub comm: String,
    /// When the thread left the CPU (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// State class at switch-out.
    pub state: ThreadState,
    /// The syscall it waits in, if a tracked one.
    pub call: Option<SyscallCall>,
    /// User registers at switch-out, when recorded.
    pub user_regs: Option<UserRegs>,
    /// Kernel stack at switch-out.
    pub kernel_stack: RawStack,
    /// User stack at switch-out (frame-pointer walk).
    pub user_stack: RawStack,
    /// A PI lock refused with EDEADLK just before this wait (the word as recorded then).
    pub refused_pi_lock: Option<RefusedPiLock>,
    /// Returns from poll-style calls seen for this thread.
    pub poll_returns: Option<PollReturns>,
}
