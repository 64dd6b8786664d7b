//! Turning raw waits (BPF in-flight state, `/proc` snapshot) into [`BlockedThread`]s: their
//! stacks (through the one stack pipeline, [`crate::stacks`]), the fd a thread waits on, and
//! the memory at the futex it sleeps on. Only facts: who holds a lock and what a thread's
//! situation is are inferred from these by `stall::analyze`.
//!
//! What cannot change during one wait (stacks, fd description) is gathered once per wait and
//! cached; futex memory is read again every scan, since a lock can change hands while a
//! waiter sleeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use super::snapshot::{self, SnapshotWait};
use crate::{
    inspect::{FdScanner, ProcessMemory, threads},
    model::{
        BlockedThread, FdDescription, Frame, FrameKind, FutexFacts, InFlightWait, Origin,
        ProcessView, RawStack, RefusedPiLock, RuntimeProcess, RuntimeWaitKind, SyscallCall,
        ThreadState, WaitKey, WaitKind,
    },
    procs::Procs,
    runtime::{self, BlockedInput, ProcessInput},
    stacks::{FrameDrops, StackInput, Stacks},
};

/// A process's runtime views are read again after this many scans even when its blocked
/// threads are the same (a lock may have changed hands; a runtime may name new lock waiters).
const VIEW_REFRESH_SCANS: u64 = 5;

/// Processes at the other end of a watched thread's wait are followed at most this many hops
/// away (the peer of a peer of a peer) under `-p`.
const MAX_PEER_DEPTH: usize = 3;
/// At most this many peer processes are inspected per scan under `-p`: a thread pool with
/// connections to many local services stays cheap to scan.
const MAX_PEER_PROCESSES: usize = 16;

/// The result of one scan: what the pure stages (analysis, tracking, reports) consume, and
/// what `--record` saves.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Scanned {
    /// Threads blocked at least the threshold, gathered.
    pub threads: Vec<BlockedThread>,
    /// Their processes, with every thread.
    pub processes: BTreeMap<u32, ProcessView>,
    /// Every wait blocked at least the threshold (findings or not).
    pub keys: BTreeSet<WaitKey>,
}

/// Gathers blocked threads, keeping what it learnt across scans.
pub(crate) struct Gatherer {
    pids: Vec<u32>,
    threshold: Duration,
    procs: Procs,
    stacks: Stacks,
    snapshot: BTreeMap<u32, SnapshotWait>,
    gathered: BTreeMap<WaitKey, BlockedThread>,
    /// Owners pulled in by [`Gatherer::pull_in_owners`]: tid -> (pid, since ns).
    pulled: BTreeMap<u32, (u32, u64)>,
    /// Threads the runtime views of this scan said wait for a lock, not among the blocked
    /// threads: (pid, tid).
    lock_waiters: BTreeSet<(u32, u32)>,
    /// Scans so far.
    scans: u64,
    /// Each process's last runtime views, with the scan they were read in.
    last_views: BTreeMap<u32, (u64, Vec<RuntimeProcess>)>,
    fds: FdScanner,
    /// Under `-p`: the sleeping threads of the peer processes inspected at the last scan, by
    /// tid (a wait is kept while the thread has not run, so it stays one wait).
    peer_waits: BTreeMap<u32, SnapshotWait>,
}

impl Gatherer {
    /// A gatherer for `pids` (every process when empty).
    pub(crate) fn new(pids: Vec<u32>, threshold: Duration) -> Self {
        Self {
            pids,
            threshold,
            procs: Procs::new(),
            stacks: Stacks::new(),
            snapshot: BTreeMap::new(),
            gathered: BTreeMap::new(),
            pulled: BTreeMap::new(),
            lock_waiters: BTreeSet::new(),
            scans: 0,
            last_views: BTreeMap::new(),
            fds: FdScanner::new(),
            peer_waits: BTreeMap::new(),
        }
    }

    /// The threshold.
    pub(crate) fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Reads every sleeping target thread from `/proc`.
    pub(crate) fn take_snapshot(&mut self, now_ns: u64) {
        self.snapshot = snapshot::take(&self.pids, now_ns);
    }

    /// The user frames dropped so far as no real frames (`stacks::validate`).
    pub(crate) fn frame_drops(&self) -> FrameDrops {
        self.stacks.drops()
    }

    /// Name of process `pid`, if known (kept after it exits).
    pub(crate) fn process_name(&self, pid: u32) -> Option<String> {
        self.procs.name(pid)
    }

