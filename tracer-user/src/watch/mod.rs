//! `stallwatch watch`: live stall and deadlock detection.
//!
//! Attach the BPF programs (in-flight waits only, with user registers), then read from `/proc`
//! every thread already asleep: those waits began before we attached and the kernel will not
//! tell us about them. Every interval: take the waits past the threshold from both sources,
//! gather what they wait on (futex owners, fds, unwound stacks), analyze (`stall`), and report
//! what changed: new stalls, ended stalls, new deadlock cycles. `--once` does the `/proc` part
//! only, without BPF: a non-stopping `gdb thread apply all bt` for blocking.

pub(crate) mod gather;
pub(crate) mod reporter;
mod snapshot;

use std::{
    fs, io,
    path::PathBuf,
    time::{Instant, SystemTime},
};

use crate::{
    capture::{CaptureError, Session},
    cli::WatchArgs,
    clock::monotonic_ns,
    model::Loss,
    procs,
    record::{RecordError, WatchRecorder},
    report::watch::{WatchReport, json, text},
    ticker::Ticker,
};
use gather::Gatherer;
pub use reporter::Found;
use reporter::{EndInput, Reporter, ScanInput};

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
    #[error("cannot write {path}")]
    OutputNotWritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a report failed.
    #[error("writing the report failed")]
    Write(#[source] io::Error),
    /// The recording (`--record`) could not be written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The async runtime or signal handlers could not be set up.
    #[error("setting up signal handling failed")]
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

/// Where reports go: the output, and the recording if one is made.
struct Output {
    json: bool,
    writer: Box<dyn io::Write>,
    recorder: Option<WatchRecorder>,
}

impl Output {
    /// Opens the output and the recording (before anything is attached, so that an
    /// unwritable file is the first thing said).
    fn open(args: &WatchArgs) -> Result<Self, WatchError> {
        let create = |path: &PathBuf| {
            fs::File::create(path).map_err(|source| WatchError::OutputNotWritable {
                path: path.clone(),
                source,
            })
        };
        let writer: Box<dyn io::Write> = match &args.output {
            Some(path) => Box::new(io::LineWriter::new(create(path)?)),
            None => Box::new(io::stdout()),
        };
        let recorder = match &args.record {
            Some(path) => Some(WatchRecorder::start(
                path,
                create(path)?,
                args.threshold,
                args.once,
                !args.pids.is_empty(),
            )?),
            None => None,
        };
        Ok(Self {
            json: args.json,
            writer,
            recorder,
        })
    }

    /// Records a scan and writes its report, if it made one.
    fn scan(&mut self, input: &ScanInput, report: Option<&WatchReport>) -> Result<(), WatchError> {
        if let Some(recorder) = &mut self.recorder {
            recorder.scan(input, report)?;
        }
        match report {
            Some(report) => self.write(report),
            None => Ok(()),
        }
    }

    /// Records the end and writes the final report.
    fn end(&mut self, end: &EndInput, report: &WatchReport) -> Result<(), WatchError> {
        if let Some(recorder) = &mut self.recorder {
            recorder.end(end, report)?;
        }
        self.write(report)
    }

    fn write(&mut self, report: &WatchReport) -> Result<(), WatchError> {
        write_report(report, self.json, &mut self.writer).map_err(WatchError::Write)
    }
}

/// Writes one report as text or as a JSON line.
pub(crate) fn write_report(
    report: &WatchReport,
    json: bool,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    if json {
        json::write_json_line(report, out)?;
    } else {
        out.write_all(text::render_text(report).as_bytes())?;
    }
    out.flush()
}

/// Runs `stallwatch watch`; returns what was found (the exit status).
pub fn run(args: &WatchArgs) -> Result<Found, WatchError> {
    if let Some(&pid) = args.pids.iter().find(|&&pid| !procs::exists(pid)) {
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
    let input = scan(&mut gatherer, None, started)?;
    let mut reporter = Reporter::new(args.threshold, !args.pids.is_empty());
    let report = reporter.once(&input, &mut |pid| gatherer.process_name(pid));
    output.scan(&input, Some(&report))?;
    Ok(reporter.found())
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

    let mut reporter = Reporter::new(args.threshold, !args.pids.is_empty());
    ticker.start(args.interval, args.duration);
    let mut scans: u64 = 0;
    while ticker.tick().await {
        scans += 1;
        if scans.is_multiple_of(STACK_SWEEP_SCANS) {
            session.sweep_stacks();
        }
        let input = scan(&mut gatherer, Some(&session), started)?;
        let report = reporter.scan(&input, &mut |pid| gatherer.process_name(pid));
        output.scan(&input, report.as_ref())?;
        if args.exit_on_deadlock && reporter.found().deadlock {
            break;
        }
        if !args.pids.is_empty() && !args.pids.iter().any(|&pid| procs::exists(pid)) {
            eprintln!("stallwatch: every watched process has exited");
            break;
        }
    }
    let end = EndInput {
        elapsed: started.elapsed(),
        wall_clock: SystemTime::now(),
        losses: losses(&session, &gatherer),
    };
    drop(session);
    let last = reporter.finish(&end, &mut |pid| gatherer.process_name(pid));
    output.end(&end, &last)?;
    Ok(reporter.found())
}

/// One scan: the waits past the threshold, gathered, with the readings of the scan.
fn scan(
    gatherer: &mut Gatherer,
    session: Option<&Session>,
    started: Instant,
) -> Result<ScanInput, WatchError> {
    let (traced, waiting_tids) = match session {
        Some(s) => s.in_flight(gatherer.threshold())?,
        None => (Vec::new(), Vec::new()),
    };
    let now_ns = monotonic_ns();
    let scanned = gatherer.scan(traced, &waiting_tids, now_ns);
    Ok(ScanInput {
        scanned,
        now_ns,
        elapsed: started.elapsed(),
        wall_clock: SystemTime::now(),
        losses: session.map(|s| losses(s, gatherer)).unwrap_or_default(),
    })
}

/// The kernel side's losses and the user frames dropped as no real frames, so far.
fn losses(session: &Session, gatherer: &Gatherer) -> Vec<Loss> {
    let mut counters = session.counters();
    gatherer.frame_drops().add_to(&mut counters);
    counters.losses()
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
