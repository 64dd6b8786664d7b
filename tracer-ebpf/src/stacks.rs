//! Stack capture into a content-addressed store, with a per-thread memo.
//!
//! bcc's `BPF_MAP_TYPE_STACK_TRACE` drops a stack whenever two stacks hash to the same bucket
//! (bcc#1692, #3389), so hot paths vanish. Here a stack's id is a 64-bit hash of its frames and
//! the frames are stored under that id: nothing collides short of a 64-bit hash collision
//! (~n²/2⁶⁵), and a full store is counted. Walking and hashing a stack is most of the cost of a
//! switch-out, so a thread that blocks again at the same user SP/PC/FP, in the same syscall on
//! the same resource, reuses its previous stacks (`flags::STACK_MEMO`).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_get_stack, bpf_probe_read_user},
};
use tracer_common::{
    MAX_STACK_DEPTH, SITE_ID_TAG, STACK_ID_FIRST_REAL, STACK_ID_MISSED, STACK_ID_NONE, StackMemo,
    TextRanges, ThreadState, UserRegs, counter, flags, state, syscalls,
};

use crate::{
    config,
    maps::{STACK_SCRATCH, STACKS, count},
    regs::Regs,
};

const EEXIST: i64 = 17;

/// splitmix64's finalizer: a cheap, well-mixing 64-bit permutation (also for Python stacks,
/// `python.rs`).
#[inline(always)]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Walks the running thread's kernel or user stack, stores it, and returns its id
/// (`STACK_ID_MISSED` on failure, counted).
#[inline(always)]
pub(crate) fn record<C: EbpfContext>(ctx: &C, user: bool) -> u64 {
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else {
        return STACK_ID_MISSED;
    };
    let stack_flags = if user { BPF_F_USER_STACK as u64 } else { 0 };
    // SAFETY: `scratch` is a valid per-CPU map value of the declared size.
    unsafe {
        let ips = (*scratch).ips.as_mut_ptr() as *mut c_void;
        let bytes = bpf_get_stack(ctx.as_ptr(), ips, (MAX_STACK_DEPTH * 8) as u32, stack_flags);
        if bytes <= 0 {
            count(if user {
                counter::USER_STACK_ERROR
            } else {
                counter::KERNEL_STACK_ERROR
            });
            return STACK_ID_MISSED;
        }
        let len = (bytes as usize / 8).min(MAX_STACK_DEPTH);
        (*scratch).len = len as u32;
        let mut hash = mix(0x9e37_79b9_7f4a_7c15 ^ len as u64 ^ stack_flags);
        for i in 0..MAX_STACK_DEPTH {
            if i >= len {
                break;
            }
            hash = mix(hash ^ (*scratch).ips[i]);
        }
        // The top bit tags site ids (`sites.rs`); stored stacks never carry it.
        hash &= !SITE_ID_TAG;
        if hash < STACK_ID_FIRST_REAL {
            hash += STACK_ID_FIRST_REAL;
        }
        match STACKS.insert(hash, &*scratch, BPF_NOEXIST.into()) {
            Ok(()) => hash,
            Err(e) if -(e as i64) == EEXIST => hash,
            Err(_) => {
                count(counter::DROP_STACKS_FULL);
                STACK_ID_MISSED
            }
        }
    }
}

/// The return address the frame-pointer chain starts with, `*(bp + 8)` (0 if unreadable).
#[inline(always)]
fn first_return(bp: u64) -> u64 {
    // SAFETY: a checked read of the current thread's user memory.
    unsafe { bpf_probe_read_user((bp + 8) as *const u64) }.unwrap_or(0)
}

/// Kernel and user stack ids for the wait the running thread is entering.
#[inline(always)]
pub(crate) fn for_wait<C: EbpfContext>(
    ctx: &C,
    regs: &Regs,
    thread: &mut ThreadState,
    class: u32,
    kthread: bool,
) -> (u64, u64) {
    let flags = config::flags();
    let want_kernel = flags & flags::KERNEL_STACKS != 0;
    let want_user = flags & flags::USER_STACKS != 0 && !kthread;
    // `--unwind dwarf|auto`: the user stack is a copied site (`sites.rs`).
    let copies = want_user && flags & flags::STACK_COPIES != 0;
    // The process's code ranges, looked up on a memo miss only.
    let ranges = || {
        if copies {
            crate::sites::text_ranges((bpf_get_current_pid_tgid() >> 32) as u32)
        } else {
            None
        }
    };
    let walk = |ctx: &C, ranges: Option<&TextRanges>| {
        let k = if want_kernel {
            record(ctx, false)
        } else {
            STACK_ID_NONE
        };
        let u = if copies {
            crate::sites::record(ctx, regs.user(), ranges)
        } else if want_user {
            record(ctx, true)
        } else {
            STACK_ID_NONE
        };
        (k, u)
    };
    let memo_allowed = flags & flags::STACK_MEMO != 0
        && thread.syscall.kind != syscalls::kind::NONE
        && class != state::RUNNABLE
        && !kthread;
    if !memo_allowed {
        return walk(ctx, ranges());
    }
    let UserRegs { ip, sp, bp } = regs.user();
    let ret = if copies { 0 } else { first_return(bp) };
    // Without frame pointers `*(bp + 8)` says nothing; the return addresses above sp do, at
    // the positions the last miss found them (`sites::memo_window`).
    let read = if copies {
        crate::sites::memo_window(sp)
    } else {
        0
    };
    let memo = &mut thread.memo;
    if memo.user_ip == ip
        && memo.user_sp == sp
        && memo.user_bp == bp
        && memo.nr == thread.syscall.nr
        && memo.resource == thread.syscall.resource
        && memo.state == class
        && memo.kernel_stack_id != STACK_ID_MISSED
        && memo.user_stack_id != STACK_ID_MISSED
        && ip != 0
        && memo.user_ret
            == if copies {
                crate::sites::memo_hash(memo.user_ret_positions & read)
            } else {
                ret
            }
    {
        count(counter::STACK_MEMO_HITS);
        return (memo.kernel_stack_id, memo.user_stack_id);
    }
    let ranges = ranges();
    let (positions, ret) = if copies {
        let positions = crate::sites::memo_code_positions(read, ranges);
        (positions, crate::sites::memo_hash(positions))
    } else {
        (0, ret)
    };
    let (k, u) = walk(ctx, ranges);
    *memo = StackMemo {
        user_ip: ip,
        user_sp: sp,
        user_bp: bp,
        user_ret: ret,
        user_ret_positions: positions,
        resource: thread.syscall.resource,
        nr: thread.syscall.nr,
        state: class,
        kernel_stack_id: k,
        user_stack_id: u,
    };
    (k, u)
}
