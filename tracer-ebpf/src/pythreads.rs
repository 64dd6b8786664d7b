//! Which Python thread is leaving the CPU (`profile --python`), including threads user space
//! has not listed yet.
//!
//! User space reads each CPython process's thread lists every 200 ms and writes `PY_THREADS`;
//! a thread started since (a server's thread per request) would have no Python frames for
//! its first waits, often all of them. So for a thread of a process in `PY_PROCESSES` that
//! `PY_THREADS` lacks, the process's thread states are searched here, interpreter by
//! interpreter from `_PyRuntime.interpreters.head` (newest first, as user space does, so a
//! thread inside a subinterpreter gets that interpreter's state), for the one whose
//! `native_thread_id` is the thread's tid. One read per thread state covers its `next` link
//! and its id. The interpreter's whole list is read and its *last* (oldest) match taken:
//! 3.11 creates a new thread's state in the thread that starts it, with the starter's tid,
//! and puts it first in the list; the new thread writes its own tid there when it runs, so
//! until then the starter has two matches, its own the older. The search runs in a `bpf_loop`
//! callback, checked once by the verifier whatever the bound. A thread found is stored in `PY_THREADS`, so its next switch-out is a
//! plain lookup, and user space's next listing rewrites the entry anyway. (So a thread found
//! before it enters a subinterpreter keeps its main interpreter's state, and frames, until
//! that listing, as a listed one does.)
//!
//! A thread with no thread state (a native helper thread, e.g. faulthandler's watchdog) must
//! not pay the search at every switch-out: misses are remembered in `PY_THREAD_MISSES` with
//! a time to look again that doubles with each miss, from 1 ms up to 1 s. The first miss is
//! not held at all: a new thread preempted before CPython bound its thread state
//! (`native_thread_id` is set by the new thread itself, first thing) is looked up again at its
//! next switch-out.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_loop,
    generated::bpf_probe_read_user as read_user_raw,
};
use tracer_common::{PY_TSTATE_SPAN_BYTES, PyProcess, PyThread, PyTstateSpan, counter};

use crate::maps::{COUNTERS, PY_PROCESSES, PY_THREAD_MISSES, PY_THREADS, PY_TSTATE_SPAN, count};

/// Most steps of one search: each visits an interpreter or a thread state.
const MAX_SEARCH_STEPS: u32 = 1024;
/// The wait before the second lookup of a thread that was not found (doubled per miss).
const MISS_RETRY_FIRST_NS: u64 = 1_000_000;
/// The longest wait between lookups of a thread that is not found.
const MISS_RETRY_MAX_NS: u64 = 1_000_000_000;
/// Words in the thread state buffer (a power of two: indexes are masked with it).
const SPAN_WORDS: usize = PY_TSTATE_SPAN_BYTES / 8;

/// A thread that was not found: when to look again.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ThreadMiss {
    /// `bpf_ktime_get_ns()` before which the thread is not looked up again.
    retry_at_ns: u64,
    /// The process it was looked up in (a tid reused by another process is looked up anew).
    tgid: u32,
    /// Misses in a row.
    misses: u32,
}

/// How a search ended.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Outcome {
    Running = 0,
    Found = 1,
    NotFound = 2,
    Failed = 3,
}

