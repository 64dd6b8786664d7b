//! The pure half of `watch`: from each scan's gathered facts to the reports to print.
//!
//! A live `watch` and `stallwatch report` (replaying a recording) drive the same
//! [`Reporter`] with the same inputs, so a recording renders exactly what the live run
//! printed: [`ScanInput`] holds everything a scan's report depends on, clock readings and
//! process names included, and nothing here reads a clock or `/proc`.
//!
//! Under `-p`, the processes at the other end of a watched thread's pipe or local socket are
//! inspected too (`ProcessView::peer`): their verdicts decide the watched threads' (a client
//! behind a deadlocked server), but their own findings are not the user's question. They
//! are left out of tracking and of the exit status, and appear only as the links of a
//! watched problem's wait chain, with their cycles; their idle threads never.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use super::gather::Scanned;
use crate::{
    model::{Analysis, Loss, RuntimeProcess},
    report::watch::WatchReport,
    stall::{
        analyze::analyze,
        peer_chain::chain,
        periodic::PeriodicWaits,
        tracker::{Changes, Tracker},
    },
};

/// What a watch found over its whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Problems (any verdict but idle) were reported.
    pub stalls: bool,
    /// A deadlock cycle was reported.
    pub deadlock: bool,
}

impl Found {
    /// 0 nothing, 10 stalls, 11 a deadlock.
    pub fn exit_code(self) -> i32 {
        if self.deadlock {
            11
        } else if self.stalls {
            10
        } else {
            0
        }
    }

    fn add(&mut self, changes: &Changes) {
        self.stalls |= changes.new_findings.iter().any(|f| f.verdict.is_problem());
        self.deadlock |= !changes.new_cycles.is_empty();
    }
}

/// One scan's facts with the readings its report is made with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScanInput {
    /// What was gathered.
    pub scanned: Scanned,
    /// When (CLOCK_MONOTONIC ns).
    pub now_ns: u64,
    /// Time since `watch` started.
    pub elapsed: Duration,
    /// Wall-clock time of the scan.
    pub wall_clock: SystemTime,
    /// The kernel side's losses so far.
    pub losses: Vec<Loss>,
}

/// The end of a run: the readings of the final report.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EndInput {
    /// Time since `watch` started.
    pub elapsed: Duration,
    /// Wall-clock time at the end.
    pub wall_clock: SystemTime,
    /// The kernel side's losses in all.
    pub losses: Vec<Loss>,
}

/// Names of processes, as a report asks for them.
pub(crate) type ProcessNames<'a> = &'a mut dyn FnMut(u32) -> Option<String>;

/// Folds scans into reports, remembering what was reported.
#[derive(Debug)]
pub(crate) struct Reporter {
    threshold: Duration,
    /// Idle waits are listed (`watch -p`).
    list_idle: bool,
    tracker: Tracker,
    /// The waits each thread had on each resource, to tell periodic waits from hangs.
    periodic: PeriodicWaits,
    found: Found,
    /// What is open after the last scan: the final report restates it.
    open: Changes,
    /// What the runtimes read about each process at the last scan that had it.
    runtime_views: BTreeMap<u32, Vec<RuntimeProcess>>,
    /// The last scan's findings and cycles in peer processes (`ProcessView::peer`: not
    /// watched, inspected because a watched thread waits on them): reported only as the
    /// links of a watched problem's wait chain, never tracked or counted.
    peer_context: Analysis,
}

impl Reporter {
    /// A reporter for waits past `threshold`. With `list_idle` (`watch -p`), idle waits are
    /// reported too, each once (they never change the exit status); without it, only beside
    /// a problem of their process.
    pub(crate) fn new(threshold: Duration, list_idle: bool) -> Self {
        let tracker = if list_idle {
            Tracker::listing_idle()
        } else {
            Tracker::default()
        };
        Self {
            threshold,
            list_idle,
            tracker,
            periodic: PeriodicWaits::default(),
            found: Found::default(),
            open: Changes::default(),
            runtime_views: BTreeMap::new(),
            peer_context: Analysis::default(),
        }
    }

    /// What was found so far.
    pub(crate) fn found(&self) -> Found {
        self.found
    }

    /// One scan of a live watch: the report of what changed, if anything did.
    pub(crate) fn scan(
        &mut self,
        input: &ScanInput,
        names: ProcessNames<'_>,
    ) -> Option<WatchReport> {
        let (changes, analysis) = self.fold(input);
        self.open = open_problems(analysis, self.list_idle);
        if changes.is_empty() {
            return None;
        }
        let common = Common::of_scan(input);
        Some(self.report(common, changes, false, names))
    }

