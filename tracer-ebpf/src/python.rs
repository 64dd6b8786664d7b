//! Python frames at switch-out (`profile --python`).
//!
//! The native stack of a CPython thread shows only `_PyEval_EvalFrameDefault`; which Python
//! functions it runs lives in the interpreter's frame chain. For each thread the loader lists
//! in `PY_THREADS` (its `PyThreadState` address and its version's frame layout, learned from
//! the interpreter's memory in user space), the chain is followed here while the thread is
//! `current`, up to `PY_MAX_DEPTH` frames, and stored content-addressed like native stacks.
//! Only code object addresses and instruction pointers are recorded: names and lines are read
//! in user space, once per code object.
//!
//! The chain is walked at every switch-out, never memoized: two Python stacks can share every
//! native register (3.11+ runs Python-to-Python calls inside one C eval frame), so the native
//! memo cannot tell them apart, and a frame's address is reused by the next call at that depth.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_probe_read_user};
use tracer_common::{
    PY_MAX_DEPTH, PyFrameRef, STACK_ID_FIRST_REAL, STACK_ID_MISSED, STACK_ID_NONE, counter,
};

use crate::maps::{PY_SCRATCH, PY_STACKS, PY_THREADS, count};

const EEXIST: i64 = 17;
/// Low bits of a stored code address that carry the frame's marker byte.
const MARKER_BITS: u64 = 7;

/// splitmix64's finalizer (as in `stacks.rs`).
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: a checked read of the current thread's user memory.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8) }.ok()
}

/// The Python stack of thread `tid` of process `tgid` (the running thread): its id in
/// `PY_STACKS`, `STACK_ID_NONE` for a thread that is not a listed Python thread (or a reused
/// tid of another process, until user space forgets it) or runs no Python code,
/// `STACK_ID_MISSED` (counted) when it could not be read or stored.
#[inline(always)]
pub(crate) fn record(tid: u32, tgid: u32) -> u64 {
    // SAFETY: a map value read by copy.
    let Some(thread) = (unsafe { PY_THREADS.get(&tid) }).copied() else {
        return STACK_ID_NONE;
    };
    if thread.tgid != tgid {
        return STACK_ID_NONE;
    }
    let Some(scratch) = PY_SCRATCH.get_ptr_mut(0) else {
        return STACK_ID_MISSED;
    };
    let Some(mut frame) = read_u64(thread.tstate + thread.frame_ptr_offset as u64) else {
        count(counter::PYTHON_STACK_ERROR);
        return STACK_ID_MISSED;
    };
    if thread.cframe_frame_offset != u32::MAX && frame != 0 {
        frame = read_u64(frame + thread.cframe_frame_offset as u64).unwrap_or(0);
    }
    let mut hash = mix(0x7079_7468_6f6e_u64 ^ thread.tgid as u64);
    let mut len: usize = 0;
    // SAFETY: `scratch` is a valid per-CPU map value; every index is checked against its size.
    // Each frame is stored as read, its marker byte in the code address's low bits (code
    // objects are 16-byte aligned): which frames end a run is decided in user space, so the
    // loop has no data-dependent branch that the verifier would have to explore.
    unsafe {
        (*scratch).tgid = thread.tgid;
        for i in 0..PY_MAX_DEPTH {
            if frame == 0 {
                break;
            }
            let code = read_u64(frame + thread.code_offset as u64).unwrap_or(0);
            let instr = read_u64(frame + thread.instr_offset as u64).unwrap_or(0);
            let marker = read_u8(frame + thread.marker_offset as u64).unwrap_or(0);
            let previous = read_u64(frame + thread.previous_offset as u64).unwrap_or(0);
            let code = (code & !MARKER_BITS) | (marker as u64 & MARKER_BITS);
            (*scratch).frames[i] = PyFrameRef { code, instr };
            hash = mix(mix(hash ^ code) ^ instr);
            len = i + 1;
            frame = previous;
        }
        if len == 0 {
            return STACK_ID_NONE;
        }
        (*scratch).len = len as u32;
        hash = mix(hash ^ len as u64);
        if hash < STACK_ID_FIRST_REAL {
            hash += STACK_ID_FIRST_REAL;
        }
        count(counter::PYTHON_STACKS);
        match PY_STACKS.insert(&hash, &*scratch, BPF_NOEXIST.into()) {
            Ok(()) => hash,
            Err(e) if -(e as i64) == EEXIST => hash,
            Err(_) => {
                count(counter::PYTHON_STACK_ERROR);
                STACK_ID_MISSED
            }
        }
    }
}
