//! Turning the BPF maps into owned [`crate::model`] values at the end of a capture.

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::maps::{HashMap, MapData, PerCpuArray};
use tracer_common::{
    InFlight, OffCpuKey, OffCpuValue, PyStack, SITE_ID_TAG, STACK_ID_MISSED, STACK_ID_NONE,
    StackTrace, ThreadState, counter, syscalls,
};

use super::CaptureError;
use crate::model::{
    Capture, Counters, InFlightWait, OffCpuSample, PollReturns, RawPyFrame, RawStack,
    RefusedPiLock, SyscallCall, ThreadState as State, UserRegs, WaitKind, Waker,
};

/// The maps drained at the end.
pub(super) struct Maps {
    pub totals: HashMap<MapData, OffCpuKey, OffCpuValue>,
    pub stacks: HashMap<MapData, u64, StackTrace>,
    pub threads: HashMap<MapData, u32, ThreadState>,
    pub counters: PerCpuArray<MapData, u64>,
    pub py_stacks: HashMap<MapData, u64, PyStack>,
}

/// Reads everything; waits still in progress are charged up to `now_ns` (CLOCK_MONOTONIC).
/// User stack ids that name sites take their frames from `site_stacks`.
pub(super) fn read(
    maps: &Maps,
    now_ns: u64,
    duration: Duration,
    site_stacks: &StdHashMap<u64, RawStack>,
) -> Result<Capture, CaptureError> {
    let mut stacks = StackCache {
        map: &maps.stacks,
        resolved: StdHashMap::new(),
        sites: site_stacks,
        sites_missing: 0,
    };
    let python = |id: u64| python_stack(&maps.py_stacks, id);
    let mut samples = Vec::new();
    for entry in maps.totals.iter() {
        let (key, value) = entry.map_err(|source| CaptureError::Map {
            name: "OFFCPU_TOTALS",
            source,
        })?;
        let mut sample = completed_sample(&key, &value, &mut stacks);
        sample.python_stack = python(key.python_stack_id);
        samples.push(sample);
    }
    for entry in maps.threads.iter() {
        let Ok((tid, thread)) = entry else { continue };
        if thread.wait.start_ns != 0 {
            let mut sample = in_progress_sample(tid, &thread.wait, now_ns, &mut stacks);
            sample.python_stack = python(thread.wait.python_stack_id);
            samples.push(sample);
        }
    }
    let mut counters = read_counters(&maps.counters);
    counters.sites_missing = stacks.sites_missing;
    Ok(Capture {
        samples,
        counters,
        duration,
        process_names: Default::default(),
    })
}

struct StackCache<'a> {
    map: &'a HashMap<MapData, u64, StackTrace>,
    resolved: StdHashMap<u64, RawStack>,
    /// Frames of the sites received (`--unwind dwarf|auto`).
    sites: &'a StdHashMap<u64, RawStack>,
    /// Keys naming a site that never arrived (lost user stacks).
    sites_missing: u64,
}

/// No sites: stacks read while tracing (`watch`) are frame-pointer walks only.
static NO_SITES: std::sync::LazyLock<StdHashMap<u64, RawStack>> =
    std::sync::LazyLock::new(StdHashMap::new);

/// The frames of stack `id` in `STACKS` (`RawStack::Missed` when absent).
pub(super) fn stored_stack(map: &HashMap<MapData, u64, StackTrace>, id: u64) -> RawStack {
    match id {
        STACK_ID_NONE => RawStack::None,
        STACK_ID_MISSED => RawStack::Missed,
        _ => match map.get(&id, 0) {
            Ok(trace) => frames(&trace),
            Err(_) => RawStack::Missed,
        },
    }
}

