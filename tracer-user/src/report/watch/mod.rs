//! What `stallwatch watch` prints after each scan: text for people, JSON Lines for scripts.
//!
//! Detection (`crate::stall`) decides *what* a blocked thread is; this module only decides how
//! to say it. Both renderings read the same [`WatchReport`] and share the small vocabulary
//! below (how a call, a resource, a timing is named), so the text and the JSON never disagree
//! about what a thread waits on. Everything here is pure: no clock, no `/proc`, so the output
//! is unit-tested from hand-written findings.

pub(crate) mod json;
pub(crate) mod text;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use crate::model::{
    BlockedThread, Cycle, Finding, Loss, OwnerSource, Reason, RuntimeProcess, Timing, WaitKind,
};

/// Version of the JSON Lines format written by [`json::write_json_line`]. Bumped on an
/// incompatible change (a field removed, renamed or changing type or meaning); adding fields
/// does not bump it. See `docs/json-schema.md`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// What one scan of `watch` has to say: stalls that crossed the threshold since the last
/// report, stalls that ended, new deadlock cycles.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WatchReport {
    /// Time since `watch` started.
    pub elapsed: Duration,
    /// Wall-clock time of the scan.
    pub wall_clock: SystemTime,
    /// How long a wait must last to be reported.
    pub threshold: Duration,
    /// Threads newly past the threshold (or whose verdict changed) since the last report.
    pub new_findings: Vec<Finding>,
    /// Reported waits that ended since the last report.
    pub resolved: Vec<Resolved>,
    /// Deadlock cycles not reported before.
    pub new_cycles: Vec<Cycle>,
    /// Process names by pid, for the processes in this report whose name is known.
    pub process_names: BTreeMap<u32, String>,
    /// What the runtimes read about the processes in this report (`crate::runtime`).
    pub runtime_views: BTreeMap<u32, Vec<RuntimeProcess>>,
    /// Kernel-side loss counters, non-zero only.
    pub losses: Vec<Loss>,
    /// The last report (exit, `--once`).
    pub is_final: bool,
    /// The findings and cycles are what is still open at exit, already reported when they
    /// appeared (the final report of a live watch), not new.
    pub restated: bool,
    /// Processes not watched (`-p`) whose problems and cycles are in the report because a
    /// watched thread's wait chain leads into them.
    pub peer_processes: BTreeSet<u32>,
}

/// A reported wait that ended, as the tracker found it.
pub(crate) use crate::stall::tracker::Resolution as Resolved;

impl WatchReport {
    /// True when the report has nothing to say about threads: no finding, no cycle, nothing
    /// resolved (losses alone do not count).
    pub(crate) fn has_no_threads(&self) -> bool {
        self.new_findings.is_empty() && self.resolved.is_empty() && self.new_cycles.is_empty()
    }

    /// Name of process `pid`: from `process_names`, else the comm of its main thread if that
    /// thread is among the findings.
    pub(crate) fn process_name(&self, pid: u32) -> Option<&str> {
        if let Some(name) = self.process_names.get(&pid) {
            return Some(name);
        }
        self.new_findings
            .iter()
            .find(|f| f.thread.pid == pid && f.thread.tid == pid)
            .map(|f| f.thread.name())
    }

    /// `process 1234 (name)`, or `process 1234` when its name is unknown.
    pub(crate) fn process_label(&self, pid: u32) -> String {
        match self.process_name(pid) {
            Some(name) => format!("process {pid} ({name})"),
            None => format!("process {pid}"),
        }
    }

    /// Whether `pid` was watched (not only inspected as a peer process).
    pub(crate) fn is_watched(&self, pid: u32) -> bool {
        !self.peer_processes.contains(&pid)
    }

    /// The finding of thread `tid` of process `pid`, if it is in this report.
    pub(crate) fn finding(&self, pid: u32, tid: u32) -> Option<&Finding> {
        self.new_findings
            .iter()
            .find(|f| f.thread.pid == pid && f.thread.tid == tid)
    }
}

/// The process at the other end: the peer the analysis found (`Finding::peer`, another
/// process), else of a pipe the thread reads or writes, the writer the verdict names, else
/// the first holder of the other end in another process; of a loopback connection, the
/// holder of the socket at the other end (its own process included).
pub(crate) fn peer_pid(f: &Finding) -> Option<u32> {
    if let Some(peer) = f.peer {
        return Some(peer.pid);
    }
    if let Reason::WaitingForInput { writer } | Reason::WriterBlocked { writer } = &f.reason {
        return Some(writer.pid);
    }
    let fd = f.thread.fd.as_ref()?;
    if let Some(pid) = fd.socket.as_ref().and_then(|s| s.local_peer?.pid) {
        return Some(pid);
    }
    let own = fd.access?;
    fd.pipe_peers
        .iter()
        .filter(|h| h.pid != f.thread.pid)
        .find(|h| {
            h.access
                .is_none_or(|a| (own.reads() && a.writes()) || (own.writes() && a.reads()))
        })
        .map(|h| h.pid)
}

