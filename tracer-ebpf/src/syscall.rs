//! Syscall context: which blocking syscall a thread is in and on what, so every off-CPU
//! interval carries a wait kind and a resource (futex address, fd, epoll fd...). Entry
//! records it, exit always clears it (futexctn's pairing).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::BtfTracePointContext,
};
use tracer_common::{SyscallCtx, syscalls};

use crate::{config, filter, maps::THREADS, maps::thread_entry};

/// Reads the `i`th syscall argument from the saved user registers.
#[inline(always)]
fn arg(regs: *const u8, i: usize) -> u64 {
    // SAFETY: `regs` is the kernel's `struct pt_regs` for this syscall; checked read.
    unsafe { bpf_probe_read_kernel(regs.add(config::regs_arg_off(i) as usize) as *const u64) }
        .unwrap_or(0)
}

/// `sys_enter`.
#[inline(always)]
pub fn on_enter(ctx: &BtfTracePointContext) {
    let id: i64 = ctx.arg(1);
    if id < 0 {
        return;
    }
    let nr = id as u32;
    let Some((kind, resource_arg, detail_arg)) = syscalls::classify(nr) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !filter::current_selected((pid_tgid >> 32) as u32, tid) {
        return;
    }
    let regs: *const u8 = ctx.arg(0);
    let resource = arg(regs, resource_arg);
    let detail = match detail_arg {
        Some(i) => arg(regs, i),
        None => 0,
    };
    let Some(thread) = thread_entry(tid) else {
        return;
    };
    thread.syscall = SyscallCtx {
        kind,
        nr,
        resource,
        detail,
        // SAFETY: helper without arguments.
        enter_ns: unsafe { bpf_ktime_get_ns() },
    };
}

/// `sys_exit`.
#[inline(always)]
pub fn on_exit(ctx: &BtfTracePointContext) {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: as in `arg`.
    let nr = unsafe {
        bpf_probe_read_kernel(regs.add(config::regs_orig_ax_off() as usize) as *const u64)
    }
    .unwrap_or(u64::MAX);
    if syscalls::classify(nr as u32).is_none() {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(thread) = THREADS.get_ptr_mut(tid) {
        // SAFETY: a live map value written only by this thread's hooks.
        unsafe {
            (*thread).syscall.kind = syscalls::kind::NONE;
            (*thread).syscall.nr = u32::MAX;
        }
    }
}