impl StackCache<'_> {
    /// A blocked thread's user stack: a site (tagged id) or a stored frame-pointer walk.
    fn user(&mut self, id: u64) -> RawStack {
        if id & SITE_ID_TAG == 0 || id == STACK_ID_MISSED {
            return self.get(id);
        }
        match self.sites.get(&id) {
            Some(stack) => stack.clone(),
            None => {
                self.sites_missing += 1;
                RawStack::Missed
            }
        }
    }

    /// A stored stack (`STACKS`).
    fn get(&mut self, id: u64) -> RawStack {
        let map = self.map;
        self.resolved
            .entry(id)
            .or_insert_with(|| stored_stack(map, id))
            .clone()
    }
}

/// The frames of a stored stack, innermost first.
pub(crate) fn frames(trace: &StackTrace) -> RawStack {
    let len = (trace.len as usize).min(trace.ips.len());
    let ips: Vec<u64> = trace.ips[..len]
        .iter()
        .copied()
        .filter(|&ip| ip != 0)
        .collect();
    if ips.is_empty() {
        RawStack::Missed
    } else {
        RawStack::Frames(ips)
    }
}

/// The frames of stored Python stack `id`, innermost first; empty for none or a lost one.
fn python_stack(map: &HashMap<MapData, u64, PyStack>, id: u64) -> Vec<RawPyFrame> {
    if id < tracer_common::STACK_ID_FIRST_REAL {
        return Vec::new();
    }
    map.get(&id, 0)
        .map(|stack| python_frames(&stack))
        .unwrap_or_default()
}

/// The frames of a stored Python stack, innermost first; the low 3 bits of a code address are
/// the frame's marker byte.
pub(crate) fn python_frames(stack: &PyStack) -> Vec<RawPyFrame> {
    let len = (stack.len as usize).min(stack.frames.len());
    stack.frames[..len]
        .iter()
        .map(|f| RawPyFrame {
            code: f.code & !7,
            instr: f.instr,
            marker: (f.code & 7) as u8,
        })
        .collect()
}

/// A NUL-padded `comm`.
pub(crate) fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The tracked syscall a wait was in (`detail` as given), or `None` outside tracked syscalls.
fn call(kind: u32, nr: u32, resource: u64, detail: u64, timeout: u64) -> Option<SyscallCall> {
    let tracked = kind != syscalls::kind::NONE && nr != u32::MAX;
    tracked.then_some(SyscallCall {
        nr,
        kind: WaitKind::from_raw(kind),
        resource,
        detail,
        timeout,
    })
}

/// The waker of a wait, if one was recorded (its comm is set when it is).
fn waker(
    waker_comm: &[u8],
    pid: u32,
    tid: u32,
    (kernel_stack_id, user_stack_id): (u64, u64),
    stacks: &mut StackCache,
) -> Option<Waker> {
    let comm = comm(waker_comm);
    (!comm.is_empty()).then(|| Waker {
        pid,
        tid,
        comm,
        kernel_stack: stacks.get(kernel_stack_id),
        user_stack: stacks.user(user_stack_id),
    })
}

fn completed_sample(key: &OffCpuKey, value: &OffCpuValue, stacks: &mut StackCache) -> OffCpuSample {
    let waker = waker(
        &value.waker_comm,
        key.waker_tgid,
        key.waker_tid,
        (key.waker_kernel_stack_id, key.waker_user_stack_id),
        stacks,
    );
    let futex_op = if key.kind == syscalls::kind::FUTEX {
        u64::from(key.futex_op)
    } else {
        0
    };
    OffCpuSample {
        pid: key.tgid,
        tid: key.tid,
        comm: comm(&value.comm),
        kernel_stack: stacks.get(key.kernel_stack_id),
        user_stack: stacks.user(key.user_stack_id),
        call: call(key.kind, key.nr, key.resource, futex_op, 0),
        state: Some(State::from_class(key.state)),
        waker,
        total_ns: value.total_ns,
        count: value.count,
        max_ns: value.max_ns,
        still_blocked: false,
        python_stack: Vec::new(),
    }
}