/// The wait kind name (`futex`, `recv`, ... `other`), as in folded wait leaves.
pub(crate) fn kind_name(t: &BlockedThread) -> &'static str {
    t.call.map_or(WaitKind::Other, |c| c.kind).name()
}

/// `indefinite`, `timed` or `unknown`.
pub(crate) fn timing_name(timing: Timing) -> &'static str {
    match timing {
        Timing::Indefinite => "indefinite",
        Timing::Timed => "timed",
        Timing::Unknown => "unknown",
    }
}

/// `pi_word`, `glibc_mutex`, `join`, `failed_pi_lock`, `runtime_lock`, `runtime_join`.
pub(crate) fn owner_source_name(source: OwnerSource) -> &'static str {
    match source {
        OwnerSource::PiWord => "pi_word",
        OwnerSource::GlibcMutex => "glibc_mutex",
        OwnerSource::Join => "join",
        OwnerSource::FailedPiLock => "failed_pi_lock",
        OwnerSource::RuntimeLock => "runtime_lock",
        OwnerSource::RuntimeJoin => "runtime_join",
    }
}

/// The kind of thing waited on, as the JSON `resource.type`: `futex`, `fd`, `child`,
/// `sleep` or `none`.
pub(crate) fn resource_type(t: &BlockedThread) -> &'static str {
    if t.futex.is_some() {
        return "futex";
    }
    if t.fd.is_some() {
        return "fd";
    }
    match t.call.map_or(WaitKind::Other, |c| c.kind) {
        WaitKind::Futex | WaitKind::FutexWaitv => "futex",
        WaitKind::Epoll | WaitKind::Read | WaitKind::Recv | WaitKind::Accept => "fd",
        WaitKind::WaitChild => "child",
        WaitKind::Sleep => "sleep",
        _ => "none",
    }
}

pub(crate) use crate::report::describe::{
    describe_call, describe_resource, edge_resource, explanation, futex_op, hex, named_thread,
    syscall_name, why,
};

/// Nanoseconds to milliseconds, rounded to nearest.
pub(crate) fn ns_to_ms(ns: u64) -> u64 {
    ns.saturating_add(500_000) / 1_000_000
}

