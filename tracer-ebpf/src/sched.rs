//! Off-CPU accounting on `sched_switch`, after libbpf-tools' offcputime: stamp and stack the
//! thread leaving the CPU (its user stack can only be read while it is `current`), charge the
//! elapsed time when it comes back, aggregated in the kernel.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::BtfTracePointContext,
};
use tracer_common::{
    OffCpuKey, OffCpuValue, STACK_ID_NONE, UserRegs, Waker, counter, flags, state, syscalls,
};

use crate::{
    config, filter,
    maps::{
        OFFCPU_TOTALS, SEEN_TGIDS, THREADS, announce_exec, announce_process, count, task_thread,
        thread_entry,
    },
    python,
    regs::Regs,
    stacks,
};

// Task state bits (include/linux/sched.h), the values `sched_switch`'s prev_state reports.
const TASK_INTERRUPTIBLE: u32 = 0x1;
const TASK_UNINTERRUPTIBLE: u32 = 0x2;
const EXIT_DEAD: u32 = 0x10;
const EXIT_ZOMBIE: u32 = 0x20;
const TASK_DEAD: u32 = 0x80;
const TASK_NOLOAD: u32 = 0x400;

/// The state class of a switch-out, or `None` for a thread that is exiting.
#[inline(always)]
fn classify(preempt: bool, prev_state: u32) -> Option<u32> {
    if prev_state & (EXIT_DEAD | EXIT_ZOMBIE | TASK_DEAD) != 0 {
        return None;
    }
    Some(if preempt || prev_state == 0 {
        state::RUNNABLE
    } else if prev_state & TASK_NOLOAD != 0 {
        state::OTHER // TASK_IDLE: an idle kernel worker, not I/O
    } else if prev_state & TASK_INTERRUPTIBLE != 0 {
        state::SLEEPING
    } else if prev_state & TASK_UNINTERRUPTIBLE != 0 {
        state::DISK
    } else {
        state::OTHER
    })
}

/// `sched_switch`: `current` is `prev`.
#[inline(always)]
pub(crate) fn on_switch(ctx: &BtfTracePointContext) {
    let preempt: u64 = ctx.arg(0);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    switch_out(ctx, preempt & 1 != 0, prev_state as u32, now);
    switch_in(next, now);
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, preempt: bool, prev_state: u32, now: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if tid == 0 {
        return; // the idle task
    }
    let Some(class) = classify(preempt, prev_state) else {
        return;
    };
    if class & config::state_mask() == 0 || !filter::current_selected(tgid, tid) {
        return;
    }
    let Some(kthread) = filter::thread_kind_selected() else {
        return;
    };
    let Some(thread) = thread_entry(tid) else {
        return;
    };
    if thread.wait.start_ns != 0 {
        // The previous wait's switch-in was never seen: its time is lost, and said so. Seen
        // when the kernel emits no `sched_switch` for some `prev` tasks (on the 6.18 test VM,
        // none for its PID 1's threads, in ftrace and perf tracepoints alike), so a switch from
        // such a task straight to this thread is invisible. Nothing here can recover it.
        count(counter::DROP_UNMATCHED_WAIT);
    }
    // A kernel thread has no user registers (its pt_regs are zeros or stale).
    let regs = if kthread {
        Regs::zero()
    } else {
        Regs::current()
    };
    if config::has(flags::SYSCALLS_FROM_REGS) && !kthread {
        thread.syscall = crate::syscall::from_regs(&regs);
    }
    let (kernel_stack_id, user_stack_id) = stacks::for_wait(ctx, &regs, thread, class, kthread);
    let wait = &mut thread.wait;
    wait.kernel_stack_id = kernel_stack_id;
    wait.user_stack_id = user_stack_id;
    wait.python_stack_id = if kthread || !config::has(flags::PYTHON_STACKS) {
        STACK_ID_NONE
    } else {
        python::record(tid, tgid)
    };
    wait.syscall = thread.syscall;
    wait.user_regs = if kthread || !config::has(flags::USER_REGS) {
        UserRegs::default()
    } else {
        regs.user()
    };
    wait.waker = Waker::default();
    wait.tgid = tgid;
    wait.state = class;
    wait.comm = bpf_get_current_comm().unwrap_or_default();
    wait.start_ns = now;
    count(counter::WAITS_STARTED);
    announce_process(tgid);
}

