//! Every map the programs share with the loader, named for what it holds.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    OffCpuKey, OffCpuValue, PyFrameHeader, PyProcess, PyStack, PyThread, PyTstateSpan, SiteCopy,
    StackTrace, TextRanges, ThreadState, WakerMemo, capacity, counter,
};

use crate::pythreads::ThreadMiss;

/// Per-thread state (current syscall, current wait, stack memo), keyed by tid.
#[map]
pub(crate) static THREADS: HashMap<u32, ThreadState> =
    HashMap::with_max_entries(capacity::THREADS, 0);

/// In-kernel aggregate: off-CPU time per (thread, stacks, wait, state, waker).
#[map]
pub(crate) static OFFCPU_TOTALS: HashMap<OffCpuKey, OffCpuValue> =
    HashMap::with_max_entries(capacity::TOTALS, 0);

/// Content-addressed stack store: 64-bit hash of the frames -> frames. Unlike
/// `BPF_MAP_TYPE_STACK_TRACE` there are no bucket collisions that drop hot stacks.
#[map]
pub(crate) static STACKS: HashMap<u64, StackTrace> = HashMap::with_max_entries(capacity::STACKS, 0);

/// One stack-sized scratch buffer per CPU (too large for the 512-byte BPF stack).
#[map]
pub(crate) static STACK_SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(1, 0);

/// Python threads whose frames are walked at switch-out (`--python`): tid -> where its
/// thread state is and its version's frame layout. Written by the loader.
#[map]
pub(crate) static PY_THREADS: HashMap<u32, PyThread> =
    HashMap::with_max_entries(capacity::PY_THREADS, 0);

/// CPython processes whose thread lists BPF searches for threads `PY_THREADS` lacks
/// (`--python`): tgid -> where the lists are. Written by the loader.
#[map]
pub(crate) static PY_PROCESSES: HashMap<u32, PyProcess> =
    HashMap::with_max_entries(capacity::PY_PROCESSES, 0);

/// Threads of CPython processes whose last lookup found no thread state: tid -> when to look
/// again (`pythreads.rs`).
#[map]
pub(crate) static PY_THREAD_MISSES: LruHashMap<u32, ThreadMiss> =
    LruHashMap::with_max_entries(capacity::PY_THREAD_MISSES, 0);

/// The thread state being read by a lookup, one per CPU.
#[map]
pub(crate) static PY_TSTATE_SPAN: PerCpuArray<PyTstateSpan> = PerCpuArray::with_max_entries(1, 0);

/// Content-addressed Python stacks: hash of the frames -> frames.
#[map]
pub(crate) static PY_STACKS: HashMap<u64, PyStack> =
    HashMap::with_max_entries(capacity::PY_STACKS, 0);

/// The header of the Python frame being read, one per CPU.
#[map]
pub(crate) static PY_FRAME_HEADER: PerCpuArray<PyFrameHeader> = PerCpuArray::with_max_entries(1, 0);

/// One Python-stack-sized scratch buffer per CPU.
#[map]
pub(crate) static PY_SCRATCH: PerCpuArray<PyStack> = PerCpuArray::with_max_entries(1, 0);

/// One stack copy per CPU, built and shipped from here (`sites.rs`; 28 KiB, far beyond the
/// BPF stack).
#[map]
pub(crate) static SITE_SCRATCH: PerCpuArray<SiteCopy> = PerCpuArray::with_max_entries(1, 0);

/// Site ids already shipped on `SITES` (`sites.rs`).
#[map]
pub(crate) static KNOWN_SITES: HashMap<u64, u8> =
    HashMap::with_max_entries(capacity::KNOWN_SITES, 0);

/// The running thread's saved user registers, one snapshot per CPU (`regs.rs`).
#[map]
pub(crate) static REGS_SCRATCH: PerCpuArray<[u64; crate::regs::REGS_WORDS]> =
    PerCpuArray::with_max_entries(1, 0);

/// Each process's executable ranges, keyed by tgid, from user space (`sites.rs`).
#[map]
pub(crate) static TEXT_RANGES: LruHashMap<u32, TextRanges> =
    LruHashMap::with_max_entries(capacity::TEXT_RANGES, 0);