/// Test inputs shared by the text and JSON tests: an ABBA deadlock, four identical recv
/// stalls, an idle pool, a resolved wait.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::{Duration, SystemTime};

    use super::{Resolved, WatchReport};
    use crate::{
        model::{
            Cycle, Finding, Frame, FrameKind, FutexOwner, OwnerSource, Reason, SyscallCall,
            ThreadRef, Verdict, WaitKind, WaitingCode,
        },
        stall::fixtures::{finding, futex_facts, glibc_edge, tcp_socket},
    };

    /// Wall clock of every fixture report: 2023-11-14T22:13:20.123Z.
    pub(crate) fn wall_clock() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    /// A frame with a symbol, and a source line when `file` is given.
    pub(crate) fn sym(addr: u64, name: &str, offset: u64, file: Option<(&str, u32)>) -> Frame {
        Frame {
            addr,
            name: Some(name.into()),
            module: Some("/usr/lib/libc.so.6".into()),
            offset,
            file: file.map(|(f, _)| f.into()),
            line: file.map(|(_, l)| l),
            inlined: false,
            kind: FrameKind::Native,
        }
    }

    /// A thread in `futex(FUTEX_WAIT)` with no futex details.
    pub(crate) use crate::stall::fixtures::futex_thread as thread;

    /// One ABBA thread: `tid` waits for glibc mutex `want`, held by `owner`.
    fn abba_thread(tid: u32, comm: &str, want: u64, owner: (u32, &str), func: &str) -> Finding {
        let mut t = thread(1234, tid, comm, 14_200_000_000);
        t.futex = Some(futex_facts(want, Some((owner.0, OwnerSource::GlibcMutex))));
        t.user_stack = vec![
            sym(0x7f3a_1000_0010, "__lll_lock_wait", 0x10, None),
            sym(
                0x7f3a_1000_0120,
                "pthread_mutex_lock",
                0x20,
                Some(("pthread_mutex_lock.c", 80)),
            ),
            sym(0x55d0_0000_1190, func, 0x1e, Some(("/src/abba.c", 22))),
        ];
        t.kernel_stack = [
            sym(0xffff_ffff_8100_0010, "schedule", 0x10, None),
            sym(0xffff_ffff_8100_0220, "futex_wait", 0x5f, None),
        ]
        .into_iter()
        .map(|f| Frame {
            module: None,
            kind: FrameKind::Kernel,
            ..f
        })
        .collect();
        let reason = Reason::InCycle {
            owner: ThreadRef {
                tid: owner.0,
                comm: Some(owner.1.into()),
            },
        };
        Finding {
            code: WaitingCode::Lock { glibc_mutex: true },
            owner: Some(FutexOwner {
                tid: owner.0,
                source: OwnerSource::GlibcMutex,
            }),
            ..finding(t, Verdict::Deadlock, reason)
        }
    }

    /// Process 1234 `deadlock_abba`: threads 1235 and 1236 each hold the mutex the other
    /// wants.
    pub(crate) fn abba() -> (Vec<Finding>, Cycle) {
        let findings = vec![
            abba_thread(1235, "abba-a", 0x55d0_c0a0, (1236, "abba-b"), "lock_b"),
            abba_thread(1236, "abba-b", 0x55d0_c0e0, (1235, "abba-a"), "lock_a"),
        ];
        let edge = glibc_edge;
        let cycle = Cycle {
            pid: 1234,
            edges: vec![edge(1235, 0x55d0_c0a0, 1236), edge(1236, 0x55d0_c0e0, 1235)],
        };
        (findings, cycle)
    }

    /// Process 2000 `api`: four workers in `recvfrom` on the same database connection,
    /// blocked 28 to 31 s.
    pub(crate) fn recv_stalls() -> Vec<Finding> {
        (0..4u32)
            .map(|i| {
                let mut t = thread(
                    2000,
                    2001 + i,
                    &format!("worker-{i}"),
                    28_000_000_000 + u64::from(i) * 1_000_000_000,
                );
                t.call = Some(SyscallCall {
                    nr: 45,
                    kind: WaitKind::Recv,
                    resource: 7,
                    detail: 0,
                    timeout: 0,
                });
                t.fd = Some(tcp_socket(7, "127.0.0.1:41234", "127.0.0.1:5432"));
                t.user_stack = vec![
                    sym(0x7f3a_1000_0500, "recv", 0x15, None),
                    sym(0x55d0_0000_2000, "db_query", 0x40, Some(("db.c", 120))),
                ];
                Finding {
                    code: WaitingCode::Condition,
                    ..finding(t, Verdict::Stall, Reason::NoInput)
                }
            })
            .collect()
    }

    /// Three idle pool workers of process `pid`, in `FUTEX_WAIT` on condition variables with
    /// no owner.
    pub(crate) fn idle_pool(pid: u32) -> Vec<Finding> {
        (0..3u32)
            .map(|i| {
                let mut t = thread(pid, pid + 100 + i, &format!("pool-{i}"), 60_000_000_000);
                let mut facts = futex_facts(0x7f00_0000_2000 + u64::from(i) * 0x40, None);
                facts.memory = 0u32.to_ne_bytes().to_vec();
                t.futex = Some(facts);
                finding(t, Verdict::Idle, Reason::Signal)
            })
            .collect()
    }

    /// A report at +12 s with a 5 s threshold holding `findings` and `cycles`.
    pub(crate) fn report(findings: Vec<Finding>, cycles: Vec<Cycle>) -> WatchReport {
        WatchReport {
            elapsed: Duration::from_millis(12_000),
            wall_clock: wall_clock(),
            threshold: Duration::from_secs(5),
            new_findings: findings,
            resolved: Vec::new(),
            new_cycles: cycles,
            process_names: [(1234, "deadlock_abba".to_owned()), (2000, "api".to_owned())]
                .into_iter()
                .collect(),
            runtime_views: std::collections::BTreeMap::new(),
            losses: Vec::new(),
            is_final: false,
            restated: false,
            peer_processes: std::collections::BTreeSet::new(),
        }
    }

    /// A resolved stall of thread 1235.
    pub(crate) fn resolved() -> Resolved {
        Resolved {
            pid: 1234,
            tid: 1235,
            comm: "abba-a".into(),
            verdict: Verdict::Stall,
            blocked_for_ns: 14_200_000_000,
        }
    }
}