    /// `--once`'s only scan: a dump of every blocked thread past the threshold, idle ones
    /// included, as the final report.
    pub(crate) fn once(&mut self, input: &ScanInput, names: ProcessNames<'_>) -> WatchReport {
        let (_, analysis) = self.fold(input);
        let everything = Changes {
            new_findings: analysis.findings,
            resolved: Vec::new(),
            new_cycles: analysis.cycles,
        };
        self.report(Common::of_scan(input), everything, true, names)
    }

    /// The last report of a live watch: a restatement of what is still blocked, so a run
    /// ended by Ctrl-C still says it.
    pub(crate) fn finish(&mut self, end: &EndInput, names: ProcessNames<'_>) -> WatchReport {
        let open = std::mem::take(&mut self.open);
        let common = Common {
            elapsed: end.elapsed,
            wall_clock: end.wall_clock,
            losses: end.losses.clone(),
        };
        let mut last = self.report(common, open, true, names);
        last.restated = true;
        last
    }

    /// Analyzes a scan and folds it into the tracker; what changed, and the whole analysis.
    fn fold(&mut self, input: &ScanInput) -> (Changes, Analysis) {
        let scanned = &input.scanned;
        for (pid, process) in &scanned.processes {
            if !process.runtime_views.is_empty() {
                self.runtime_views
                    .insert(*pid, process.runtime_views.clone());
            }
        }
        let mut analysis = analyze(&scanned.threads, &scanned.processes);
        let peers: BTreeSet<u32> = scanned
            .processes
            .values()
            .filter(|p| p.peer)
            .map(|p| p.pid)
            .collect();
        let (context_findings, findings) = std::mem::take(&mut analysis.findings)
            .into_iter()
            .partition(|f| peers.contains(&f.thread.pid));
        let (context_cycles, cycles) = std::mem::take(&mut analysis.cycles)
            .into_iter()
            .partition(|c| peers.contains(&c.pid));
        let mut analysis = Analysis { findings, cycles };
        self.peer_context = Analysis {
            findings: context_findings,
            cycles: context_cycles,
        };
        self.periodic
            .apply(&mut analysis.findings, &scanned.keys, input.now_ns);
        let changes = self
            .tracker
            .update(analysis.clone(), &scanned.keys, input.now_ns);
        self.found.add(&changes);
        (changes, analysis)
    }

    fn report(
        &self,
        common: Common,
        mut changes: Changes,
        is_final: bool,
        names: ProcessNames<'_>,
    ) -> WatchReport {
        let peer_processes = self.add_chains(&mut changes);
        let mut pids: BTreeSet<u32> = changes.new_findings.iter().map(|f| f.thread.pid).collect();
        pids.extend(changes.resolved.iter().map(|r| r.pid));
        pids.extend(changes.new_cycles.iter().map(|c| c.pid));
        let process_names: BTreeMap<u32, String> = pids
            .iter()
            .filter_map(|&pid| Some((pid, names(pid)?)))
            .collect();
        let runtime_views = pids
            .iter()
            .filter_map(|pid| Some((*pid, self.runtime_views.get(pid)?.clone())))
            .collect();
        WatchReport {
            elapsed: common.elapsed,
            wall_clock: common.wall_clock,
            threshold: self.threshold,
            process_names,
            runtime_views,
            new_findings: changes.new_findings,
            resolved: changes.resolved,
            new_cycles: changes.new_cycles,
            losses: common.losses,
            is_final,
            restated: false,
            peer_processes,
        }
    }

    /// Adds to `changes` the problems and cycles of the peer processes that the wait chains
    /// of its problems lead into; returns those processes.
    fn add_chains(&self, changes: &mut Changes) -> BTreeSet<u32> {
        let context = &self.peer_context;
        if context.findings.is_empty() {
            return BTreeSet::new();
        }
        let mut all = changes.new_findings.clone();
        all.extend(context.findings.iter().cloned());
        let peers: BTreeSet<u32> = context.findings.iter().map(|f| f.thread.pid).collect();
        let reached: BTreeSet<u32> = changes
            .new_findings
            .iter()
            .filter(|f| f.verdict.is_problem())
            .flat_map(|f| chain(&all, f))
            .map(|link| link.finding.thread.pid)
            .filter(|pid| peers.contains(pid))
            .collect();
        let in_reached = |pid: u32| reached.contains(&pid);
        changes.new_findings.extend(
            context
                .findings
                .iter()
                .filter(|f| in_reached(f.thread.pid) && f.verdict.is_problem())
                .cloned(),
        );
        changes
            .new_cycles
            .extend(context.cycles.iter().filter(|c| in_reached(c.pid)).cloned());
        reached
    }
}

/// The readings every report carries.
struct Common {
    elapsed: Duration,
    wall_clock: SystemTime,
    losses: Vec<Loss>,
}

impl Common {
    fn of_scan(input: &ScanInput) -> Self {
        Self {
            elapsed: input.elapsed,
            wall_clock: input.wall_clock,
            losses: input.losses.clone(),
        }
    }
}

