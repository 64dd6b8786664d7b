//! Python frames at switch-out (`profile --python`).
//!
//! The native stack of a CPython thread shows only `_PyEval_EvalFrameDefault`; which Python
//! functions it runs lives in the interpreter's frame chain. For each thread the loader lists
//! in `PY_THREADS` (its `PyThreadState` address and its version's frame layout, learned from
//! the interpreter's memory in user space), or that `pythreads.rs` finds, the chain is
//! followed here while the thread is `current`, up to `PY_MAX_DEPTH` frames, and stored
//! content-addressed like native stacks.
//! Only code object addresses and instruction pointers are recorded: names and lines are read
//! in user space, once per code object.
//!
//! The chain is walked at every switch-out, never memoized: two Python stacks can share every
//! native register (3.11+ runs Python-to-Python calls inside one C eval frame), so the native
//! memo cannot tell them apart, and a frame's address is reused by the next call at that depth.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
};
use tracer_common::{
    PY_MAX_DEPTH, PyFrameRef, STACK_ID_FIRST_REAL, STACK_ID_MISSED, STACK_ID_NONE, counter,
};

use crate::{
    maps::{PY_FRAME_HEADER, PY_SCRATCH, PY_STACKS, count},
    pythreads,
    stacks::mix,
};

const EEXIST: i64 = 17;
/// Low bits of a stored code address that carry the frame's marker byte.
const MARKER_BITS: u64 = 7;

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: a checked read of the current thread's user memory.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The Python stack of thread `tid` of process `tgid` (the running thread): its id in
/// `PY_STACKS`, `STACK_ID_NONE` for a thread that is not a Python thread (listed, or found by
/// [`pythreads::thread`]) or runs no Python code,
/// `STACK_ID_MISSED` (counted) when it could not be read or stored.
#[inline(always)]
pub(crate) fn record(tid: u32, tgid: u32) -> u64 {
    let Some(thread) = pythreads::thread(tid, tgid) else {
        return STACK_ID_NONE;
    };
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
    let Some(header) = PY_FRAME_HEADER.get_ptr_mut(0) else {
        return STACK_ID_MISSED;
    };
    // Bytes read per frame, as the version needs (72 from 3.11, up to 128 for the frame
    // objects before): brought without a branch into 8..=128, a bound the verifier sees.
    let header_bytes = ((((thread.header_bytes / 8).wrapping_sub(1)) & 15) * 8 + 8) as usize;
    // Word indexes of the fields in a frame's header (user space checked them: 8-aligned
    // pointers and a marker byte, all within the header).
    let code_at = (thread.code_offset / 8) as usize;
    let instr_at = (thread.instr_offset / 8) as usize;
    let previous_at = (thread.previous_offset / 8) as usize;
    let marker_at = (thread.marker_offset / 8) as usize;
    let marker_shift = (thread.marker_offset % 8) * 8;
    let mut hash = mix(0x7079_7468_6f6e_u64 ^ thread.tgid as u64);
    let mut len: usize = 0;
    // SAFETY: `scratch` and `header` are valid per-CPU map values; every index is checked
    // against their sizes. Each frame's header is read with one helper call, and stored as
    // read, its marker byte in the code address's low bits (code objects are 16-byte
    // aligned): which frames end a run is decided in user space, so the loop has no
    // data-dependent branch that the verifier would have to explore.
    unsafe {
        (*scratch).tgid = thread.tgid;
        for i in 0..PY_MAX_DEPTH {
            if frame == 0 {
                break;
            }
            let words = &mut (*header).words;
            if bpf_probe_read_user_buf(
                frame as *const u8,
                core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), header_bytes),
            )
            .is_err()
            {
                break;
            }
            // Masked so the verifier sees every read inside the buffer (16 words, of which
            // the first header_bytes / 8 were read).
            let word = |at: usize| words[at & 15];
            let marker = (word(marker_at) >> marker_shift) & MARKER_BITS;
            let code = (word(code_at) & !MARKER_BITS) | marker;
            let instr = word(instr_at);
            (*scratch).frames[i] = PyFrameRef { code, instr };
            hash = mix(mix(hash ^ code) ^ instr);
            len = i + 1;
            frame = word(previous_at);
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
