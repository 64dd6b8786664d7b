//! Turning raw waits (BPF in-flight state, `/proc` snapshot) into [`BlockedThread`]s: unwound
//! and symbolized stacks, the fd a thread waits on, the futex word and its trusted owner.
//!
//! What cannot change during one wait (stacks, fd description) is gathered once per wait and
//! cached; futex owners are read again every scan, since a lock can change hands while a
//! waiter sleeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tracer_common::syscalls::{self, kind};

use super::snapshot::{self, SnapshotWait};
use crate::{
    export::strip_tracer_frames,
    inspect::{FdDescription, FdScanner, FdType, ProcessMemory, threads},
    model::{InFlightWait, RawStack},
    stall::{
        model::{BlockedThread, FdInfo, FutexWait, Origin, ProcessView, SyscallCall},
        owner::{FUTEX_MEMORY_BYTES, FutexMemory, RefusedPiLock, infer_owner, waiting_code},
        timing::{is_poll, timing},
        tracker::WaitKey,
    },
    symbolize::Symbolizer,
    unwind::{Unwinder, UserRegs},
};

/// A thread counts as an event loop when it returned from a poll-style call at least this
/// many times since `watch` attached, the last one at most [`EVENT_LOOP_GAP`] before its
/// current wait began. One is enough: a loop idle in `epoll_wait` when `watch` attached
/// returns once, with the event whose handler then blocks.
const EVENT_LOOP_MIN_POLLS: u64 = 1;
/// See [`EVENT_LOOP_MIN_POLLS`].
const EVENT_LOOP_GAP: Duration = Duration::from_secs(1);
/// Deepest user stack unwound.
const MAX_USER_FRAMES: usize = 127;

/// The result of one scan.
pub struct Scanned {
    /// Threads blocked at least the threshold, gathered.
    pub threads: Vec<BlockedThread>,
    /// Their processes, with every thread.
    pub processes: BTreeMap<u32, ProcessView>,
    /// Every wait blocked at least the threshold (findings or not).
    pub keys: BTreeSet<WaitKey>,
}

/// Gathers blocked threads, keeping what it learnt across scans.
pub struct Gatherer {
    pids: Vec<u32>,
    threshold: Duration,
    symbolizer: Symbolizer,
    unwinder: Unwinder,
    snapshot: BTreeMap<u32, SnapshotWait>,
    gathered: BTreeMap<WaitKey, BlockedThread>,
    fds: FdScanner,
    /// Processes the symbolizer and unwinder hold state for.
    known_pids: BTreeSet<u32>,
    /// Names of processes seen, kept after they exit so that their stalls' resolution can
    /// still name them (pruned of exited processes past [`MAX_REMEMBERED_NAMES`]).
    names: BTreeMap<u32, String>,
}

/// See `Gatherer::names`.
const MAX_REMEMBERED_NAMES: usize = 4096;

impl Gatherer {
    /// A gatherer for `pids` (every process when empty).
    pub fn new(pids: Vec<u32>, threshold: Duration) -> Self {
        Self {
            pids,
            threshold,
            symbolizer: Symbolizer::new(),
            unwinder: Unwinder::new(),
            snapshot: BTreeMap::new(),
            gathered: BTreeMap::new(),
            fds: FdScanner::new(),
            known_pids: BTreeSet::new(),
            names: BTreeMap::new(),
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Reads every sleeping target thread from `/proc`.
    pub fn take_snapshot(&mut self, now_ns: u64) {
        self.snapshot = snapshot::take(&self.pids, now_ns);
    }

    /// Name of process `pid`.
    pub fn process_name(&self, pid: u32) -> String {
        self.names
            .get(&pid)
            .cloned()
            .or_else(|| self.symbolizer.process_name(pid))
            .or_else(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|s| s.trim_end().to_string())
            })
            .unwrap_or_else(|| format!("pid {pid}"))
    }