fn in_progress_sample(
    tid: u32,
    w: &InFlight,
    now_ns: u64,
    stacks: &mut StackCache,
) -> OffCpuSample {
    let elapsed = now_ns.saturating_sub(w.start_ns);
    let waker = waker(
        &w.waker.comm,
        w.waker.tgid,
        w.waker.tid,
        (w.waker.kernel_stack_id, w.waker.user_stack_id),
        stacks,
    );
    let futex_op = if w.syscall.kind == syscalls::kind::FUTEX {
        w.syscall.detail & syscalls::FUTEX_CMD_MASK
    } else {
        0
    };
    OffCpuSample {
        pid: w.tgid,
        tid,
        comm: comm(&w.comm),
        kernel_stack: stacks.get(w.kernel_stack_id),
        user_stack: stacks.user(w.user_stack_id),
        call: call(
            w.syscall.kind,
            w.syscall.nr,
            w.syscall.resource,
            futex_op,
            0,
        ),
        state: Some(State::from_class(w.state)),
        waker,
        total_ns: elapsed,
        count: 1,
        max_ns: elapsed,
        still_blocked: true,
        python_stack: Vec::new(),
    }
}

/// How soon after a refused PI lock the thread's wait must begin for the refusal to explain
/// it (glibc parks the thread within microseconds).
const REFUSED_LOCK_WINDOW_NS: u64 = 50_000_000;

/// Waits in progress that began at or before `started_before_ns`, with their stacks; and the
/// tids of every thread with a wait in progress, however recent.
pub(super) fn read_in_flight(
    maps: &Maps,
    started_before_ns: u64,
) -> Result<(Vec<InFlightWait>, Vec<u32>), CaptureError> {
    let mut stacks = StackCache {
        map: &maps.stacks,
        resolved: StdHashMap::new(),
        sites: &NO_SITES,
        sites_missing: 0,
    };
    let mut waits = Vec::new();
    let mut waiting_tids = Vec::new();
    for entry in maps.threads.iter() {
        // An entry can vanish (thread exit) between the key walk and the lookup.
        let Ok((tid, thread)) = entry else { continue };
        let w = &thread.wait;
        if w.start_ns != 0 {
            waiting_tids.push(tid);
        }
        if w.start_ns == 0 || w.start_ns > started_before_ns {
            continue;
        }
        let s = &w.syscall;
        let regs = w.user_regs;
        let failed = thread.failed_lock;
        waits.push(InFlightWait {
            pid: w.tgid,
            tid,
            comm: comm(&w.comm),
            start_ns: w.start_ns,
            state: State::from_class(w.state),
            call: call(s.kind, s.nr, s.resource, s.detail, s.timeout),
            user_regs: (regs.ip != 0).then_some(UserRegs {
                ip: regs.ip,
                sp: regs.sp,
                bp: Some(regs.bp),
            }),
            kernel_stack: stacks.get(w.kernel_stack_id),
            user_stack: stacks.get(w.user_stack_id),
            // glibc parks the thread right after the refusal; an older refusal belongs to an
            // earlier wait and must not lend this one an owner.
            refused_pi_lock: (failed.uaddr != 0
                && failed.at_ns <= w.start_ns
                && w.start_ns - failed.at_ns <= REFUSED_LOCK_WINDOW_NS)
                .then_some(RefusedPiLock {
                    uaddr: failed.uaddr,
                    word: failed.word,
                }),
            poll_returns: (thread.poll.count > 0).then_some(PollReturns {
                last_ns: thread.poll.last_exit_ns,
                count: thread.poll.count,
            }),
        });
    }
    Ok((waits, waiting_tids))
}