    /// One scan over `traced` (BPF waits already past the threshold) and the snapshot.
    /// `waiting_tids` are the threads with any BPF wait in progress: their snapshot waits, if
    /// any, are over (the BPF side saw them block again).
    pub(crate) fn scan(
        &mut self,
        traced: Vec<InFlightWait>,
        waiting_tids: &[u32],
        now_ns: u64,
    ) -> Scanned {
        let own = std::process::id();
        let threshold_ns = self.threshold.as_nanos() as u64;
        self.scans += 1;
        // Pipe holders, socket tables, process maps and memory are read once per scan.
        self.fds.clear();
        self.procs.begin_scan();
        for pid in self.procs.forget_exited() {
            self.stacks.forget(pid, &self.procs);
            self.last_views.remove(&pid);
        }
        let mut keys = BTreeSet::new();
        let mut fresh = BTreeSet::new();
        // A thread the BPF side saw block (even in the moment between attaching and the
        // snapshot) or that ran since is the BPF side's now.
        let traced_tids: BTreeSet<u32> = waiting_tids.iter().copied().collect();
        self.snapshot
            .retain(|tid, w| !traced_tids.contains(tid) && snapshot::still_waiting(w));
        // The kernel's word that a thread is asleep, checked every scan: should a switch-in
        // ever be missed (see `counter::DROP_UNMATCHED_WAIT`), a running thread would otherwise
        // look blocked for ever.
        let asleep = |w: &&InFlightWait| {
            threads::read_state(w.pid, w.tid)
                .is_some_and(|s| ThreadState::from_letter(s).is_asleep())
        };
        for wait in traced.iter().filter(|w| w.pid != own).filter(asleep) {
            let key = (wait.tid, wait.start_ns);
            keys.insert(key);
            if !self.gathered.contains_key(&key) {
                let thread = self.gather_traced(wait);
                self.gathered.insert(key, thread);
                fresh.insert(key);
            }
        }
        let snapshot_keys: Vec<WaitKey> = self
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
                fresh.insert(key);
            }
        }
        let peer_pids = self.gather_peers(now_ns, &mut keys, &mut fresh);
        // Owners pulled in at the last scan stay while they sleep (see `pull_in_owners`).
        let gathered_tids: BTreeSet<u32> = keys.iter().map(|k| k.0).collect();
        self.pulled.retain(|tid, (pid, _)| {
            !gathered_tids.contains(tid)
                && threads::read_state(*pid, *tid)
                    .is_some_and(|s| ThreadState::from_letter(s).is_asleep())
        });
        keys.extend(self.pulled.iter().map(|(&tid, &(_, since))| (tid, since)));
        self.gathered.retain(|k, _| keys.contains(k));

        let mut pids: BTreeSet<u32> = self.gathered.values().map(|t| t.pid).collect();
        pids.extend(&peer_pids);
        let mut processes: BTreeMap<u32, ProcessView> = pids
            .into_iter()
            .map(|pid| {
                let mut view = self.process_view(pid);
                view.peer = !self.pids.is_empty() && !self.pids.contains(&pid);
                (pid, view)
            })
            .collect();
        for process in processes.values_mut() {
            process.runtime_views = self.runtime_views(process, &fresh);
        }
        let pulled = self.pull_in_owners(now_ns, &mut keys, &mut fresh);
        for pid in pulled {
            if let Some(process) = processes.get_mut(&pid) {
                process.runtime_views = self.runtime_views(process, &fresh);
            }
        }
        let refused: BTreeMap<u32, RefusedPiLock> = traced
            .iter()
            .filter_map(|w| w.refused_pi_lock.map(|r| (w.tid, r)))
            .collect();
        let mut threads = Vec::new();
        for thread in self.gathered.values_mut() {
            thread.blocked_for_ns = now_ns.saturating_sub(thread.since_ns);
            let memory = self.procs.memory(thread.pid).ok();
            thread.futex = futex_facts(
                thread.call.as_ref(),
                memory.as_deref(),
                refused.get(&thread.tid).copied(),
            );
            threads.push(thread.clone());
        }
        Scanned {
            threads,
            processes,
            keys,
        }
    }

    /// The processes at the other end of the gathered waits (a pipe's other holders, the
    /// holder of a local socket's other end), so that the analysis can follow a wait into
    /// the process it waits on (`stall::peer_chain`). Host-wide, their threads are gathered
    /// already; the processes are returned so that the analysis knows they were looked at.
    /// Under `-p`, the BPF side and the snapshot see the `-p` processes only: the sleeping
    /// threads of each peer process are read from `/proc` here, read-only, like the
    /// snapshot's (their waits' starts estimated the same way, and kept while the thread has
    /// not run), and gathered; then the peers of their waits, at most [`MAX_PEER_DEPTH`]
    /// hops away and [`MAX_PEER_PROCESSES`] processes in all. Returns the peer processes
    /// inspected.
    fn gather_peers(
        &mut self,
        now_ns: u64,
        keys: &mut BTreeSet<WaitKey>,
        fresh: &mut BTreeSet<WaitKey>,
    ) -> BTreeSet<u32> {
        let own = std::process::id();
        let threshold_ns = self.threshold.as_nanos() as u64;
        let other_ends = |gathered: &BTreeMap<WaitKey, BlockedThread>, keys: &[WaitKey]| {
            let mut pids = BTreeSet::new();
            for t in keys.iter().filter_map(|k| gathered.get(k)) {
                if let Some(fd) = &t.fd {
                    pids.extend(fd.other_end_pids(t.pid));
                }
            }
            pids
        };
        let mut frontier: Vec<WaitKey> = keys.iter().copied().collect();
        if self.pids.is_empty() {
            let mut pids = other_ends(&self.gathered, &frontier);
            pids.retain(|&pid| pid != own && crate::procs::exists(pid));
            return pids;
        }
        let mut inspected = BTreeSet::new();
        for _ in 0..MAX_PEER_DEPTH {
            let mut pids = other_ends(&self.gathered, &frontier);
            pids.retain(|pid| *pid != own && !self.pids.contains(pid) && !inspected.contains(pid));
            frontier.clear();
            for pid in pids {
                if inspected.len() >= MAX_PEER_PROCESSES {
                    break;
                }
                let Ok(tids) = threads::list_tids(pid) else {
                    continue;
                };
                inspected.insert(pid);
                for tid in tids {
                    let kept = self
                        .peer_waits
                        .get(&tid)
                        .filter(|w| w.pid == pid && snapshot::still_waiting(w))
                        .cloned();
                    let wait = kept.or_else(|| {
                        let thread = threads::read_thread(pid, tid).ok()?;
                        snapshot::sleeping(thread, now_ns)
                    });
                    let Some(wait) = wait else {
                        self.peer_waits.remove(&tid);
                        continue;
                    };
                    self.peer_waits.insert(tid, wait.clone());
                    if now_ns.saturating_sub(wait.since_ns) < threshold_ns {
                        continue;
                    }
                    let key = (tid, wait.since_ns);
                    keys.insert(key);
                    if !self.gathered.contains_key(&key) {
                        let thread = self.gather_snapshot(&wait);
                        self.gathered.insert(key, thread);
                        fresh.insert(key);
                    }
                    frontier.push(key);
                }
            }
        }
        self.peer_waits.retain(|_, w| inspected.contains(&w.pid));
        inspected
    }

    /// Process `pid` as the analysis sees it: every thread, and the runtimes it runs (as
    /// detected when its waits were gathered; its maps are not read again for this).
    fn process_view(&self, pid: u32) -> ProcessView {
        let runtimes = self.procs.get(pid).map(|p| p.runtimes).unwrap_or_default();
        ProcessView {
            pid,
            tids: threads::list_tids(pid).unwrap_or_default(),
            runtimes: runtimes.names(),
            runtime_views: Vec::new(),
            peer: false,
        }
    }

    /// Gathers the owners runtimes named for blocked threads, and the threads they said wait
    /// for a lock, that are asleep but not among the blocked threads: a thread that keeps waking up to wait again for the same
    /// lock (HotSpot's "responsible" waiter on a contended monitor re-parks every second)
    /// never stays blocked past the threshold, yet it may hold what the others wait for and
    /// close a cycle. Its wait counts from when it was first pulled in, for as long as it keeps
    /// sleeping at each scan, so that it stays one wait. Returns the processes that gained
    /// threads (their views are read again).
    fn pull_in_owners(
        &mut self,
        now_ns: u64,
        keys: &mut BTreeSet<WaitKey>,
        fresh: &mut BTreeSet<WaitKey>,
    ) -> BTreeSet<u32> {
        let gathered_tids: BTreeSet<u32> = self.gathered.values().map(|t| t.tid).collect();
        let mut owners: BTreeSet<(u32, u32)> = self
            .gathered
            .values()
            .filter_map(|t| {
                let owner = t.runtime.as_ref()?.wait.as_ref()?.owner_tid?;
                Some((t.pid, owner))
            })
            .collect();
        owners.append(&mut self.lock_waiters);
        owners.retain(|(_, tid)| !gathered_tids.contains(tid));
        let mut pids = BTreeSet::new();
        for (pid, tid) in owners {
            let Some(wait) = threads::read_thread(pid, tid)
                .ok()
                .and_then(|t| snapshot::sleeping(t, now_ns))
            else {
                continue;
            };
            let since_ns = self.pulled.get(&tid).map_or(wait.since_ns, |p| p.1);
            self.pulled.insert(tid, (pid, since_ns));
            let key = (tid, since_ns);
            keys.insert(key);
            if !self.gathered.contains_key(&key) {
                let thread = self.gather_snapshot(&SnapshotWait { since_ns, ..wait });
                self.gathered.insert(key, thread);
                fresh.insert(key);
                pids.insert(pid);
            }
        }
        pids
    }

    /// Reads the views of the runtimes of `process` that read their own structures, once for
    /// the scan, and gives each of its blocked threads what they say about it: the facts
    /// every scan (a lock can change hands), the frames when its wait is `fresh` (gathered in
    /// this scan; a blocked thread's frames do not change during its wait).
    fn runtime_views(
        &mut self,
        process: &ProcessView,
        fresh: &BTreeSet<WaitKey>,
    ) -> Vec<RuntimeProcess> {
        let pid = process.pid;
        let Some(runtimes) = self.procs.get(pid).map(|p| p.runtimes) else {
            return Vec::new();
        };
        if !runtimes.iter().any(|r| r.has_view()) {
            return Vec::new();
        }
        // The same blocked threads as at the last view, which is recent: what it said still
        // holds (a blocked thread's frames do not change, and reading a runtime's threads
        // costs more than reading a futex word).
        let has_fresh = fresh
            .iter()
            .any(|k| self.gathered.get(k).is_some_and(|t| t.pid == pid));
        if let Some((at, views)) = self.last_views.get(&pid)
            && !has_fresh
            && self.scans.saturating_sub(*at) < VIEW_REFRESH_SCANS
        {
            return views.clone();
        }
        let (Some(maps), Ok(memory)) = (self.procs.maps(pid), self.procs.memory(pid)) else {
            return Vec::new();
        };
        let read_mem = |addr: u64, buf: &mut [u8]| memory.read(addr, buf).is_ok();
        let natives: Vec<(u32, Option<u64>, Vec<Frame>)> = self
            .gathered
            .values()
            .filter(|t| t.pid == pid)
            .map(|t| {
                let native = t
                    .user_stack
                    .iter()
                    .filter(|f| !matches!(f.kind, FrameKind::Interpreted { .. }))
                    .cloned()
                    .collect();
                let futex = t.call.filter(|c| c.kind == WaitKind::Futex);
                (t.tid, futex.map(|c| c.resource), native)
            })
            .collect();
        let blocked: Vec<BlockedInput<'_>> = natives
            .iter()
            .map(|(tid, futex_uaddr, native)| BlockedInput {
                tid: *tid,
                futex_uaddr: *futex_uaddr,
                native,
            })
            .collect();
        let input = ProcessInput {
            pid,
            maps: &maps,
            tids: &process.tids,
            blocked: &blocked,
            read_mem: &read_mem,
        };
        let Some(memos) = self.procs.runtime_memos(pid) else {
            return Vec::new();
        };
        let views = runtime::views(runtimes, &input, memos);
        let gathered_tids: BTreeSet<u32> = natives.iter().map(|n| n.0).collect();
        for view in &views {
            let lock_waiters = view.threads.iter().filter(|(tid, t)| {
                !gathered_tids.contains(tid)
                    && t.facts
                        .wait
                        .as_ref()
                        .is_some_and(|w| w.kind == RuntimeWaitKind::Lock)
            });
            self.lock_waiters
                .extend(lock_waiters.map(|(&tid, _)| (pid, tid)));
        }
        for thread in self.gathered.values_mut().filter(|t| t.pid == pid) {
            let seen = views.iter().find_map(|v| v.threads.get(&thread.tid));
            thread.runtime = seen.map(|t| t.facts.clone());
            if let Some(frames) = seen.and_then(|t| t.frames.clone())
                && fresh.contains(&thread.key())
            {
                thread.user_stack = frames;
            }
        }
        let processes: Vec<RuntimeProcess> = views.into_iter().map(|v| v.process).collect();
        self.last_views.insert(pid, (self.scans, processes.clone()));
        processes
    }

    fn gather_traced(&mut self, wait: &InFlightWait) -> BlockedThread {
        self.procs.remember(wait.pid);
        let kernel_stack = self
            .stacks
            .frames(&mut self.procs, StackInput::Kernel(&wait.kernel_stack));
        let user = StackInput::Blocked {
            pid: wait.pid,
            regs: wait.user_regs,
            frame_pointer_walk: &wait.user_stack,
        };
        let user_stack = self.stacks.frames(&mut self.procs, user);
        let wchan = (wait.state == ThreadState::Disk)
            .then(|| read_wchan(wait.pid, wait.tid))
            .flatten();
        BlockedThread {
            pid: wait.pid,
            tid: wait.tid,
            comm: wait.comm.clone(),
            state: wait.state,
            since_ns: wait.start_ns,
            blocked_for_ns: 0,
            origin: Origin::Traced,
            call: wait.call,
            futex: None,
            fd: wait
                .call
                .and_then(|c| fd_description(&mut self.fds, wait.pid, &c)),
            poll_returns: wait.poll_returns,
            wchan,
            kernel_stack,
            user_stack,
            user_sp: wait.user_regs.map(|r| r.sp),
            runtime: None,
        }
    }

    fn gather_snapshot(&mut self, wait: &SnapshotWait) -> BlockedThread {
        self.procs.remember(wait.pid);
        let user = StackInput::Blocked {
            pid: wait.pid,
            regs: wait.regs,
            frame_pointer_walk: &RawStack::None,
        };
        let user_stack = self.stacks.frames(&mut self.procs, user);
        let kernel = StackInput::KernelNames(&wait.kernel_stack);
        let kernel_stack = self.stacks.frames(&mut self.procs, kernel);
        BlockedThread {
            pid: wait.pid,
            tid: wait.tid,
            comm: wait.comm.clone(),
            state: wait.state,
            since_ns: wait.since_ns,
            blocked_for_ns: 0,
            origin: Origin::Snapshot,
            call: wait.call,
            futex: None,
            fd: wait
                .call
                .and_then(|c| fd_description(&mut self.fds, wait.pid, &c)),
            poll_returns: None,
            wchan: wait.wchan.clone(),
            kernel_stack,
            user_stack,
            user_sp: wait.regs.map(|r| r.sp),
            runtime: None,
        }
    }
}