    /// One scan over `traced` (BPF waits already past the threshold) and the snapshot.
    /// `waiting_tids` are the threads with any BPF wait in progress: their snapshot waits, if
    /// any, are over (the BPF side saw them block again).
    pub fn scan(
        &mut self,
        traced: Vec<InFlightWait>,
        waiting_tids: &[u32],
        now_ns: u64,
    ) -> Scanned {
        let own = std::process::id();
        let threshold_ns = self.threshold.as_nanos() as u64;
        // Pipe holders, socket tables and process maps are read once per scan.
        self.fds.clear();
        self.unwinder.begin_round();
        self.forget_exited();
        let mut keys = BTreeSet::new();
        let mut threads = Vec::new();
        // A thread the BPF side saw block (even in the moment between attaching and the
        // snapshot) or that ran since is the BPF side's now.
        let traced_tids: BTreeSet<u32> = waiting_tids.iter().copied().collect();
        self.snapshot
            .retain(|tid, w| !traced_tids.contains(tid) && snapshot::still_waiting(w));
        // The kernel's word that a thread is asleep, checked every scan: should a switch-in
        // ever be missed (see `counter::DROP_UNMATCHED_WAIT`), a running thread would otherwise
        // look blocked for ever.
        let asleep = |w: &&InFlightWait| {
            threads::read_state(w.pid, w.tid).is_some_and(|s| matches!(s, 'S' | 'D'))
        };
        for wait in traced.iter().filter(|w| w.pid != own).filter(asleep) {
            let key = (wait.tid, wait.start_ns);
            keys.insert(key);
            if !self.gathered.contains_key(&key) {
                let thread = self.gather_traced(wait);
                self.gathered.insert(key, thread);
            }
        }
        let snapshot_keys: Vec<(u32, u64)> = self
            .snapshot
            .values()
            .filter(|w| now_ns.saturating_sub(w.since_ns) >= threshold_ns)
            .map(|w| (w.tid, w.since_ns))
            .collect();
        for key in snapshot_keys {
            keys.insert(key);
            if !self.gathered.contains_key(&key) {
                let thread = self.gather_snapshot(&self.snapshot[&key.0].clone());
                self.gathered.insert(key, thread);
            }
        }
        self.gathered.retain(|k, _| keys.contains(k));

        let pids: BTreeSet<u32> = self.gathered.values().map(|t| t.pid).collect();
        let processes: BTreeMap<u32, ProcessView> = pids
            .into_iter()
            .map(|pid| {
                let view = ProcessView {
                    pid,
                    tids: threads::list_tids(pid).unwrap_or_default(),
                };
                (pid, view)
            })
            .collect();
        let refused: BTreeMap<u32, (u64, u32)> = traced
            .iter()
            .filter_map(|w| {
                w.refused_pi_lock
                    .map(|(uaddr, word, _)| (w.tid, (uaddr, word)))
            })
            .collect();
        // One open /proc/PID/mem per process and scan.
        let mut memories: BTreeMap<u32, Option<ProcessMemory>> = BTreeMap::new();
        for thread in self.gathered.values_mut() {
            thread.blocked_for_ns = now_ns.saturating_sub(thread.since_ns);
            if let Some(process) = processes.get(&thread.pid) {
                let memory = memories
                    .entry(thread.pid)
                    .or_insert_with(|| ProcessMemory::open(thread.pid).ok());
                let refused = refused.get(&thread.tid).copied();
                refresh_futex(thread, memory.as_ref(), refused, &process.tids);
            }
            threads.push(thread.clone());
        }
        Scanned {
            threads,
            processes,
            keys,
        }
    }

