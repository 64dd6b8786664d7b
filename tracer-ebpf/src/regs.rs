//! The running thread's saved user registers (`struct pt_regs` at the top of its kernel
//! stack), read with one helper call per event into a per-CPU buffer: the syscall context,
//! the stack memo and stack copies each need some of them, and a helper call per register
//! was a fifth of a switch-out's cost.

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel_buf, bpf_task_pt_regs};
use tracer_common::UserRegs;

use crate::{config, maps::REGS_SCRATCH};

/// Words of the buffer (a power of two, so a masked index stays inside it).
pub(crate) const REGS_WORDS: usize = 32;
/// Bytes of x86_64's `struct pt_regs` (21 registers); every offset in `Config::regs` is below.
const PT_REGS_BYTES: usize = 168;

/// All zeros: what a thread whose registers could not be read has.
static ZERO_REGS: [u64; REGS_WORDS] = [0; REGS_WORDS];

/// A snapshot of the running thread's user registers.
#[derive(Clone, Copy)]
pub(crate) struct Regs {
    words: &'static [u64; REGS_WORDS],
}

impl Regs {
    /// Reads the running thread's saved user registers (all zeros when they cannot be read).
    #[inline(always)]
    pub(crate) fn current() -> Self {
        let Some(buffer) = REGS_SCRATCH.get_ptr_mut(0) else {
            return Self { words: &ZERO_REGS };
        };
        // SAFETY: a per-CPU map value of the declared type, valid for the program's run (no
        // other program runs on this CPU meanwhile: scheduler and wakeup tracepoints run with
        // interrupts off); `bpf_task_pt_regs(current)` points at the thread's saved registers
        // and the read is checked by the helper.
        unsafe {
            let words = &mut *buffer;
            let bytes =
                core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), PT_REGS_BYTES);
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
            if bpf_probe_read_kernel_buf(regs, bytes).is_err() {
                return Self { words: &ZERO_REGS };
            }
            Self { words: &*buffer }
        }
    }

    /// All zeros (a kernel thread's, or where none are needed).
    #[inline(always)]
    pub(crate) fn zero() -> Self {
        Self { words: &ZERO_REGS }
    }

    /// The register at byte offset `off` of `struct pt_regs`.
    #[inline(always)]
    fn at(&self, off: u32) -> u64 {
        self.words[(off as usize / 8) & (REGS_WORDS - 1)]
    }

    /// The user instruction, stack and frame pointers.
    #[inline(always)]
    pub(crate) fn user(&self) -> UserRegs {
        UserRegs {
            ip: self.at(config::regs_ip_off()),
            sp: self.at(config::regs_sp_off()),
            bp: self.at(config::regs_bp_off()),
        }
    }

    /// `orig_ax`: the syscall number inside a syscall.
    #[inline(always)]
    pub(crate) fn orig_ax(&self) -> u64 {
        self.at(config::regs_orig_ax_off())
    }

    /// `ax`: `-ENOSYS` while a syscall runs.
    #[inline(always)]
    pub(crate) fn ax(&self) -> u64 {
        self.at(config::regs_ax_off())
    }

    /// Syscall argument `i` (0-based, x86_64 order).
    #[inline(always)]
    pub(crate) fn arg(&self, i: usize) -> u64 {
        self.at(config::regs_arg_off(i))
    }
}
