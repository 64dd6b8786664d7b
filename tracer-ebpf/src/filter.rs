//! In-kernel filters: which threads are traced at all. Everything a user can filter on is
//! decided here, before any stack is walked, so rejected threads cost almost nothing.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_kernel,
    },
    programs::BtfTracePointContext,
};
use tracer_common::flags;

use crate::{
    config,
    maps::{FILTER_TGIDS, FILTER_TIDS},
};

/// `PF_KTHREAD` (include/linux/sched.h); a flag value that has not changed since 2.6.
const PF_KTHREAD: u32 = 0x0020_0000;

/// Whether the running thread passes the `-p`/`-t`/`--cgroup` filters.
#[inline(always)]
pub(crate) fn current_selected(tgid: u32, tid: u32) -> bool {
    let flags = config::flags();
    if flags & (flags::FILTER_TGIDS | flags::FILTER_TIDS) != 0 {
        let by_tgid = flags & flags::FILTER_TGIDS != 0 && FILTER_TGIDS.get_ptr(tgid).is_some();
        let by_tid = flags & flags::FILTER_TIDS != 0 && FILTER_TIDS.get_ptr(tid).is_some();
        if !by_tgid && !by_tid {
            return false;
        }
    }
    if flags & flags::FILTER_CGROUP != 0 {
        // SAFETY: helper without arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        if cgroup != config::cgroup_id() {
            return false;
        }
    }
    true
}

/// `PF_EXITING`: the thread is in `do_exit` (its memory may already be gone).
const PF_EXITING: u32 = 0x0000_0004;

/// The running thread's `task->flags` (offset from BTF), 0 if unreadable.
#[inline(always)]
fn current_flags() -> u32 {
    // SAFETY: `current` is a valid task; the read is checked by the helper.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let flags_ptr = task.add(config::task_flags_off() as usize) as *const u32;
        bpf_probe_read_kernel(flags_ptr).unwrap_or(0)
    }
}

/// Whether the running thread is a kernel thread (`task->flags & PF_KTHREAD`).
#[inline(always)]
pub(crate) fn current_is_kthread() -> bool {
    current_flags() & PF_KTHREAD != 0
}

/// Whether the running thread is exiting (`task->flags & PF_EXITING`).
#[inline(always)]
pub(crate) fn current_is_exiting() -> bool {
    current_flags() & PF_EXITING != 0
}

/// Applies `-u`/`-k`: `Some(is_kthread)` when the running thread's kind is traced.
#[inline(always)]
pub(crate) fn thread_kind_selected() -> Option<bool> {
    let kthread = current_is_kthread();
    let flags = config::flags();
    if kthread && flags & flags::USER_THREADS_ONLY != 0 {
        return None;
    }
    if !kthread && flags & flags::KERNEL_THREADS_ONLY != 0 {
        return None;
    }
    Some(kthread)
}

/// `sched_process_fork` runs in the parent: with `FOLLOW_FORKS`, a new process forked by a
/// traced process is traced too (perf's inherit), as `-- COMMAND` users expect of scripts.
#[inline(always)]
pub(crate) fn on_fork(ctx: &BtfTracePointContext) {
    if !config::has(flags::FOLLOW_FORKS) {
        return;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if FILTER_TGIDS.get_ptr(parent_tgid).is_none() {
        return;
    }
    let child: *const u8 = ctx.arg(1);
    // SAFETY: `child` is the new task; checked read.
    let child_tgid =
        unsafe { bpf_probe_read_kernel(child.add(config::task_tgid_off() as usize) as *const i32) }
            .unwrap_or(0) as u32;
    if child_tgid != 0 && child_tgid != parent_tgid {
        // A full filter map only means the grandchild goes untraced; nothing to count per wait.
        let _ = FILTER_TGIDS.insert(child_tgid, 1u8, 0);
    }
}
