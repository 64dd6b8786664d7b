//! `stallwatch watch`: live stall and deadlock detection.
//!
//! Attach the BPF programs (in-flight waits only, with user registers), then read from `/proc`
//! every thread already asleep: those waits began before we attached and the kernel will not
//! tell us about them. Every interval: take the waits past the threshold from both sources,
//! gather what they wait on (futex owners, fds, unwound stacks), analyze (`stall`), and report
//! what changed: new stalls, ended stalls, new deadlock cycles. `--once` does the `/proc` part
//! only, without BPF: a non-stopping `gdb thread apply all bt` for blocking.

mod gather;
mod snapshot;

use std::{
    collections::BTreeSet,
    fs, io,
    io::Write as _,
    path::PathBuf,
    time::{Instant, SystemTime},
};

use crate::{
    capture::{CaptureError, Session},
    cli::WatchArgs,
    clock::monotonic_ns,
    report::watch::{WatchReport, json, text},
    stall::{
        analyze::analyze,
        model::Analysis,
        tracker::{Changes, Tracker},
    },
    ticker::Ticker,
};
use gather::Gatherer;

/// Every this many scans, stacks no wait refers to any more are deleted from the kernel's
/// store, so a long host-wide watch does not fill it.
const STACK_SWEEP_SCANS: u64 = 10;

/// Why `watch` failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The capture could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A `-p` process does not exist (checked for `--once` too).
    #[error("no process with pid {0}")]
    PidNotFound(u32),
    /// The output file cannot be written (checked before anything else).
    #[error("cannot write {path}: {source}")]
    OutputNotWritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a report failed.
    #[error("writing the report failed: {0}")]
    Write(#[source] io::Error),
    /// The async runtime or signal handlers could not be set up.
    #[error("setting up signal handling failed: {0}")]
    Runtime(#[source] io::Error),
}

impl WatchError {
    /// The process exit status (documented in `--help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Capture(e) if e.is_permission() => 3,
            Self::Capture(CaptureError::KernelUnsupported(_)) => 4,
            Self::Capture(CaptureError::PidNotFound(_)) | Self::PidNotFound(_) => 5,
            Self::OutputNotWritable { .. } => 6,
            _ => 1,
        }
    }
}

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

/// Where reports go.
struct Output {
    json: bool,
    writer: Box<dyn io::Write>,
}

impl Output {
    fn open(args: &WatchArgs) -> Result<Self, WatchError> {
        let writer: Box<dyn io::Write> = match &args.output {
            Some(path) => Box::new(io::LineWriter::new(fs::File::create(path).map_err(
                |source| WatchError::OutputNotWritable {
                    path: path.clone(),
                    source,
                },
            )?)),
            None => Box::new(io::stdout()),
        };
        Ok(Self {
            json: args.json,
            writer,
        })
    }

    fn write(&mut self, report: &WatchReport) -> Result<(), WatchError> {
        if self.json {
            json::write_json_line(report, &mut self.writer).map_err(WatchError::Write)?;
        } else {
            self.writer
                .write_all(text::render_text(report).as_bytes())
                .map_err(WatchError::Write)?;
        }
        self.writer.flush().map_err(WatchError::Write)
    }
}

/// Whether process `pid` still exists.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `stallwatch watch`; returns what was found (the exit status).
pub fn run(args: &WatchArgs) -> Result<Found, WatchError> {
    if let Some(&pid) = args.pids.iter().find(|&&pid| !process_exists(pid)) {
        return Err(WatchError::PidNotFound(pid));
    }
    let mut output = Output::open(args)?;
    if args.once {
        return once(args, &mut output);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WatchError::Runtime)?;
    runtime.block_on(watch(args, &mut output))
}

/// `--once`: the `/proc` snapshot, analyzed, reported, without BPF.
fn once(args: &WatchArgs, output: &mut Output) -> Result<Found, WatchError> {
    let started = Instant::now();
    let mut gatherer = Gatherer::new(args.pids.clone(), args.threshold);
    gatherer.take_snapshot(monotonic_ns());
    let mut tracker = Tracker::default();
    let (changes, analysis) = scan(&mut gatherer, &mut tracker, None)?;
    let mut found = Found::default();
    found.add(&changes);
    // A dump: every blocked thread past the threshold, idle ones included.
    let everything = Changes {
        new_findings: analysis.findings,
        resolved: Vec::new(),
        new_cycles: analysis.cycles,
    };
    output.write(&report(args, &gatherer, started, everything, true, None))?;
    Ok(found)
}