    /// Drops the symbolizer's and unwinder's state of processes that exited, so a long
    /// host-wide watch does not grow with every process it ever saw.
    fn forget_exited(&mut self) {
        let exited: Vec<u32> = self
            .known_pids
            .iter()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in exited {
            self.symbolizer.forget_process(pid);
            self.unwinder.forget(pid);
            self.known_pids.remove(&pid);
        }
        if self.names.len() > MAX_REMEMBERED_NAMES {
            self.names
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    /// Remembers the name of a process whose waits are gathered.
    fn note_process(&mut self, pid: u32) {
        self.known_pids.insert(pid);
        if !self.names.contains_key(&pid) {
            let name = self.process_name(pid);
            self.names.insert(pid, name);
        }
    }

    fn gather_traced(&mut self, wait: &InFlightWait) -> BlockedThread {
        self.note_process(wait.pid);
        let call = wait.syscall_nr.map(|nr| SyscallCall {
            nr,
            kind: wait.kind,
            resource: wait.resource,
            detail: wait.detail,
            timeout: wait.timeout,
        });
        let kernel_stack = match &wait.kernel_stack {
            RawStack::Frames(addrs) => strip_tracer_frames(self.symbolizer.kernel(addrs)),
            _ => Vec::new(),
        };
        let unwound = wait.user_regs.and_then(|(ip, sp, bp)| {
            let regs = UserRegs {
                ip,
                sp,
                bp: Some(bp),
            };
            self.unwinder.unwind(wait.pid, regs, MAX_USER_FRAMES).ok()
        });
        let user_addrs = match (unwound, &wait.user_stack) {
            (Some(addrs), RawStack::Frames(fp)) if addrs.len() < 2 && fp.len() > addrs.len() => {
                fp.clone()
            }
            (Some(addrs), _) => addrs,
            (None, RawStack::Frames(fp)) => fp.clone(),
            (None, _) => Vec::new(),
        };
        let user_stack = self.symbolizer.user(wait.pid, &user_addrs);
        let event_loop = wait.last_poll_exit.is_some_and(|(last_ns, count)| {
            count >= EVENT_LOOP_MIN_POLLS
                && wait.start_ns.saturating_sub(last_ns) <= EVENT_LOOP_GAP.as_nanos() as u64
        }) && !is_poll(call.as_ref());
        let state = wait.state.map_or('?', |s| s.letter());
        let wchan = (state == 'D')
            .then(|| read_wchan(wait.pid, wait.tid))
            .flatten();
        BlockedThread {
            pid: wait.pid,
            tid: wait.tid,
            comm: wait.comm.clone(),
            state,
            since_ns: wait.start_ns,
            blocked_for_ns: 0,
            origin: Origin::Traced,
            timing: call
                .as_ref()
                .map_or(crate::stall::model::Timing::Unknown, timing),
            futex: None,
            fd: call.and_then(|c| fd_info(&mut self.fds, wait.pid, &c)),
            call,
            event_loop,
            wchan,
            kernel_stack,
            user_stack,
            user_sp: wait.user_regs.map(|(_, sp, _)| sp),
        }
    }

    fn gather_snapshot(&mut self, wait: &SnapshotWait) -> BlockedThread {
        self.note_process(wait.pid);
        let user_addrs = wait
            .pc_sp
            .and_then(|(ip, sp)| {
                let regs = UserRegs { ip, sp, bp: None };
                self.unwinder.unwind(wait.pid, regs, MAX_USER_FRAMES).ok()
            })
            .unwrap_or_default();
        let user_stack = self.symbolizer.user(wait.pid, &user_addrs);
        BlockedThread {
            pid: wait.pid,
            tid: wait.tid,
            comm: wait.comm.clone(),
            state: wait.state,
            since_ns: wait.since_ns,
            blocked_for_ns: 0,
            origin: Origin::Snapshot,
            timing: wait
                .call
                .as_ref()
                .map_or(crate::stall::model::Timing::Unknown, timing),
            futex: None,
            fd: wait.call.and_then(|c| fd_info(&mut self.fds, wait.pid, &c)),
            call: wait.call,
            event_loop: false,
            wchan: wait.wchan.clone(),
            kernel_stack: wait.kernel_stack.clone(),
            user_stack,
            user_sp: wait.pc_sp.map(|(_, sp)| sp),
        }
    }
}

/// Reads the futex word (and the glibc mutex fields after it) and infers the owner.
fn refresh_futex(
    thread: &mut BlockedThread,
    memory: Option<&ProcessMemory>,
    refused: Option<(u64, u32)>,
    live_tids: &[u32],
) {
    let Some(call) = thread.call.filter(|c| c.kind == kind::FUTEX) else {
        return;
    };
    let op = (call.detail & syscalls::FUTEX_CMD_MASK) as u32;
    let uaddr = call.resource;
    let read_u32 = |addr: u64| memory.and_then(|m| m.read_u32(addr).ok());
    let mut bytes = [0u8; FUTEX_MEMORY_BYTES];
    let words = match memory.map(|m| m.read(uaddr, &mut bytes)) {
        Some(Ok(())) => FutexMemory::from_bytes(&bytes),
        // The word may sit at the very end of a mapping.
        _ => FutexMemory::word_only(read_u32(uaddr)),
    };
    let refused = refused.map(|(lock, word)| RefusedPiLock {
        uaddr: lock,
        word: read_u32(lock).unwrap_or(word),
    });
    let code = waiting_code(&thread.user_stack);
    let owner = infer_owner(op, &words, refused, code, thread.tid, live_tids);
    thread.futex = Some(FutexWait {
        uaddr,
        op,
        word: words.word,
        lock_uaddr: refused.map(|r| r.uaddr),
        owner,
    });
}

/// What the fd of an fd wait is.
fn fd_info(fds: &mut FdScanner, pid: u32, call: &SyscallCall) -> Option<FdInfo> {
    if !matches!(
        call.kind,
        kind::READ | kind::RECV | kind::ACCEPT | kind::EPOLL
    ) {
        return None;
    }
    let fd = call.resource as i32;
    let d: FdDescription = fds.describe(pid, fd).ok()?;
    Some(FdInfo {
        fd,
        fd_type: d.fd_type.name().to_string(),
        local: d.socket.as_ref().map(|s| s.local.clone()),
        peer: d.socket.as_ref().and_then(|s| s.peer.clone()),
        external: d.fd_type != FdType::Epoll || !d.epoll_targets.is_empty(),
        description: d.description,
    })
}

fn read_wchan(pid: u32, tid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok()?;
    threads::parse_wchan(&text)
}
