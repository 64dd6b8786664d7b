//! Syscall context: which blocking syscall a thread is in and on what, so every off-CPU
//! interval carries a wait kind and a resource (futex address, fd, epoll fd...). Entry
//! records it, exit always clears it (futexctn's pairing); or, without those hooks
//! (`flags::SYSCALLS_FROM_REGS`, `profile`), it is read from the saved user registers at
//! switch-out, which hold the same number and arguments for as long as the syscall runs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    programs::BtfTracePointContext,
};
use tracer_common::{FailedLock, SyscallCtx, ThreadState, syscalls};

use crate::{config, filter, maps::THREADS, maps::thread_entry, regs::Regs};

/// Reads the `i`th syscall argument from the saved user registers.
#[inline(always)]
fn arg(regs: *const u8, i: usize) -> u64 {
    // SAFETY: `regs` is the kernel's `struct pt_regs` for this syscall; checked read.
    unsafe { bpf_probe_read_kernel(regs.add(config::regs_arg_off(i) as usize) as *const u64) }
        .unwrap_or(0)
}

/// The context of tracked syscall `nr` whose `i`th argument is `arg(i)`, stamped `enter_ns`.
#[inline(always)]
fn context(
    arg: impl Fn(usize) -> u64,
    nr: u32,
    layout: syscalls::ArgLayout,
    enter_ns: u64,
) -> SyscallCtx {
    let resource = arg(layout.resource);
    let detail = match layout.detail {
        Some(i) => arg(i),
        None => 0,
    };
    let timeout = match layout.timeout {
        Some(i) if Some(i) == layout.detail => detail,
        Some(i) => arg(i),
        None => 0,
    };
    SyscallCtx {
        kind: layout.kind,
        nr,
        resource,
        detail,
        timeout,
        enter_ns,
    }
}

/// `sys_enter`.
#[inline(always)]
pub(crate) fn on_enter(ctx: &BtfTracePointContext) {
    let id: i64 = ctx.arg(1);
    if id < 0 {
        return;
    }
    let nr = id as u32;
    let Some(layout) = syscalls::classify(nr) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !filter::current_selected((pid_tgid >> 32) as u32, tid) {
        return;
    }
    let regs: *const u8 = ctx.arg(0);
    let Some(thread) = thread_entry(tid) else {
        return;
    };
    // SAFETY: helper without arguments.
    thread.syscall = context(|i| arg(regs, i), nr, layout, unsafe { bpf_ktime_get_ns() });
}

/// The tracked syscall the running user thread is in, from its saved user registers
/// (`flags::SYSCALLS_FROM_REGS`); `enter_ns` is unknown (0). Outside a syscall `orig_ax` is
/// negative (an interrupt) or a page fault's error code, which `ax` tells apart: syscall
/// entry sets it to `-ENOSYS` and only the syscall's return overwrites it.
#[inline(always)]
pub(crate) fn from_regs(regs: &Regs) -> SyscallCtx {
    let nr = regs.orig_ax();
    let layout = u32::try_from(nr).ok().and_then(syscalls::classify);
    match layout {
        Some(layout) if in_syscall(regs) => context(|i| regs.arg(i), nr as u32, layout, 0),
        _ => SyscallCtx {
            kind: syscalls::kind::NONE,
            nr: u32::MAX,
            ..SyscallCtx::default()
        },
    }
}

/// Whether the running user thread is inside a syscall (any; see [`from_regs`] for why both
/// registers): a thread waking another on purpose is (futex wake, pipe write, kill); a
/// thread an interrupt happened to find running, whose stack says nothing of the wakeup, is
/// usually not.
#[inline(always)]
pub(crate) fn in_syscall(regs: &Regs) -> bool {
    (regs.orig_ax() as i64) >= 0 && regs.ax() == -syscalls::ENOSYS as u64
}

/// `sys_exit`: clears the syscall context, and remembers what `watch` needs afterwards: a PI
/// lock the kernel refused as a deadlock, and the return from a poll-style wait.
#[inline(always)]
pub(crate) fn on_exit(ctx: &BtfTracePointContext) {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: as in `arg`.
    let nr = unsafe {
        bpf_probe_read_kernel(regs.add(config::regs_orig_ax_off() as usize) as *const u64)
    }
    .unwrap_or(u64::MAX);
    if syscalls::classify(nr as u32).is_none() {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(thread) = THREADS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: a live map value written only by this thread's hooks.
    let thread = unsafe { &mut *thread };
    let ctx_nr = thread.syscall.nr;
    match thread.syscall.kind {
        syscalls::kind::FUTEX if ctx_nr == nr as u32 => {
            let cmd = (thread.syscall.detail & syscalls::FUTEX_CMD_MASK) as u32;
            if cmd == syscalls::FUTEX_LOCK_PI || cmd == syscalls::FUTEX_LOCK_PI2 {
                pi_lock_result(thread, ret);
            }
        }
        syscalls::kind::EPOLL | syscalls::kind::POLL | syscalls::kind::SELECT => {
            // SAFETY: helper without arguments.
            thread.poll.last_exit_ns = unsafe { bpf_ktime_get_ns() };
            thread.poll.count += 1;
        }
        _ => {}
    }
    thread.syscall.kind = syscalls::kind::NONE;
    thread.syscall.nr = u32::MAX;
}

/// Records a `FUTEX_LOCK_PI` refused with `EDEADLK` (address and the word naming the owner),
/// forgets it once a PI lock succeeds.
#[inline(always)]
fn pi_lock_result(thread: &mut ThreadState, ret: i64) {
    if ret == 0 {
        thread.failed_lock = FailedLock::default();
    } else if ret == -syscalls::EDEADLK {
        let uaddr = thread.syscall.resource;
        // SAFETY: checked read of the caller's own futex word.
        let word = unsafe { bpf_probe_read_user(uaddr as *const u32) }.unwrap_or(0);
        thread.failed_lock = FailedLock {
            uaddr,
            // SAFETY: helper without arguments.
            at_ns: unsafe { bpf_ktime_get_ns() },
            word,
            _pad: 0,
        };
    }
}
