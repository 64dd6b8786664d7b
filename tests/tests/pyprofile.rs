//! `stallwatch profile --python` on CPython programs whose functions wait off-CPU for known
//! totals: the Python function names, put in the folded stacks, carry those totals. Root only.
//!
//! Ground truth comes from the workload (`workloads/py_offcpu_sites.py`): three threads call
//! `sleep_site` (time.sleep), `lock_site` (a timed `Lock.acquire` that never gets the lock)
//! and `recv_site` (a socket read fed every 20 ms), timing each call with the monotonic clock;
//! a fourth alternates `short_sleep_site` and `long_sleep_site`, whose native stacks are the
//! same (the per-thread stack memo must not merge their Python stacks).
//! It runs on Debian's CPython 3.11, pyenv's newest and 3.12 (an interpreter-frame chain each),
//! and pyenv's 2.7, 3.6, 3.8 and 3.10 (frame-object chains).
//! `workloads/py_new_threads.py` starts a thread per request whose waits are over long before
//! the tracer's next thread listing: BPF must find those threads itself. That test runs on
//! Debian's CPython 3.11 and pyenv's newest.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;
use stallwatch_tests::{
    REQUIRE_BPF_ENV, TempDir, assert_close,
    folded::{self, FoldedLine},
    pythons::{
        PyWorkload, Python, debian_and_newest, marker_line, pyenv_python, pyenv_pythons, scripts,
    },
    require_bpf,
    tracer::Tracer,
    workload_file,
};

/// The workload's script.
const SCRIPT: &str = "py_offcpu_sites.py";
/// Calls per thread: 100 waits of 20 ms (50 of 10 ms and 50 of 30 ms for the alternating
/// thread).
const ITERATIONS: &str = "100";
/// Python functions' totals may differ from the workload's clock by this fraction (the call's
/// own CPU time falls inside the workload's window, outside the off-CPU time).
const TOLERANCE: f64 = 0.02;
/// The site functions, the line (tag) each is at when it blocks, and how long one of its
/// waits is (µs): a wait the tracer reports lost (`drop_unmatched_wait`, a kernel quirk of the
/// test VM, see docs/architecture.md) may be missing from a total besides the tolerance.
const SITES: [(&str, &str, u64); 5] = [
    ("sleep_site", "sleep_site", 20_000),
    ("lock_site", "lock_site", 20_000),
    ("recv_site", "recv_site", 20_000),
    ("short_sleep_site", "short_sleep_site", 10_000),
    ("long_sleep_site", "long_sleep_site", 30_000),
];
/// The CPythons before 3.11 (a chain of frame objects) the totals are checked on: 2.7 (byte
/// strings, unsigned `co_lnotab`), the oldest 3.x read, one of 3.7–3.9 (one frame layout,
/// `co_lnotab`) and 3.10 (its own line table).
const FRAME_OBJECT_VERSIONS: [(u32, u32); 4] = [(2, 7), (3, 6), (3, 8), (3, 10)];
/// Their callers, one per site.
const CALLERS: [&str; 5] = [
    "run_sleeps",
    "run_lock_waits",
    "run_reads",
    "run_alternating",
    "run_alternating",
];

/// The workload, started and ready (its threads exist, held until [`Workload::go`]).
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    version: String,
}