/// Each waking thread's last wakeup site, keyed by tid (`sites::waker_site`).
#[map]
pub(crate) static WAKER_MEMO: LruHashMap<u32, WakerMemo> =
    LruHashMap::with_max_entries(capacity::WAKER_MEMO, 0);

/// New sites: a `SiteHeader` followed by the copied stack bytes, for user space to unwind.
#[map]
pub(crate) static SITES: RingBuf = RingBuf::with_byte_size(capacity::SITE_RING_BYTES, 0);

/// Traced process ids (`-p`), when `flags::FILTER_TGIDS` is set.
#[map]
pub(crate) static FILTER_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(capacity::FILTER, 0);

/// Traced thread ids (`-t`), when `flags::FILTER_TIDS` is set.
#[map]
pub(crate) static FILTER_TIDS: HashMap<u32, u8> = HashMap::with_max_entries(capacity::FILTER, 0);

/// Processes already announced on `NEW_PROCESSES`.
#[map]
pub(crate) static SEEN_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(capacity::SEEN_TGIDS, 0);

/// Tgids seen for the first time, so the loader can cache their memory maps for
/// symbolization while they still live.
#[map]
pub(crate) static NEW_PROCESSES: RingBuf =
    RingBuf::with_byte_size(capacity::NEW_PROCESS_RING_BYTES, 0);

/// Event and loss counters, indexed by `tracer_common::counter`.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Adds one to a counter.
#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and tracing programs do not migrate while running.
        unsafe { *p += 1 };
    }
}

/// Announces `tgid` to the loader the first time it is seen.
#[inline(always)]
pub(crate) fn announce_process(tgid: u32) {
    if SEEN_TGIDS.get_ptr(tgid).is_some() {
        return;
    }
    if SEEN_TGIDS
        .insert(tgid, 1u8, aya_ebpf::bindings::BPF_NOEXIST.into())
        .is_ok()
        && NEW_PROCESSES.output::<u32>(tgid, 0).is_err()
    {
        count(counter::DROP_NEW_PROCESS_NOTICE);
    }
}

/// Announces `tgid` after an `execve`: its memory maps changed, so the loader must cache them
/// again even if the process was announced before.
#[inline(always)]
pub(crate) fn announce_exec(tgid: u32) {
    let _ = SEEN_TGIDS.insert(tgid, 1u8, 0);
    if NEW_PROCESSES.output::<u32>(tgid, 0).is_err() {
        count(counter::DROP_NEW_PROCESS_NOTICE);
    }
}

/// The tid of `task` (not `current`: `next`, a wakee) and its state, if the thread is tracked.
#[inline(always)]
pub(crate) fn task_thread(task: *const u8) -> Option<(u32, *mut ThreadState)> {
    // SAFETY: `task` is a task_struct the tracepoint handed us; the read is checked.
    let tid = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel(
            task.add(crate::config::task_pid_off() as usize) as *const i32
        )
    }
    .unwrap_or(0) as u32;
    if tid == 0 {
        return None;
    }
    THREADS.get_ptr_mut(tid).map(|thread| (tid, thread))
}

/// A zeroed per-thread state, inserted for threads seen for the first time.
static ZERO_THREAD: ThreadState = unsafe { core::mem::zeroed() };

/// The state of thread `tid`, created if absent; `None` (counted) when `THREADS` is full.
#[inline(always)]
pub(crate) fn thread_entry(tid: u32) -> Option<&'static mut ThreadState> {
    if let Some(p) = THREADS.get_ptr_mut(tid) {
        // SAFETY: map values live as long as the entry; only this thread's hooks write them.
        return Some(unsafe { &mut *p });
    }
    let _ = THREADS.insert(tid, &ZERO_THREAD, aya_ebpf::bindings::BPF_NOEXIST.into());
    match THREADS.get_ptr_mut(tid) {
        // SAFETY: as above.
        Some(p) => Some(unsafe { &mut *p }),
        None => {
            count(counter::DROP_THREADS_FULL);
            None
        }
    }
}
