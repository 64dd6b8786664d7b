//! Report each stall once: when it crosses the threshold, and again when it ends.
//!
//! A wait is identified by (tid, start time): a thread that wakes and blocks again is a new
//! wait. A reported wait is resolved when it is no longer among the blocked waits of a scan,
//! not when its verdict fades, so a transient gap in owner information never produces a false
//! "resolved".

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Analysis, Cycle, Finding, Reason, Verdict, WaitKey};

/// A reported stall that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolution {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// The verdict it was reported with.
    pub verdict: Verdict,
    /// How long the wait lasted, as far as the last scan saw it, ns.
    pub blocked_for_ns: u64,
}

/// What changed since the previous scan.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Changes {
    /// Problems not reported before (or whose verdict changed), plus idle threads of the
    /// same processes for context.
    pub new_findings: Vec<Finding>,
    /// Reported problems whose wait ended.
    pub resolved: Vec<Resolution>,
    /// Cycles not reported before.
    pub new_cycles: Vec<Cycle>,
}

impl Changes {
    /// True when there is nothing to report.
    pub(crate) fn is_empty(&self) -> bool {
        self.new_findings.is_empty() && self.resolved.is_empty() && self.new_cycles.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Reported {
    pid: u32,
    comm: String,
    /// It was reported behind a peer process (`Reason::PeerBlocked`): a stall that comes to
    /// lead into a peer's problem later (the server deadlocks after the client's request
    /// went unanswered) is reported again, with its chain.
    behind_peer: bool,
    verdict: Verdict,
    since_ns: u64,
}

/// The reported stalls and cycles, across scans.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    reported: BTreeMap<WaitKey, Reported>,
    /// List every idle wait once, not only beside a new problem of its process (`watch -p`:
    /// the user pointed at the process and wants all of its blocked threads).
    list_idle: bool,
    /// Idle waits listed, forgotten when they end (an idle wait's end is no news).
    listed_idle: BTreeSet<WaitKey>,
    /// Reported cycles, each as its members' waits: forgotten when any of them ends, so a
    /// cycle that forms again later (new waits) is reported again.
    cycles: BTreeSet<Vec<WaitKey>>,
}

impl Tracker {
    /// A tracker that lists every idle wait once when it crosses the threshold.
    pub(crate) fn listing_idle() -> Self {
        Self {
            list_idle: true,
            ..Self::default()
        }
    }