async fn watch(args: &WatchArgs, output: &mut Output) -> Result<Found, WatchError> {
    let mut ticker = Ticker::new().map_err(WatchError::Runtime)?;
    let started = Instant::now();
    let mut session = Session::start(&args.capture_config())?;
    // After attaching: every wait that begins from now on is traced, every earlier one is
    // still asleep now and is in the snapshot.
    let mut gatherer = Gatherer::new(args.pids.clone(), args.threshold);
    gatherer.take_snapshot(monotonic_ns());
    eprintln!("{}", watching_line(args));

    let mut tracker = Tracker::default();
    let mut found = Found::default();
    let mut open = Changes::default();
    ticker.start(args.interval, args.duration);
    let mut scans: u64 = 0;
    while ticker.tick().await {
        scans += 1;
        if scans.is_multiple_of(STACK_SWEEP_SCANS) {
            session.sweep_stacks();
        }
        let (changes, analysis) = scan(&mut gatherer, &mut tracker, Some(&session))?;
        open = open_problems(analysis);
        found.add(&changes);
        if !changes.is_empty() {
            let losses = session.counters().losses();
            output.write(&report(
                args,
                &gatherer,
                started,
                changes,
                false,
                Some(losses),
            ))?;
        }
        if args.exit_on_deadlock && found.deadlock {
            break;
        }
        if !args.pids.is_empty() && !args.pids.iter().any(|&pid| process_exists(pid)) {
            eprintln!("stallwatch: every watched process has exited");
            break;
        }
    }
    let losses = session.counters().losses();
    drop(session);
    // The last report restates what is still blocked, so a run ended by Ctrl-C still says it.
    let mut last = report(args, &gatherer, started, open, true, Some(losses));
    last.restated = true;
    output.write(&last)?;
    Ok(found)
}

/// One scan: waits past the threshold, analyzed, folded into the tracker. Returns what
/// changed, and the whole analysis.
fn scan(
    gatherer: &mut Gatherer,
    tracker: &mut Tracker,
    session: Option<&Session>,
) -> Result<(Changes, Analysis), WatchError> {
    let (traced, waiting_tids) = match session {
        Some(s) => s.in_flight(gatherer.threshold())?,
        None => (Vec::new(), Vec::new()),
    };
    let now_ns = monotonic_ns();
    let scanned = gatherer.scan(traced, &waiting_tids, now_ns);
    let analysis = analyze(scanned.threads, &scanned.processes);
    let changes = tracker.update(analysis.clone(), &scanned.keys, now_ns);
    Ok((changes, analysis))
}

/// Everything open in `analysis`: the problems with the idle threads of their processes, and
/// the cycles (what the final report restates).
fn open_problems(analysis: Analysis) -> Changes {
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
            .filter(|f| problem_pids.contains(&f.thread.pid))
            .collect(),
        resolved: Vec::new(),
        new_cycles: analysis.cycles,
    }
}

fn report(
    args: &WatchArgs,
    gatherer: &Gatherer,
    started: Instant,
    changes: Changes,
    is_final: bool,
    losses: Option<Vec<(&'static str, u64)>>,
) -> WatchReport {
    let mut pids: BTreeSet<u32> = changes.new_findings.iter().map(|f| f.thread.pid).collect();
    pids.extend(changes.resolved.iter().map(|r| r.pid));
    pids.extend(changes.new_cycles.iter().map(|c| c.pid));
    WatchReport {
        elapsed: started.elapsed(),
        wall_clock: SystemTime::now(),
        threshold: args.threshold,
        process_names: pids
            .into_iter()
            .map(|pid| (pid, gatherer.process_name(pid)))
            .collect(),
        new_findings: changes.new_findings,
        resolved: changes.resolved,
        new_cycles: changes.new_cycles,
        losses: losses.unwrap_or_default(),
        is_final,
        restated: false,
    }
}

/// The line scripts wait for once the programs are attached.
fn watching_line(args: &WatchArgs) -> String {
    let what = if args.pids.is_empty() {
        "all processes".to_string()
    } else {
        let pids: Vec<String> = args.pids.iter().map(u32::to_string).collect();
        format!("PID {}", pids.join(","))
    };
    format!(
        "Watching {what} for waits over {:.1} s (every {:.1} s)... Hit Ctrl-C to end.",
        args.threshold.as_secs_f64(),
        args.interval.as_secs_f64()
    )
}