impl Workload {
    fn start(python: &Python, script: &str, iterations: &str) -> Self {
        let mut child = Command::new(&python.path)
            .arg(workload_file(script))
            .arg(iterations)
            // `py_new_threads.py`'s native thread.
            .env("STALLWATCH_NATIVE_WAKER", env!("NATIVE_WAKER_SO"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script} on {python}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let ready = read_json(&mut stdout);
        assert_eq!(ready["ready"], true, "{ready}");
        let pid = u32::try_from(ready["pid"].as_u64().expect("pid")).expect("pid fits");
        let version = ready["version"].as_str().expect("version").to_owned();
        Self {
            child,
            stdin,
            stdout,
            pid,
            version,
        }
    }

    /// Lets the threads run, waits for them and returns the workload's done line (the
    /// measured totals (ns) by site in `sites`).
    fn go(&mut self) -> Value {
        let mut stdin = self.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("writing go");
        drop(stdin);
        let done = read_json(&mut self.stdout);
        let _ = self.child.wait();
        done
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("reading the workload");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("workload line {line:?}: {e}"))
}

/// One traced run: the folded lines and the tracer's stderr, and the workload's truths.
struct Run {
    lines: Vec<FoldedLine>,
    /// Each SVG box: its frame (the hover title, without the count) and its fill colour.
    svg_fills: Vec<(String, (u8, u8, u8))>,
    /// Waits the tracer reported lost (`drop_unmatched_wait`).
    lost_waits: u64,
    /// The summary's counters.
    counters: Value,
    stderr: String,
    /// The workload's done line.
    done: Value,
    truth: Value,
    pid: u32,
    version: String,
}

/// Runs the workload under `profile -p PID` plus `extra_args`, until it is done.
fn trace(python: &Python, iterations: &str, extra_args: &[&str]) -> Run {
    trace_script(python, SCRIPT, iterations, extra_args)
}

/// Runs workload `script` under `profile -p PID` plus `extra_args`, until it is done.
fn trace_script(python: &Python, script: &str, iterations: &str, extra_args: &[&str]) -> Run {
    let dir = TempDir::new("pyprofile");
    let folded_path = dir.join("out.folded");
    let summary_path = dir.join("summary.json");
    let svg_path = dir.join("out.svg");
    let svg = svg_path.display().to_string();
    let mut workload = Workload::start(python, script, iterations);
    let pid = workload.pid.to_string();
    let out = folded_path.display().to_string();
    let summary = summary_path.display().to_string();
    let mut args = vec![
        "profile",
        "-p",
        &pid,
        "-o",
        &out,
        "--summary-json",
        &summary,
        "-o",
        &svg,
    ];
    args.extend_from_slice(extra_args);
    let mut tracer = Tracer::spawn(&args);
    tracer.wait_tracing();
    let done = workload.go();
    let output = tracer.stop(libc::SIGINT);
    output.assert_code(0);
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path).expect("summary JSON written"),
    )
    .expect("summary is JSON");
    Run {
        svg_fills: svg_fills(&std::fs::read_to_string(&svg_path).expect("SVG written")),
        lines: folded::read(&folded_path),
        lost_waits: summary["counters"]["drop_unmatched_wait"]
            .as_u64()
            .unwrap_or(0),
        counters: summary["counters"].clone(),
        stderr: output.stderr,
        truth: done["sites"].clone(),
        done,
        pid: workload.pid,
        version: workload.version.clone(),
    }
}

/// The boxes of an inferno SVG: `<title>FRAME (N us, P%)</title><rect ... fill="rgb(R,G,B)"`.
fn svg_fills(svg: &str) -> Vec<(String, (u8, u8, u8))> {
    svg.split("<title>")
        .skip(1)
        .filter_map(|part| {
            let (title, rest) = part.split_once("</title>")?;
            let frame = title.rsplit_once(" (")?.0.to_owned();
            let rgb = rest.split_once("fill=\"rgb(")?.1.split_once(")\"")?.0;
            let mut parts = rgb.split(',').map(|c| c.trim().parse::<u8>().ok());
            let color = (parts.next()??, parts.next()??, parts.next()??);
            Some((frame, color))
        })
        .collect()
}

/// Whether a fill is the SVG's green for Python frames (inferno's `io` blues have more blue
/// than green).
fn is_python_green((r, g, b): (u8, u8, u8)) -> bool {
    g > r && g > b
}

/// Whether a frame name is a Python frame's (docs/formats.md): `f (file.py:LINE)`,
/// `f (file.py)` or `[python 0xADDR]`.
fn is_python_frame_name(frame: &str) -> bool {
    frame.contains(".py:") || frame.ends_with(".py)") || frame.starts_with("[python 0x")
}

/// The frame index of `function`'s Python frame in `line`, if any.
fn python_frame(line: &FoldedLine, function: &str) -> Option<usize> {
    let prefix = format!("{function} (");
    line.frames.iter().position(|f| f.starts_with(&prefix))
}

