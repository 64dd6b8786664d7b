//! Wakers (`--wakers`, offwaketime's view): when a waiting thread is woken, remember the
//! waking thread and its stacks on the wait, so the charge at switch-in carries them. The
//! waker's user stack is taken the way `--unwind` says, as a wait's is.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::BtfTracePointContext,
};
use tracer_common::{STACK_ID_NONE, counter, flags};

use crate::{
    config, filter,
    maps::{announce_process, count, task_thread},
    regs::Regs,
    stacks,
};

/// `sched_waking(p)`: `current` is the waker (or whatever ran when an interrupt woke `p`).
#[inline(always)]
pub(crate) fn on_waking(ctx: &BtfTracePointContext) {
    if !config::has(flags::WAKERS) {
        return;
    }
    let wakee: *const u8 = ctx.arg(0);
    let Some((_, thread)) = task_thread(wakee) else {
        return;
    };
    // SAFETY: a live map value.
    let wait = unsafe { &mut (*thread).wait };
    if wait.start_ns == 0 || wait.waker.comm[0] != 0 {
        return; // not waiting, or already woken once
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let waker_tid = pid_tgid as u32;
    let waker_tgid = (pid_tgid >> 32) as u32;
    let want_user =
        config::has(flags::USER_STACKS) && waker_tid != 0 && !filter::current_is_kthread();
    let waker = &mut wait.waker;
    waker.kernel_stack_id = if config::has(flags::KERNEL_STACKS) {
        stacks::record(ctx, false)
    } else {
        STACK_ID_NONE
    };
    let regs = if want_user && config::has(flags::STACK_COPIES) {
        Regs::current()
    } else {
        Regs::zero()
    };
    waker.user_stack_id = if !want_user {
        STACK_ID_NONE
    } else if config::has(flags::STACK_COPIES)
        && crate::syscall::in_syscall(&regs)
        && !filter::current_is_exiting()
    {
        // Copied only for a waker in a syscall: an interrupt's wakeup (a timer ending a
        // sleep) finds whatever thread ran, anywhere in its code, and would make a new site
        // at nearly every wakeup; an exiting thread (waking its joiner) may have no memory
        // left to copy. Their frame-pointer walks (below) cost no copy.
        crate::sites::waker_site(ctx, &regs, waker_tid, waker_tgid)
    } else {
        stacks::record(ctx, true)
    };
    waker.tgid = waker_tgid;
    waker.tid = waker_tid;
    waker.comm = bpf_get_current_comm().unwrap_or_default();
    count(counter::WAKERS_RECORDED);
    if waker_tgid != 0 {
        announce_process(waker_tgid);
    }
}