/// Everything open in `analysis`: the problems with the idle threads of their processes (all
/// idle threads with `list_idle`), and the cycles (what the final report restates).
fn open_problems(analysis: Analysis, list_idle: bool) -> Changes {
    let problem_pids: BTreeSet<u32> = analysis
        .findings
        .iter()
        .filter(|f| f.verdict.is_problem())
        .map(|f| f.thread.pid)
        .collect();
    Changes {
        new_findings: analysis
            .findings
            .into_iter()
            .filter(|f| list_idle || problem_pids.contains(&f.thread.pid))
            .collect(),
        resolved: Vec::new(),
        new_cycles: analysis.cycles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{BlockedThread, ProcessView, Verdict},
        stall::fixtures::{self, loopback_client, mutex_waiter},
    };

    const CLIENT: u32 = 100;
    const SERVER: u32 = 500;

    /// A scan of a client (watched) waiting for a reply from a server (a peer process when
    /// `peer`) whose workers 510 and 511 deadlock; the server's 520 is idle.
    fn input(peer: bool) -> ScanInput {
        let mut idle = fixtures::futex_thread(SERVER, 520, "idle", 4_000_000_000);
        idle.since_ns = 2_000;
        let threads: Vec<BlockedThread> = vec![
            loopback_client(CLIENT, 101, 11, (SERVER, 21), 0),
            mutex_waiter(SERVER, 510, 0xa0, 511),
            mutex_waiter(SERVER, 511, 0xb0, 510),
            idle,
        ];
        let keys = threads.iter().map(|t| t.key()).collect();
        let mut server = fixtures::process(SERVER, &[SERVER, 510, 511, 520]);
        server.peer = peer;
        let processes: BTreeMap<u32, ProcessView> = [
            (CLIENT, fixtures::process(CLIENT, &[CLIENT, 101])),
            (SERVER, server),
        ]
        .into_iter()
        .collect();
        ScanInput {
            scanned: Scanned {
                threads,
                processes,
                keys,
            },
            now_ns: 10_000_000_000,
            elapsed: Duration::from_secs(5),
            wall_clock: SystemTime::UNIX_EPOCH,
            losses: Vec::new(),
        }
    }

    fn verdicts(report: &WatchReport) -> BTreeMap<u32, Verdict> {
        report
            .new_findings
            .iter()
            .map(|f| (f.thread.tid, f.verdict))
            .collect()
    }

    /// Check that under `-p CLIENT` a peer server's deadlock is reported as the end of the
    /// client's chain (its cycle and problem threads, not its idle thread), and that the exit
    /// status follows the client's stall (10), not the server's deadlock (11).
    #[test]
    fn peer_findings_only_as_chain_links() {
        let mut reporter = Reporter::new(Duration::from_secs(1), true);
        let report = reporter.once(&input(true), &mut |_| None);
        let v = verdicts(&report);
        assert_eq!(v.get(&101), Some(&Verdict::Stall));
        assert_eq!(v.get(&510), Some(&Verdict::Deadlock));
        assert_eq!(v.get(&511), Some(&Verdict::Deadlock));
        assert!(!v.contains_key(&520), "{v:?}");
        assert_eq!(report.new_cycles.len(), 1);
        assert_eq!(report.peer_processes, BTreeSet::from([SERVER]));
        assert_eq!(reporter.found().exit_code(), 10);

        // Live: the same on the first scan; the final report restates the chain too.
        let mut live = Reporter::new(Duration::from_secs(1), true);
        let first = live.scan(&input(true), &mut |_| None).expect("a report");
        assert_eq!(verdicts(&first).len(), 3);
        assert!(live.scan(&input(true), &mut |_| None).is_none());
        let end = EndInput {
            elapsed: Duration::from_secs(9),
            wall_clock: SystemTime::UNIX_EPOCH,
            losses: Vec::new(),
        };
        let last = live.finish(&end, &mut |_| None);
        assert_eq!(last.new_cycles.len(), 1);
        let text = crate::report::watch::text::render_text(&last);
        assert!(
            text.contains("still blocked at exit: 1 thread, 0 deadlocks:\n")
                && text.contains(
                    "  process 500 (not watched: a watched thread waits on it): deadlock:"
                ),
            "{text}"
        );
        assert_eq!(live.found().exit_code(), 10);
    }

    /// Check that host-wide (no peer processes) both processes are watched: the server's
    /// deadlock counts (exit status 11) and no process is marked as not watched.
    #[test]
    fn host_wide_everything_is_watched() {
        let mut reporter = Reporter::new(Duration::from_secs(1), false);
        let report = reporter.once(&input(false), &mut |_| None);
        assert!(report.peer_processes.is_empty());
        assert_eq!(verdicts(&report).get(&520), Some(&Verdict::Idle));
        assert_eq!(reporter.found().exit_code(), 11);
    }
}