/// The state of one search, shared with the `bpf_loop` callback.
#[repr(C)]
struct Search {
    process: *const PyProcess,
    span: *mut PyTstateSpan,
    /// The tid looked for.
    tid: u64,
    /// The interpreter whose threads are being read; 0 before the first.
    interpreter: u64,
    /// The next thread state to read; 0 when the interpreter's list is done.
    tstate: u64,
    /// The last thread state of the interpreter's list with the tid; 0 for none yet.
    found: u64,
    /// Thread states read.
    states_read: u64,
    outcome: Outcome,
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: a checked read of the current thread's user memory.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// `bpf_loop` callback: one step of the search, an interpreter (its thread list's head) or a
/// thread state (its id, then its `next`). Returns 1 to stop.
///
/// # Safety
/// `ctx` points at a live [`Search`] whose pointers are valid map values.
unsafe extern "C" fn search_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: the caller passes its `Search`, whose pointers it checked.
    let search = unsafe { &mut *ctx.cast::<Search>() };
    // SAFETY: as above.
    let process = unsafe { &*search.process };
    if search.tstate == 0 {
        if search.found != 0 {
            search.outcome = Outcome::Found;
            return 1;
        }
        let link = if search.interpreter == 0 {
            process.interpreters_head
        } else {
            search.interpreter + u64::from(process.interpreter_next_offset)
        };
        let Some(interpreter) = read_u64(link) else {
            search.outcome = Outcome::Failed;
            return 1;
        };
        if interpreter == 0 {
            search.outcome = Outcome::NotFound;
            return 1;
        }
        search.interpreter = interpreter;
        match read_u64(interpreter + u64::from(process.threads_head_offset)) {
            Some(head) => search.tstate = head,
            None => {
                search.outcome = Outcome::Failed;
                return 1;
            }
        }
        return 0;
    }
    let bytes = process.span_bytes;
    if bytes == 0 || bytes as usize > PY_TSTATE_SPAN_BYTES {
        search.outcome = Outcome::Failed;
        return 1;
    }
    // The same, in a form the verifier follows (LLVM turns the check above into arithmetic
    // it loses track of): 1..=PY_TSTATE_SPAN_BYTES.
    let bytes = ((bytes - 1) & (PY_TSTATE_SPAN_BYTES as u32 - 1)) + 1;
    // SAFETY: `span` is a per-CPU map value of PY_TSTATE_SPAN_BYTES, and `bytes` is at most
    // that.
    let read = unsafe {
        read_user_raw(
            (*search.span).words.as_mut_ptr().cast::<c_void>(),
            bytes,
            (search.tstate + u64::from(process.span_offset)) as *const c_void,
        )
    };
    if read < 0 {
        search.outcome = Outcome::Failed;
        return 1;
    }
    search.states_read += 1;
    let word = |offset: u32| {
        let at = (offset.wrapping_sub(process.span_offset) / 8) as usize;
        // SAFETY: as above; the index is masked into the buffer.
        unsafe { (*search.span).words[at & (SPAN_WORDS - 1)] }
    };
    let next = word(process.thread_next_offset);
    let mut id = word(process.thread_id_offset);
    if process.pthread_tid_offset != u32::MAX && id != 0 {
        // SAFETY: a checked read of the current thread's user memory.
        id = match unsafe {
            bpf_probe_read_user((id + u64::from(process.pthread_tid_offset)) as *const u32)
        } {
            Ok(tid) => u64::from(tid),
            Err(_) => 0,
        };
    }
    if id == search.tid {
        search.found = search.tstate;
    }
    search.tstate = next;
    0
}

/// Where thread `tid` of process `tgid` (the running thread) keeps its Python frames: its
/// `PY_THREADS` entry, or one found now in its process's thread lists (and stored). `None`
/// for a thread of no CPython process being followed, or with no thread state (counted).
#[inline(always)]
pub(crate) fn thread(tid: u32, tgid: u32) -> Option<PyThread> {
    // SAFETY: a map value read by copy.
    if let Some(thread) = unsafe { PY_THREADS.get(&tid) }.copied()
        && thread.tgid == tgid
    {
        return Some(thread);
    }
    // SAFETY: a map value read in place; the loader only replaces whole values.
    let process = unsafe { PY_PROCESSES.get(&tgid) }?;
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a map value read by copy.
    let miss = unsafe { PY_THREAD_MISSES.get(&tid) }
        .copied()
        .filter(|m| m.tgid == tgid);
    if miss.is_some_and(|m| now < m.retry_at_ns) {
        return None;
    }
    let span = PY_TSTATE_SPAN.get_ptr_mut(0)?;
    let mut search = Search {
        process,
        span,
        tid: u64::from(tid),
        interpreter: 0,
        tstate: 0,
        found: 0,
        states_read: 0,
        outcome: Outcome::Running,
    };
    // SAFETY: `search_step` has the callback signature `bpf_loop` expects, and `search`
    // outlives the call.
    unsafe {
        bpf_loop(
            MAX_SEARCH_STEPS,
            search_step as *mut c_void,
            (&raw mut search).cast::<c_void>(),
            0,
        );
    }
    if let Some(read) = COUNTERS.get_ptr_mut(counter::PYTHON_THREAD_STATES_READ) {
        // SAFETY: per-CPU slot, and tracing programs do not migrate while running.
        unsafe { *read += search.states_read };
    }
    // A search cut short by the bound keeps what it found.
    if search.outcome == Outcome::Found || search.found != 0 {
        let thread = PyThread {
            tstate: search.found,
            tgid,
            ..process.frames
        };
        count(counter::PYTHON_THREADS_FOUND);
        if PY_THREADS.insert(&tid, &thread, 0).is_err() {
            count(counter::PYTHON_THREAD_SEARCH_ERROR);
        }
        if miss.is_some() {
            let _ = PY_THREAD_MISSES.remove(&tid);
        }
        return Some(thread);
    }
    count(if search.outcome == Outcome::NotFound {
        counter::PYTHON_THREAD_NOT_FOUND
    } else {
        counter::PYTHON_THREAD_SEARCH_ERROR
    });
    let misses = miss.map_or(0, |m| m.misses).saturating_add(1);
    let wait_ns = if misses < 2 {
        0
    } else {
        (MISS_RETRY_FIRST_NS << (misses - 2).min(10)).min(MISS_RETRY_MAX_NS)
    };
    let _ = PY_THREAD_MISSES.insert(
        &tid,
        &ThreadMiss {
            retry_at_ns: now + wait_ns,
            tgid,
            misses,
        },
        0,
    );
    None
}