    /// Folds in one scan. `blocked` holds every wait still blocked at the scan, whether or not
    /// it is a finding; `now_ns` is the scan time.
    pub(crate) fn update(
        &mut self,
        analysis: Analysis,
        blocked: &BTreeSet<WaitKey>,
        now_ns: u64,
    ) -> Changes {
        let mut changes = Changes::default();
        let gone: Vec<WaitKey> = self
            .reported
            .keys()
            .filter(|k| !blocked.contains(k))
            .copied()
            .collect();
        for key in gone {
            let r = self.reported.remove(&key).expect("key just listed");
            changes.resolved.push(Resolution {
                pid: r.pid,
                tid: key.0,
                comm: r.comm,
                verdict: r.verdict,
                blocked_for_ns: now_ns.saturating_sub(r.since_ns),
            });
        }
        let since_by_tid: BTreeMap<u32, u64> = analysis
            .findings
            .iter()
            .map(|f| (f.thread.tid, f.thread.since_ns))
            .collect();
        let mut newly: BTreeSet<WaitKey> = BTreeSet::new();
        for finding in analysis.findings.iter().filter(|f| f.verdict.is_problem()) {
            let t = &finding.thread;
            let key = (t.tid, t.since_ns);
            if self.reported.get(&key).is_some_and(|r| {
                r.verdict == finding.verdict && r.behind_peer == behind_peer(finding)
            }) {
                continue;
            }
            newly.insert(key);
            self.reported.insert(
                key,
                Reported {
                    pid: t.pid,
                    comm: t.comm.clone(),
                    verdict: finding.verdict,
                    behind_peer: behind_peer(finding),
                    since_ns: t.since_ns,
                },
            );
        }
        let new_pids: BTreeSet<u32> = analysis
            .findings
            .iter()
            .filter(|f| newly.contains(&(f.thread.tid, f.thread.since_ns)))
            .map(|f| f.thread.pid)
            .collect();
        changes.new_findings = analysis
            .findings
            .into_iter()
            .filter(|f| {
                let key = (f.thread.tid, f.thread.since_ns);
                if f.verdict.is_problem() {
                    newly.contains(&key)
                } else {
                    // A periodic wait is the continuation of waits seen before: listing each
                    // would list the thread once per period.
                    let periodic = matches!(f.reason, Reason::Periodic { .. });
                    new_pids.contains(&f.thread.pid)
                        || (self.list_idle && !periodic && !self.listed_idle.contains(&key))
                }
            })
            .collect();
        if self.list_idle {
            self.listed_idle.retain(|k| blocked.contains(k));
            self.listed_idle.extend(
                changes
                    .new_findings
                    .iter()
                    .filter(|f| !f.verdict.is_problem())
                    .map(|f| f.thread.key()),
            );
        }
        self.cycles
            .retain(|members| members.iter().all(|k| blocked.contains(k)));
        for cycle in analysis.cycles {
            let mut members: Vec<WaitKey> = cycle
                .edges
                .iter()
                .map(|e| (e.tid, since_by_tid.get(&e.tid).copied().unwrap_or(0)))
                .collect();
            members.sort_unstable();
            if self.cycles.insert(members) {
                changes.new_cycles.push(cycle);
            }
        }
        changes
    }
}

fn behind_peer(f: &Finding) -> bool {
    matches!(f.reason, Reason::PeerBlocked { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::fixtures;

    fn finding(tid: u32, since_ns: u64, verdict: Verdict) -> Finding {
        let mut thread = fixtures::futex_thread(1, tid, &format!("t{tid}"), 0);
        thread.since_ns = since_ns;
        fixtures::finding(thread, verdict, Reason::LockWithoutOwner)
    }

    fn scan(findings: Vec<Finding>) -> (Analysis, BTreeSet<WaitKey>) {
        let blocked = findings
            .iter()
            .map(|f| (f.thread.tid, f.thread.since_ns))
            .collect();
        (
            Analysis {
                findings,
                cycles: Vec::new(),
            },
            blocked,
        )
    }

    /// Check that a stall is reported once, not every interval, and resolved once with its
    /// duration when its wait ends.
    #[test]
    fn reported_once_then_resolved() {
        let mut tracker = Tracker::default();
        let (a, b) = scan(vec![finding(5, 100, Verdict::Stall)]);
        assert_eq!(tracker.update(a, &b, 1_000).new_findings.len(), 1);
        let (a, b) = scan(vec![finding(5, 100, Verdict::Stall)]);
        assert!(tracker.update(a, &b, 2_000).is_empty());
        let (a, b) = scan(vec![]);
        let changes = tracker.update(a, &b, 3_100);
        assert_eq!(changes.resolved.len(), 1);
        assert_eq!(changes.resolved[0].blocked_for_ns, 3_000);
        let (a, b) = scan(vec![]);
        assert!(
            tracker.update(a, &b, 4_000).is_empty(),
            "resolved only once"
        );
    }

    /// Check that a cycle is reported once while its waits last, and again if it forms anew.
    #[test]
    fn cycle_reported_once_per_formation() {
        let edge = fixtures::glibc_edge;
        let cycle = Cycle {
            pid: 1,
            edges: vec![edge(5, 0xb, 6), edge(6, 0xa, 5)],
        };
        let mut tracker = Tracker::default();
        let mut round = |since: u64| {
            let (mut a, b) = scan(vec![
                finding(5, since, Verdict::Deadlock),
                finding(6, since, Verdict::Deadlock),
            ]);
            a.cycles = vec![cycle.clone()];
            tracker.update(a, &b, since + 10).new_cycles.len()
        };
        assert_eq!(round(100), 1);
        assert_eq!(round(100), 0);
        assert_eq!(round(500), 1, "a new formation (new waits) is news again");
    }

    /// Check that a new wait of the same thread, or a changed verdict, is reported again,
    /// and that idle threads come along only as context of a new problem in their process.
    #[test]
    fn new_wait_or_verdict_is_new_and_idle_is_context() {
        let mut tracker = Tracker::default();
        let (a, b) = scan(vec![finding(5, 100, Verdict::Idle)]);
        assert!(tracker.update(a, &b, 1_000).is_empty());
        let (a, b) = scan(vec![
            finding(5, 100, Verdict::Idle),
            finding(6, 100, Verdict::Stall),
        ]);
        assert_eq!(tracker.update(a, &b, 2_000).new_findings.len(), 2);
        let (a, b) = scan(vec![finding(6, 100, Verdict::Deadlock)]);
        let changes = tracker.update(a, &b, 3_000);
        assert_eq!(changes.new_findings[0].verdict, Verdict::Deadlock);
        assert!(changes.resolved.is_empty());
    }

    /// Check that a tracker listing idle waits (`watch -p`) lists each once, never resolves
    /// one, and lists a new wait of the same thread again.
    #[test]
    fn idle_waits_listed_once_with_p() {
        let mut tracker = Tracker::listing_idle();
        let (a, b) = scan(vec![finding(5, 100, Verdict::Idle)]);
        let changes = tracker.update(a, &b, 1_000);
        assert_eq!(changes.new_findings.len(), 1);
        let (a, b) = scan(vec![finding(5, 100, Verdict::Idle)]);
        assert!(tracker.update(a, &b, 2_000).is_empty());
        let (a, b) = scan(vec![]);
        assert!(tracker.update(a, &b, 3_000).is_empty(), "no resolution");
        let (a, b) = scan(vec![finding(5, 4_000, Verdict::Idle)]);
        assert_eq!(tracker.update(a, &b, 5_000).new_findings.len(), 1);
    }

    /// Check that a periodic wait is not listed with `-p` (each period would be listed), while
    /// the first wait of the thread was.
    #[test]
    fn periodic_waits_not_listed_again() {
        let mut tracker = Tracker::listing_idle();
        let (a, b) = scan(vec![finding(5, 100, Verdict::Idle)]);
        assert_eq!(tracker.update(a, &b, 1_000).new_findings.len(), 1);
        let mut periodic = finding(5, 2_000, Verdict::Idle);
        periodic.reason = Reason::Periodic {
            ended_before: 1,
            period_ms: 2,
            typical_wait_ms: 1,
        };
        let (a, b) = scan(vec![periodic]);
        assert!(tracker.update(a, &b, 3_000).is_empty());
    }
}
