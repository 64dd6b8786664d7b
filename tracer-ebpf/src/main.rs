//! stallwatch's BPF programs: one thin entry point per hook, calling plain functions in the
//! modules below. Nothing here panics; every failure is counted in `COUNTERS`.
//!
//! Hooks (all `tp_btf`, so neither kprobes nor a mounted tracefs are needed):
//! - `sched_switch`: stamp and stack the thread leaving the CPU, charge the one arriving.
//! - `sched_waking`: remember who woke a waiting thread (`--wakers`).
//! - `sys_enter`/`sys_exit`: which blocking syscall a thread is in, with its key arguments.
//! - `sched_process_exit`: forget a thread's state.
//! - `sched_process_fork`: follow children of `-- COMMAND`.
//! - `sched_process_exec`: tell the loader to cache the new image's maps for symbolization.
#![no_std]
#![no_main]
// Atomic add on map values (see sched.rs); the BPF crate is built with nightly anyway.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod config;
mod filter;
mod maps;
mod python;
mod pythreads;
mod regs;
mod sched;
mod sites;
mod stacks;
mod syscall;
mod wakeup;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)` (include/trace/events/sched.h, v5.18+).
#[btf_tracepoint(function = "sched_switch")]
fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    sched::on_switch(&ctx);
    0
}

/// `sched_waking(struct task_struct *p)`.
#[btf_tracepoint(function = "sched_waking")]
fn sched_waking(ctx: BtfTracePointContext) -> i32 {
    wakeup::on_waking(&ctx);
    0
}

/// `sys_enter(struct pt_regs *regs, long id)` (include/trace/events/syscalls.h).
#[btf_tracepoint(function = "sys_enter")]
fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    syscall::on_enter(&ctx);
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[btf_tracepoint(function = "sys_exit")]
fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    syscall::on_exit(&ctx);
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`: runs in the exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    sched::on_exit();
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
fn sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    sched::on_exec();
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
#[btf_tracepoint(function = "sched_process_fork")]
fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    filter::on_fork(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The helpers used (`bpf_probe_read_kernel`, `bpf_get_stack`, ...) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