/// Native functions in which an eval loop waits to take the GIL back between two bytecodes
/// (2.7's periodic switch, 3.x's eval breaker), right under the Python frame it runs.
const GIL_TAKERS: [&str; 5] = [
    "PyThread_acquire_lock",
    "PyEval_RestoreThread",
    "take_gil",
    "eval_frame_handle_pending",
    "_Py_HandlePending",
];

/// Check that the lines with `site`'s Python frame carry the total the workload measured for
/// it within 2% (less waits the tracer reported lost, `wait_us` each), show the site at the
/// line of `script` marked `tag`, and are under a `caller` frame.
fn assert_site_attributed(
    run: &Run,
    script: &str,
    (site, tag): (&str, &str),
    wait_us: u64,
    caller: &str,
    context: &dyn Fn() -> String,
) {
    let lines: Vec<&FoldedLine> = run
        .lines
        .iter()
        .filter(|l| python_frame(l, site).is_some())
        .collect();
    let truth_us = run.truth[site].as_u64().expect("site total") / 1000;
    let traced_us = folded::total_us(lines.iter().copied());
    // Waits reported lost are allowed to be missing, and only missing.
    let lost_us = (run.lost_waits * wait_us).min(truth_us.saturating_sub(traced_us));
    assert_close(
        &format!(
            "{site} on CPython {} ({} waits lost)",
            run.version, run.lost_waits
        ),
        traced_us + lost_us,
        truth_us,
        TOLERANCE,
        &context(),
    );
    let line_no = marker_line(&workload_file(script), tag);
    let expected = format!("{site} ({script}:{line_no})");
    for line in &lines {
        let at = python_frame(line, site).expect("filtered");
        // The site is at its marked call, unless the wait was the interpreter taking the GIL
        // back between two bytecodes of the site (2.7 hands it over every 100 instructions,
        // at any line) or in the workload's clock read after the call.
        let gil_between_bytecodes = line.frames.get(at + 1).is_some_and(|f| {
            GIL_TAKERS
                .iter()
                .any(|taker| f.split(' ').next() == Some(*taker))
        });
        let in_clock = python_frame(line, "now_ns").is_some_and(|c| c > at);
        if !gil_between_bytecodes && !in_clock {
            assert_eq!(line.frames[at], expected, "{}", context());
        }
        assert!(
            python_frame(line, caller).is_some_and(|c| c < at),
            "{site}: no {caller} frame above it in {:?}\n{}",
            line.frames,
            context()
        );
    }
}

/// pyenv's 3.12 (its frame layout is neither 3.11's nor 3.13's) and the
/// [`FRAME_OBJECT_VERSIONS`], each if pyenv has it; under `STALLWATCH_REQUIRE_BPF=1` the
/// frame-object ones must be there.
fn pyenv_pythons_to_check(covered: &[(u32, u32, u32)]) -> Vec<Python> {
    let mut pythons: Vec<Python> = pyenv_pythons()
        .into_iter()
        .filter(|p| p.version.1 == 12 && !covered.contains(&p.version))
        .collect();
    for (major, minor) in FRAME_OBJECT_VERSIONS {
        match pyenv_python(major, minor) {
            Some(python) => pythons.push(python),
            None if std::env::var(REQUIRE_BPF_ENV).is_ok_and(|v| v == "1") => {
                panic!("{REQUIRE_BPF_ENV}=1 but no pyenv CPython {major}.{minor}")
            }
            None => eprintln!("no pyenv CPython {major}.{minor} here: not checked"),
        }
    }
    pythons
}