#[inline(always)]
fn switch_in(next: *const u8, now: u64) {
    let Some((tid, thread)) = task_thread(next) else {
        return;
    };
    // SAFETY: a live map value.
    let wait = unsafe { &mut (*thread).wait };
    let start = wait.start_ns;
    if start == 0 {
        return;
    }
    wait.start_ns = 0;
    if config::has(flags::IN_FLIGHT_ONLY) {
        return;
    }
    let delta = now.saturating_sub(start);
    if delta < config::min_block_ns() || delta > config::max_block_ns() {
        count(counter::WAITS_FILTERED_DURATION);
        return;
    }
    let futex_op = if wait.syscall.kind == syscalls::kind::FUTEX {
        (wait.syscall.detail & syscalls::FUTEX_CMD_MASK) as u32
    } else {
        0
    };
    let key = OffCpuKey {
        kernel_stack_id: wait.kernel_stack_id,
        user_stack_id: wait.user_stack_id,
        waker_kernel_stack_id: wait.waker.kernel_stack_id,
        waker_user_stack_id: wait.waker.user_stack_id,
        resource: wait.syscall.resource,
        tgid: wait.tgid,
        tid,
        waker_tgid: wait.waker.tgid,
        waker_tid: wait.waker.tid,
        kind: wait.syscall.kind,
        nr: wait.syscall.nr,
        futex_op,
        state: wait.state,
        python_stack_id: wait.python_stack_id,
    };
    charge(&key, delta, &wait.comm, &wait.waker.comm);
}

/// Adds one wait of `delta_ns` to the aggregate.
#[inline(always)]
fn charge(key: &OffCpuKey, delta_ns: u64, comm: &[u8; 16], waker_comm: &[u8; 16]) {
    if add_to_existing(key, delta_ns) {
        return;
    }
    let value = OffCpuValue {
        total_ns: delta_ns,
        count: 1,
        max_ns: delta_ns,
        comm: *comm,
        waker_comm: *waker_comm,
    };
    if OFFCPU_TOTALS
        .insert(key, &value, BPF_NOEXIST.into())
        .is_ok()
    {
        count(counter::WAITS_CHARGED);
    } else if !add_to_existing(key, delta_ns) {
        count(counter::DROP_TOTALS_FULL);
    }
}

#[inline(always)]
fn add_to_existing(key: &OffCpuKey, delta_ns: u64) -> bool {
    let Some(value) = OFFCPU_TOTALS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a live map value; other CPUs may update it concurrently, hence the atomics.
    unsafe {
        // The BPF target has no compare-and-swap, so `AtomicU64::fetch_add` is unavailable;
        // the intrinsic lowers to BPF's atomic add (bcc's `__sync_fetch_and_add`).
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).total_ns, delta_ns);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).count, 1);
        if delta_ns > (*value).max_ns {
            (*value).max_ns = delta_ns;
        }
    }
    count(counter::WAITS_CHARGED);
    true
}

/// `sched_process_exit`: the exiting thread is `current`; forget it. A wait still stamped
/// here was never seen ending (the thread runs, so it was switched in unseen, as in
/// `switch_out`): lost, and counted, like one found at the next switch-out.
#[inline(always)]
pub(crate) fn on_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a map value read in place.
    if unsafe { THREADS.get(&tid) }.is_some_and(|t| t.wait.start_ns != 0) {
        count(counter::DROP_UNMATCHED_WAIT);
    }
    let _ = THREADS.remove(tid);
    if tid == tgid {
        let _ = SEEN_TGIDS.remove(tgid);
    }
}

/// `sched_process_exec`: the exec'ing thread is `current`; its process has a new image.
#[inline(always)]
pub(crate) fn on_exec() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if filter::current_selected(tgid, pid_tgid as u32) {
        announce_exec(tgid);
    }
}