/// The memory at the futex a thread waits on, read now: the word and, should the lock have
/// fields after its word, as many bytes as the runtimes read for owners
/// ([`runtime::lock_memory_bytes`]); the word alone when the rest is unreadable (it may sit at
/// the very end of a mapping). `refused` is a PI lock the kernel refused before the wait; its
/// word is read again too.
fn futex_facts(
    call: Option<&SyscallCall>,
    memory: Option<&ProcessMemory>,
    refused: Option<RefusedPiLock>,
) -> Option<FutexFacts> {
    let call = call.filter(|c| c.kind == WaitKind::Futex)?;
    let uaddr = call.resource;
    let read = |addr: u64, len: usize| {
        let mut bytes = vec![0u8; len];
        memory
            .and_then(|m| m.read(addr, &mut bytes).ok())
            .map(|()| bytes)
    };
    let bytes = read(uaddr, runtime::lock_memory_bytes())
        .or_else(|| read(uaddr, 4))
        .unwrap_or_default();
    let refused = refused.map(|r| RefusedPiLock {
        uaddr: r.uaddr,
        word: memory
            .and_then(|m| m.read_u32(r.uaddr).ok())
            .unwrap_or(r.word),
    });
    Some(FutexFacts {
        uaddr,
        op: call.futex_cmd().unwrap_or(0),
        memory: bytes,
        refused_pi_lock: refused,
    })
}

/// What the fd of an fd wait is.
fn fd_description(fds: &mut FdScanner, pid: u32, call: &SyscallCall) -> Option<FdDescription> {
    fds.describe(pid, call.fd()?).ok()
}

fn read_wchan(pid: u32, tid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok()?;
    threads::parse_wchan(&text)
}