/// Check, on Debian's 3.11, pyenv's newest, 3.12, 3.10, 3.8, 3.6 and 2.7, that under `--python`
/// each site function's frame `site (py_offcpu_sites.py:LINE)` is in lines carrying its
/// measured off-CPU total within 2% (short and long sleeps apart although their native stacks
/// are the same), at the line of its blocking call, under its caller's frame, that the SVG
/// draws exactly the Python frames green, and that the tracer says which CPython it read.
#[test]
fn python_functions_carry_their_off_cpu_totals() {
    if !require_bpf() {
        return;
    }
    let mut pythons = debian_and_newest();
    let covered: Vec<(u32, u32, u32)> = pythons.iter().map(|p| p.version).collect();
    pythons.extend(pyenv_pythons_to_check(&covered));
    let mut checked: Vec<String> = Vec::new();
    for python in pythons {
        eprintln!("profile --python on {python}");
        let run = trace(&python, ITERATIONS, &["--python"]);
        let context = || {
            format!(
                "{python}\nfolded:\n{}stderr:\n{}",
                folded::dump(&run.lines, 60),
                run.stderr
            )
        };
        assert!(
            run.stderr.contains(&format!(
                "Python frames of PID {} (CPython {})",
                run.pid, run.version
            )),
            "{}",
            context()
        );
        // The SVG draws Python frames green and no other.
        assert!(
            run.svg_fills
                .iter()
                .any(|(frame, _)| frame.starts_with("sleep_site (")),
            "no sleep_site box in the SVG\n{}",
            context()
        );
        for (frame, color) in &run.svg_fills {
            assert_eq!(
                is_python_green(*color),
                is_python_frame_name(frame),
                "SVG box {frame:?} has fill {color:?}"
            );
        }
        for ((site, tag, wait_us), caller) in SITES.into_iter().zip(CALLERS) {
            assert_site_attributed(&run, SCRIPT, (site, tag), wait_us, caller, &context);
        }
        checked.push(run.version.clone());
    }
    eprintln!("Python frames checked on CPython {}", checked.join(", "));
    // Debian's 3.11 and, when pyenv has them, the frame-object versions were among them.
    let ran = |major: u32, minor: u32| {
        checked
            .iter()
            .any(|v| v.starts_with(&format!("{major}.{minor}.")))
    };
    assert!(ran(3, 11), "{checked:?}");
    for (major, minor) in FRAME_OBJECT_VERSIONS {
        assert_eq!(
            ran(major, minor),
            pyenv_python(major, minor).is_some(),
            "{major}.{minor} in {checked:?}"
        );
    }
}

/// Check that without `--python` no Python frame appears (the default is unchanged).
#[test]
fn python_frames_are_opt_in() {
    if !require_bpf() {
        return;
    }
    let python = stallwatch_tests::pythons::debian_python();
    eprintln!("profile without --python on {python}");
    let run = trace(&python, "5", &[]);
    assert!(
        !run.lines.is_empty(),
        "no folded lines; stderr:\n{}",
        run.stderr
    );
    for line in &run.lines {
        assert!(
            line.frames.iter().all(|f| !f.contains(".py:")),
            "a Python frame without --python: {:?}",
            line.frames
        );
    }
}

/// The thread-per-request workload: a new thread every 300 ms, each waiting at once.
const NEW_THREADS_SCRIPT: &str = "py_new_threads.py";
/// Requests it serves, one new thread each.
const REQUESTS: &str = "12";
/// Its site functions, each waiting 20 ms once per request, both called by `handle_request`.
const REQUEST_SITES: [&str; 2] = ["request_sleep_site", "request_lock_site"];
/// How long one request site's wait is (µs), for waits the tracer reports lost.
const REQUEST_WAIT_US: u64 = 20_000;

