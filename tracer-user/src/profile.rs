//! `stallwatch profile`: validate outputs, start the capture (and COMMAND), trace until the
//! duration ends, a signal arrives or COMMAND exits, then symbolize and write every output.
//!
//! Errors are a typed enum whose [`ProfileError::exit_code`] is the documented exit status.

use std::{
    fs, io,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    capture::{CaptureError, Session, UnwindMode},
    cli::{BlockRangeError, ProfileArgs, ProfileOutputs, UnknownFormat},
    command::{CommandError, GatedChild},
    export::{Format, folded, svg},
    model::Capture,
    procs::Procs,
    record::{ProfileRecorder, ProfileRun, RecordError},
    report::summary::Summary,
    runtime::PythonStacks,
    stacks::{Sites, Stacks, TextRangesGiven},
    ticker::Ticker,
};

/// How often new processes are picked up for symbolization and COMMAND is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a profile run failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// An output's format cannot be told.
    #[error(transparent)]
    Format(#[from] UnknownFormat),
    /// `-m` is above `-M`.
    #[error(transparent)]
    BlockRange(#[from] BlockRangeError),
    /// The capture could not start or be drained.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An output file cannot be written (checked before tracing starts).
    #[error("cannot write {path}")]
    OutputNotWritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing an output failed after tracing.
    #[error("writing {path} failed")]
    Write {
        /// The file (or "stdout").
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Rendering the SVG failed.
    #[error("rendering the flamegraph failed")]
    Svg(#[from] svg::SvgError),
    /// The recording (`--record`) could not be written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// COMMAND could not be started.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The async runtime or signal handlers could not be set up.
    #[error("setting up signal handling failed")]
    Runtime(#[source] io::Error),
}

impl ProfileError {
    /// The process exit status for this error (documented in `--help` and README).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Format(_) | Self::BlockRange(_) => 2,
            Self::Capture(e) if e.is_permission() => 3,
            Self::Capture(CaptureError::KernelUnsupported(_)) => 4,
            Self::Capture(CaptureError::PidNotFound(_) | CaptureError::TidNotFound(_)) => 5,
            Self::OutputNotWritable { .. } => 6,
            Self::Command(_) => 7,
            _ => 1,
        }
    }
}

/// Runs `stallwatch profile`.
pub fn run(args: &ProfileArgs) -> Result<(), ProfileError> {
    if let Some(e) = args.block_range_error() {
        return Err(e.into());
    }
    let outputs = args.outputs()?;
    check_writable(&outputs, args.record.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProfileError::Runtime)?;
    // Resolved with the maps as remembered while tracing (read again only for an address
    // outside them, and only from the same process): a pid reused since is not confused.
    let mut stacks = Stacks::new();
    let (capture, mut procs, python) = runtime.block_on(trace(args, &mut stacks))?;
    let mut samples = stacks.resolve_capture(&mut procs, &capture);
    if let Some(mut python) = python {
        for (pid, version) in python.versions() {
            eprintln!("Python frames of PID {pid} (CPython {version})");
        }
        for (pid, version) in python.unsupported() {
            eprintln!(
                "No Python frames of PID {pid}: no frame layout for CPython {version} \
                 (2.7 and 3.6-3.13 have one)"
            );
        }
        for resolved in &mut samples {
            let sample = &resolved.sample;
            resolved.user = python.splice(sample.pid, &resolved.user, &sample.python_stack);
        }
    }
    let mut counters = capture.counters.clone();
    stacks.drops().add_to(&mut counters);
    let run = ProfileRun {
        title: svg_title(args),
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        duration: capture.duration,
        counters,
        samples,
        process_names: capture.process_names,
    };
    if let Some(path) = &args.record {
        let folded = &outputs.folded;
        ProfileRecorder::write(path, &run, folded.user_stacks, folded.kernel_stacks)?;
    }
    write_outputs(&outputs, &run)
}

/// Fails early, before anything is traced, if an output cannot be created.
fn check_writable(outputs: &ProfileOutputs, record: Option<&PathBuf>) -> Result<(), ProfileError> {
    let paths = outputs
        .files
        .iter()
        .map(|(p, _)| p)
        .chain(outputs.summary_json.iter())
        .chain(record);
    for path in paths {
        let existed = path.exists();
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ProfileError::OutputNotWritable {
                path: path.clone(),
                source,
            })?;
        if !existed {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

/// Traces until the duration ends, SIGINT/SIGTERM, or COMMAND exits.
async fn trace(
    args: &ProfileArgs,
    stacks: &mut Stacks,
) -> Result<(Capture, Procs, Option<PythonStacks>), ProfileError> {
    let mut ticker = Ticker::new().map_err(ProfileError::Runtime)?;
    let config = args.capture_config();
    let mut procs = Procs::new();
    for &pid in &config.pids {
        procs.remember(pid);
    }
    let mut session = Session::start(&config)?;

    let mut child = None;
    if !args.command.is_empty() {
        let gated = GatedChild::spawn(&args.command)?;
        session.add_process(gated.pid())?;
        child = Some(gated.release()?);
    }
    // Processes named on the command line are re-cached now and then: libraries they load
    // later must still resolve if they exit before the end (re-caching unchanged maps is cheap).
    let mut watched: Vec<u32> = config.pids.clone();
    watched.extend(child.as_ref().map(|c| c.id()));
    // The Python threads that exist now are listed before tracing is announced, so their
    // frames are recorded from the first wait.
    let mut python = args.python.then(PythonStacks::new);
    let mut python_stacks_seen = std::collections::HashSet::new();
    // Where Python threads are looked for: the processes named, and (host-wide, or COMMAND's
    // children) every process as it appears, while it lives.
    let mut python_pids = watched.clone();
    if let Some(python) = python.as_mut() {
        list_python_threads(&mut session, python, &python_pids)?;
    }
    eprintln!("{}", tracing_line(args));
    ticker.start(POLL_INTERVAL, args.duration);
    let mut ticks: u64 = 0;
    let mut sites = Sites::default();
    let mut text_ranges = (config.unwind != UnwindMode::Fp).then(TextRangesGiven::default);
    while ticker.tick().await {
        ticks += 1;
        procs.begin_scan();
        if ticks % 10 == 2 {
            for &pid in &watched {
                procs.remember(pid);
                give_text_ranges(&mut session, &mut procs, text_ranges.as_mut(), pid)?;
            }
        }
        for pid in session.new_processes() {
            procs.remember(pid);
            give_text_ranges(&mut session, &mut procs, text_ranges.as_mut(), pid)?;
            if python.is_some() && !python_pids.contains(&pid) {
                python_pids.push(pid);
            }
        }
        if let Some(python) = python.as_mut()
            && ticks % PYTHON_THREADS_EVERY_TICKS == 1
        {
            // An exited process's threads are forgotten by BPF (its code objects' names are
            // kept for the end).
            let (alive, gone): (Vec<u32>, Vec<u32>) = std::mem::take(&mut python_pids)
                .into_iter()
                .partition(|&pid| crate::procs::exists(pid));
            for pid in gone {
                session.set_python_process(pid, None)?;
                session.set_python_threads(pid, &[])?;
            }
            python_pids = alive;
            list_python_threads(&mut session, python, &python_pids)?;
            learn_python_stacks(&session, python, &mut python_stacks_seen);
        }
        for copy in session.new_sites() {
            stacks.add_site(&mut sites, &mut procs, &copy);
            // Unwinding re-reads the maps when the stack leaves the known code.
            give_text_ranges(&mut session, &mut procs, text_ranges.as_mut(), copy.pid)?;
        }
        if let Some(c) = child.as_mut()
            && matches!(c.try_wait(), Ok(Some(_)))
        {
            break;
        }
    }
    session.detach();
    procs.begin_scan();
    for pid in session.new_processes() {
        procs.remember(pid);
    }
    if let Some(python) = python.as_mut() {
        learn_python_stacks(&session, python, &mut python_stacks_seen);
    }
    for copy in session.new_sites() {
        stacks.add_site(&mut sites, &mut procs, &copy);
    }
    let mut capture = session.finish(sites.stacks())?;
    sites.add_to(&mut capture.counters);
    // Host-wide traces would otherwise show stallwatch's own idle threads.
    let own_pid = std::process::id();
    capture.samples.retain(|s| s.pid != own_pid);
    let pids: std::collections::BTreeSet<u32> = capture.samples.iter().map(|s| s.pid).collect();
    for pid in pids {
        if let Some(name) = procs.name(pid) {
            capture.process_names.insert(pid, name);
        }
    }
    if let Some(mut c) = child {
        // The command may still run if we were interrupted; it got the same SIGINT from the
        // terminal, so wait briefly rather than leave a zombie.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while matches!(c.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    Ok((capture, procs, python))
}

/// Tells BPF where process `pid`'s code is when that changed since it was last told
/// (`--unwind dwarf|auto`, `given` is `None` otherwise), so site ids hash return addresses only.
fn give_text_ranges(
    session: &mut Session,
    procs: &mut Procs,
    given: Option<&mut TextRangesGiven>,
    pid: u32,
) -> Result<(), ProfileError> {
    if let Some(given) = given
        && let Some(maps) = procs.maps(pid)
        && let Some(ranges) = given.update(pid, &maps)
    {
        session.set_text_ranges(pid, &ranges)?;
    }
    Ok(())
}

/// How often (in ticks) the Python threads of traced processes are listed again for BPF
/// (`--python`). Threads started in between are found by BPF itself, in the thread lists
/// whose place [`list_python_threads`] gave it.
const PYTHON_THREADS_EVERY_TICKS: u64 = 2;

/// Names the code objects of the Python stacks BPF stored since the last call, while their
/// processes still run (`--python`).
fn learn_python_stacks(
    session: &Session,
    python: &mut PythonStacks,
    seen: &mut std::collections::HashSet<u64>,
) {
    for (pid, frames) in session.new_python_stacks(seen) {
        python.learn(pid, &frames);
    }
}

/// Tells BPF where the Python threads of the CPython processes among `pids` keep their
/// frames, and where their thread lists are for threads started before the next call
/// (`--python`).
fn list_python_threads(
    session: &mut Session,
    python: &mut PythonStacks,
    pids: &[u32],
) -> Result<(), ProfileError> {
    for &pid in pids {
        if let Some(process) = python.process(pid) {
            session.set_python_process(pid, Some(&process))?;
        }
        if let Some(threads) = python.threads(pid) {
            session.set_python_threads(pid, &threads)?;
        }
    }
    Ok(())
}

/// bcc's "Tracing off-CPU time (us) of ... Hit Ctrl-C to end." line, which scripts wait for.
fn tracing_line(args: &ProfileArgs) -> String {
    let mut what = Vec::new();
    if !args.pids.is_empty() {
        what.push(format!("PID {}", join(&args.pids)));
    }
    if !args.tids.is_empty() {
        what.push(format!("TID {}", join(&args.tids)));
    }
    if !args.command.is_empty() {
        what.push(format!("command {:?}", args.command.join(" ")));
    }
    if let Some(cg) = &args.cgroup {
        what.push(format!("cgroup {}", cg.display()));
    }
    let what = if what.is_empty() {
        "all threads".to_string()
    } else {
        what.join(", ")
    };
    let stacks = match (args.user_stacks_only, args.kernel_stacks_only) {
        (true, _) => "user",
        (_, true) => "kernel",
        _ => "user + kernel",
    };
    let end = match args.duration {
        Some(d) => format!(" for {} secs", d.as_secs_f64()),
        None => String::new(),
    };
    format!("Tracing off-CPU time (us) of {what} by {stacks} stack{end}... Hit Ctrl-C to end.")
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Writes every output of a profile run (live or replayed): folded stacks to the files or
/// stdout, SVGs, the summary on stderr and as JSON.
pub(crate) fn write_outputs(
    outputs: &ProfileOutputs,
    run: &ProfileRun,
) -> Result<(), ProfileError> {
    let lines = folded::folded_lines(&run.samples, &outputs.folded);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ProfileError::Write { path, source }
    };
    if outputs.files.is_empty() {
        let mut stdout = io::stdout().lock();
        folded::write_folded(&lines, &mut stdout)
            .and_then(|_| stdout.flush())
            .map_err(write_err(Path::new("stdout")))?;
    }
    for (path, format) in &outputs.files {
        let file = fs::File::create(path).map_err(write_err(path))?;
        let mut file = io::BufWriter::new(file);
        match format {
            Format::Folded => folded::write_folded(&lines, &mut file).map_err(write_err(path))?,
            Format::Svg => {
                let title = outputs.title.as_deref().unwrap_or(&run.title);
                let interpreted = folded::interpreted_names(&run.samples, &outputs.folded);
                let subtitle = Some(command_line(run));
                svg::write_svg(&lines, title, subtitle.as_deref(), &interpreted, &mut file)?;
            }
        }
        file.flush().map_err(write_err(path))?;
    }
    let summary = summary(run);
    eprint!("{}", summary.render_text(10));
    for (path, _) in &outputs.files {
        eprintln!("Wrote {}", path.display());
    }
    if let Some(path) = &outputs.summary_json {
        let json = serde_json::to_vec_pretty(&summary)
            .map_err(io::Error::from)
            .map_err(write_err(path))?;
        fs::write(path, json).map_err(write_err(path))?;
    }
    Ok(())
}

/// The end-of-run summary of a profile run.
pub(crate) fn summary(run: &ProfileRun) -> Summary {
    let capture = Capture {
        samples: run.samples.iter().map(|s| s.sample.clone()).collect(),
        counters: run.counters.clone(),
        duration: run.duration,
        process_names: run.process_names.clone(),
    };
    Summary::from_capture(&capture, |_| None)
}

/// The command line of the run as the SVG's subtitle: `stallwatch profile -p 185 -d 10s`.
fn command_line(run: &ProfileRun) -> String {
    let mut args = run.command_line.iter();
    let program = args
        .next()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("stallwatch");
    std::iter::once(program)
        .chain(args.map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn svg_title(args: &ProfileArgs) -> String {
    let line = tracing_line(args);
    let what = line
        .strip_prefix("Tracing off-CPU time (us) of ")
        .and_then(|s| s.split(" by ").next())
        .unwrap_or("all threads");
    format!("Off-CPU time of {what} (us)")
}
