//! The load-time configuration: one `CONFIG` global written by the loader before load.
//!
//! Reads are volatile so the compiler cannot fold the all-zero initial value into the code.

use tracer_common::{Config, RegsOffsets};

/// Set by the loader with `EbpfLoader::override_global("CONFIG", ..)`.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    min_block_ns: 0,
    max_block_ns: 0,
    cgroup_id: 0,
    state_mask: 0,
    flags: 0,
    task_pid_off: 0,
    task_flags_off: 0,
    task_tgid_off: 0,
    stack_copy_bytes: 0,
    regs: RegsOffsets {
        args: [0; 6],
        orig_ax: 0,
        ip: 0,
        sp: 0,
        bp: 0,
        ax: 0,
        _pad: 0,
    },
};

macro_rules! field {
    ($($f:tt)+) => {
        // SAFETY: reading a plain integer field of a global.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(CONFIG.$($f)+)) }
    };
}

#[inline(always)]
pub(crate) fn flags() -> u32 {
    field!(flags)
}

#[inline(always)]
pub(crate) fn has(flag: u32) -> bool {
    flags() & flag != 0
}

#[inline(always)]
pub(crate) fn min_block_ns() -> u64 {
    field!(min_block_ns)
}

#[inline(always)]
pub(crate) fn max_block_ns() -> u64 {
    field!(max_block_ns)
}

#[inline(always)]
pub(crate) fn cgroup_id() -> u64 {
    field!(cgroup_id)
}

#[inline(always)]
pub(crate) fn state_mask() -> u32 {
    field!(state_mask)
}

#[inline(always)]
pub(crate) fn stack_copy_bytes() -> u32 {
    field!(stack_copy_bytes)
}

#[inline(always)]
pub(crate) fn task_pid_off() -> u32 {
    field!(task_pid_off)
}

#[inline(always)]
pub(crate) fn task_tgid_off() -> u32 {
    field!(task_tgid_off)
}

#[inline(always)]
pub(crate) fn task_flags_off() -> u32 {
    field!(task_flags_off)
}

#[inline(always)]
pub(crate) fn regs_arg_off(i: usize) -> u32 {
    match i {
        0 => field!(regs.args[0]),
        1 => field!(regs.args[1]),
        2 => field!(regs.args[2]),
        3 => field!(regs.args[3]),
        4 => field!(regs.args[4]),
        _ => field!(regs.args[5]),
    }
}

#[inline(always)]
pub(crate) fn regs_orig_ax_off() -> u32 {
    field!(regs.orig_ax)
}

#[inline(always)]
pub(crate) fn regs_ip_off() -> u32 {
    field!(regs.ip)
}

#[inline(always)]
pub(crate) fn regs_sp_off() -> u32 {
    field!(regs.sp)
}

#[inline(always)]
pub(crate) fn regs_bp_off() -> u32 {
    field!(regs.bp)
}

#[inline(always)]
pub(crate) fn regs_ax_off() -> u32 {
    field!(regs.ax)
}