/// Check, on Debian's 3.11 and pyenv's newest, that under `--python` threads started during
/// the trace (one per request, each waiting within its first milliseconds and done waiting
/// after about 45 ms, younger than the 200 ms thread listing) have Python frames: each site
/// function's frame, at its blocking line under `handle_request`, is in lines carrying its
/// measured total within 2%; that BPF found those threads itself (`python_threads_found`);
/// and that the process's native thread (`native_waker.c`), which has no thread state, was
/// not looked up again at each of its wake-ups (`python_thread_not_found` well below them).
#[test]
fn new_threads_have_python_frames_from_their_first_wait() {
    if !require_bpf() {
        return;
    }
    for python in debian_and_newest() {
        eprintln!("profile --python on {python}, a new thread per request");
        let run = trace_script(&python, NEW_THREADS_SCRIPT, REQUESTS, &["--python"]);
        let context = || {
            format!(
                "{python}\nfolded:\n{}counters: {}\nstderr:\n{}",
                folded::dump(&run.lines, 60),
                run.counters,
                run.stderr
            )
        };
        assert!(
            run.stderr.contains(&format!(
                "Python frames of PID {} (CPython {})",
                run.pid, run.version
            )),
            "{}",
            context()
        );
        for site in REQUEST_SITES {
            assert_site_attributed(
                &run,
                NEW_THREADS_SCRIPT,
                (site, site),
                REQUEST_WAIT_US,
                "handle_request",
                &context,
            );
        }
        let counter = |name: &str| run.counters[name].as_u64().unwrap_or(0);
        let requests: u64 = run.done["threads"].as_u64().expect("threads");
        assert!(
            counter("python_threads_found") * 2 >= requests,
            "BPF found fewer than half of the {requests} request threads\n{}",
            context()
        );
        let wakeups = run.done["native_wakeups"].as_u64().expect("native_wakeups");
        assert!(
            wakeups >= 100,
            "the native thread woke only {wakeups} times"
        );
        assert!(
            counter("python_thread_not_found") * 5 < wakeups,
            "the native thread was looked up at too many of its {wakeups} wake-ups\n{}",
            context()
        );
    }
}

/// Check, on Debian's 3.11 and pyenv's newest, that in a process with two interpreters
/// (`py_subinterp.py`, its subinterpreter thread started after the tracer and blocking at
/// once) the new thread's wait has Python frames under `--python`: the subinterpreter's,
/// `blocked_in_subinterpreter (<string>:4)`, or, when the thread was first seen before it
/// entered the subinterpreter, its main interpreter's `run_in_subinterpreter` (the entry is
/// corrected by the next thread listing, after the wait began), and the main thread its own.
#[test]
fn new_threads_in_subinterpreters_have_their_frames() {
    if !require_bpf() {
        return;
    }
    for python in debian_and_newest() {
        eprintln!("profile --python on {python}, a subinterpreter in a new thread");
        let dir = TempDir::new("pyprofile-subinterp");
        let folded_path = dir.join("out.folded");
        let out = folded_path.display().to_string();
        let workload = PyWorkload::spawn(&python, scripts::SUBINTERP, &["--delay-ms", "1500"]);
        let pid = workload.pid().to_string();
        let mut tracer = Tracer::spawn(["profile", "-p", &pid, "--python", "-o", &out]);
        tracer.wait_tracing();
        let facts = workload.facts();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let output = tracer.stop(libc::SIGINT);
        output.assert_code(0);
        let lines = folded::read(&folded_path);
        let context = || {
            format!(
                "{python}\nfacts: {facts}\nfolded:\n{}stderr:\n{}",
                folded::dump(&lines, 60),
                output.stderr
            )
        };
        assert!(
            output.stderr.contains(&format!(
                "(CPython {})",
                facts["python"]["version"].as_str().expect("version")
            )),
            "{}",
            context()
        );
        let sub_line = facts["sub_line"].as_u64().expect("sub_line");
        let run_line = workload.line("main-run-string");
        let has = |frame: &str| lines.iter().any(|l| l.frames.iter().any(|f| f == frame));
        let in_sub = format!("blocked_in_subinterpreter (<string>:{sub_line})");
        let in_main = format!("run_in_subinterpreter ({}:{run_line})", scripts::SUBINTERP);
        assert!(
            has(&in_sub) || has(&in_main),
            "neither {in_sub:?} nor {in_main:?}\n{}",
            context()
        );
        eprintln!(
            "  the subinterpreter thread's wait had {} frames",
            if has(&in_sub) {
                "the subinterpreter's"
            } else {
                "its main interpreter's"
            }
        );
        let main_line = workload.line("main-read");
        let main = format!(
            "blocked_in_main_interpreter ({}:{main_line})",
            scripts::SUBINTERP
        );
        assert!(has(&main), "no {main:?}\n{}", context());
    }
}