/// The counters now.
pub(super) fn counters(maps: &Maps) -> Counters {
    read_counters(&maps.counters)
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> Counters {
    let get = |index: u32| -> u64 {
        map.get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    };
    Counters {
        waits_started: get(counter::WAITS_STARTED),
        waits_charged: get(counter::WAITS_CHARGED),
        waits_filtered_duration: get(counter::WAITS_FILTERED_DURATION),
        drop_threads_full: get(counter::DROP_THREADS_FULL),
        drop_totals_full: get(counter::DROP_TOTALS_FULL),
        drop_stacks_full: get(counter::DROP_STACKS_FULL),
        kernel_stack_errors: get(counter::KERNEL_STACK_ERROR),
        user_stack_errors: get(counter::USER_STACK_ERROR),
        stack_memo_hits: get(counter::STACK_MEMO_HITS),
        wakers_recorded: get(counter::WAKERS_RECORDED),
        drop_new_process_notice: get(counter::DROP_NEW_PROCESS_NOTICE),
        drop_unmatched_wait: get(counter::DROP_UNMATCHED_WAIT),
        python_stacks: get(counter::PYTHON_STACKS),
        python_stack_errors: get(counter::PYTHON_STACK_ERROR),
        sites_shipped: get(counter::SITES_SHIPPED),
        stack_copy_errors: get(counter::STACK_COPY_ERROR),
        drop_site_ring_full: get(counter::DROP_SITE_RING_FULL),
        drop_sites_full: get(counter::DROP_SITES_FULL),
        python_threads_found: get(counter::PYTHON_THREADS_FOUND),
        python_thread_states_read: get(counter::PYTHON_THREAD_STATES_READ),
        python_thread_not_found: get(counter::PYTHON_THREAD_NOT_FOUND),
        python_thread_search_errors: get(counter::PYTHON_THREAD_SEARCH_ERROR),
        // Counted in user space, after symbolization (`stacks::validate`).
        ..Counters::default()
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::MAX_STACK_DEPTH;

    use super::*;

    /// Check that a stored stack keeps only its `len` frames, innermost first.
    #[test]
    fn frames_respects_len() {
        let mut ips = [0u64; MAX_STACK_DEPTH];
        ips[..3].copy_from_slice(&[3, 2, 1]);
        ips[3] = 99; // beyond len: stale scratch contents
        let trace = StackTrace {
            len: 3,
            _pad: 0,
            ips,
        };
        assert_eq!(frames(&trace), RawStack::Frames(vec![3, 2, 1]));
        let empty = StackTrace {
            len: 0,
            _pad: 0,
            ips,
        };
        assert_eq!(frames(&empty), RawStack::Missed);
    }

    /// Check that a stored Python stack keeps its `len` frames and splits the marker bits off.
    #[test]
    fn python_frames_split_marker_bits() {
        let mut stack = PyStack {
            tgid: 7,
            len: 2,
            ..PyStack::default()
        };
        stack.frames[0] = tracer_common::PyFrameRef {
            code: 0x1000,
            instr: 0x1010,
        };
        stack.frames[1] = tracer_common::PyFrameRef {
            code: 0x2003,
            instr: 0x2020,
        };
        stack.frames[2].code = 0x3000; // beyond len
        assert_eq!(
            python_frames(&stack),
            [
                RawPyFrame {
                    code: 0x1000,
                    instr: 0x1010,
                    marker: 0
                },
                RawPyFrame {
                    code: 0x2000,
                    instr: 0x2020,
                    marker: 3
                }
            ]
        );
    }

    /// Check that comm stops at the first NUL.
    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm(b"sw-sleep\0\0\0garbage"), "sw-sleep");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }

    /// Check that a wait outside tracked syscalls carries no syscall, resource or op.
    #[test]
    fn untracked_wait_is_empty() {
        assert_eq!(call(syscalls::kind::NONE, 0, 42, 0, 0), None);
        assert_eq!(call(syscalls::kind::FUTEX, u32::MAX, 42, 0, 0), None);
        let c = call(syscalls::kind::FUTEX, 202, 0x1000, 0, 0).unwrap();
        assert_eq!(c.nr, 202);
        assert_eq!(c.kind, WaitKind::Futex);
        assert_eq!(c.resource, 0x1000);
        assert_eq!(c.futex_cmd(), Some(0));
    }
}
