//! JIT code named through the runtimes' perf maps (`/tmp/perf-PID.map`): Node
//! (`--perf-basic-prof`), the JVM (`jcmd PID Compiler.perfmap`) and CPython 3.12+ (`-X perf`).
//! Each workload blocks in a named function of its language, whose code only the perf map
//! names. Root only.
//!
//! `profile` walks user stacks with frame pointers only: through HotSpot's compiled code kept
//! with `-XX:+PreserveFramePointer` and glibc's `read` (which leaves the frame pointer alone)
//! it reaches the Java method, but the walks of Node and of pyenv's CPython stop in glibc's
//! futex wait and `read` (no frame pointers above them). Those two are checked with
//! `watch --once`, which unwinds with DWARF and resolves names with the same symbolizer.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, compile_java,
    folded::{self, FoldedLine},
    pythons::{Python, pyenv_pythons},
    require_bpf,
    tracer::run,
    watch_report::WatchOutput,
    watch_workloads::{RunningWorkload, once_json},
    workload_file,
};

/// How long a workload may take to start and print `ready`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `profile` run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// One wait of the watched workloads: longer than `once_json`'s 1 s threshold plus the time
/// to reach it.
const LONG_WAIT_MS: &str = "6000";
/// One wait of the workloads `profile` traces (it charges a wait when it ends), ms.
const SHORT_WAIT_MS: &str = "200";
/// Time to let a watched workload's wait pass the 1 s threshold.
const PAST_THRESHOLD: Duration = Duration::from_millis(1500);

/// The perf map of `pid` as seen from here (the workloads share our mount namespace).
fn perf_map_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{pid}.map"))
}

/// Removes a workload's perf map when the test ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        let _ = fs::remove_file(self.0.with_extension("map.moved"));
    }
}

/// The user frames of thread `tid` in a `watch --once` report, innermost first, as
/// `(kind, symbol)`.
fn user_frames(report: &WatchOutput, tid: u32) -> Vec<(String, String)> {
    let thread: Vec<&Value> = report.thread(tid);
    let thread = thread
        .first()
        .unwrap_or_else(|| panic!("thread {tid} not reported:\n{}", report.dump()));
    thread["user_stack"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                f["symbol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Whether a `jit` frame's symbol starts with `prefix`.
fn has_jit_frame(frames: &[(String, String)], prefix: &str) -> bool {
    frames
        .iter()
        .any(|(kind, symbol)| kind == "jit" && symbol.starts_with(prefix))
}

/// `watch -p PID --once --json` on a workload's main thread (tid = pid): its user frames.
fn once_frames(pid: u32, dir: &TempDir, name: &str) -> Vec<(String, String)> {
    let (result, report) = once_json(pid, &dir.join(name));
    assert!(
        result.code.is_some(),
        "watch --once did not finish: {}",
        result.stderr
    );
    user_frames(&report, pid)
}

/// `profile -p PID -d 2s --unwind MODE -o DIR/NAME.folded`, checked to exit 0: its folded
/// lines.
fn profile_folded(pid: u32, dir: &TempDir, name: &str, unwind: &str) -> Vec<FoldedLine> {
    let folded_path = dir.join(&format!("{name}.folded"));
    let pid_arg = pid.to_string();
    let out = run(
        [
            "profile",
            "-p",
            &pid_arg,
            "-d",
            "2s",
            "--unwind",
            unwind,
            "-o",
            folded_path.to_str().expect("UTF-8 temp path"),
        ],
        RUN_TIMEOUT,
    );
    out.assert_code(0);
    folded::read(&folded_path)
}

/// Panics unless the stacks with a frame for which `is_frame` holds carry at least 1 s of the
/// 2 s profiled (the traced thread blocks in it nearly all the time).
fn assert_profiled_in(lines: &[FoldedLine], what: &str, is_frame: impl Fn(&str) -> bool) {
    let total = folded::total_us(
        lines
            .iter()
            .filter(|l| l.frames.iter().any(|f| is_frame(f))),
    );
    assert!(
        total >= 1_000_000,
        "{total} us in {what} of 2 s traced:\n{}",
        folded::dump(lines, 20)
    );
}

/// A program's `--version`-style output, first line.
fn version(program: &str, arg: &str) -> String {
    let out = Command::new(program)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().unwrap_or_default().to_owned()
}

/// `node_jit_wait.js --wait-ms WAIT_MS --count COUNT` under `--perf-basic-prof`, once it is
/// ready (its function's code is in the map). V8's log (which `--perf-basic-prof` turns on)
/// goes to `dir`, not the working directory.
fn start_node_wait(dir: &TempDir, wait_ms: &str, count: &str) -> RunningWorkload {
    let script = workload_file("node_jit_wait.js");
    let logfile = format!("--logfile={}", dir.join("v8.log").display());
    let workload = RunningWorkload::spawn(
        Path::new("node"),
        &[
            "--perf-basic-prof",
            "--interpreted-frames-native-stack",
            "--no-logfile-per-isolate",
            &logfile,
            script.to_str().expect("UTF-8 path"),
            "--wait-ms",
            wait_ms,
            "--count",
            count,
        ],
    );
    workload.wait_for("ready", STARTUP_TIMEOUT);
    workload
}

/// Check that a JS function blocked in `Atomics.wait` (Node, `--perf-basic-prof
/// --interpreted-frames-native-stack`) shows in the main thread's user stack as a `jit` frame
/// named `JS:~blockingWaitInJs FILE:LINE:COL`, as V8 wrote it, above the native `Atomics.wait`
/// builtin; and that once the map is moved away the same address is no longer named (the name
/// comes from the map, not from elsewhere); and that `profile --unwind dwarf` charges the
/// waits of a second such program to the function in its folded stacks.
#[test]
fn node_function_named_through_perf_map() {
    if !require_bpf() {
        return;
    }
    println!("Node: {}", version("node", "--version"));
    let dir = TempDir::new("jit-node");
    let workload = start_node_wait(&dir, LONG_WAIT_MS, "3");
    let pid = workload.pid();
    let map = perf_map_path(pid);
    let _cleanup = RemoveOnDrop(map.clone());
    thread::sleep(PAST_THRESHOLD);

    let frames = once_frames(pid, &dir, "named.json");
    assert!(
        has_jit_frame(&frames, "JS:~blockingWaitInJs ")
            || has_jit_frame(&frames, "JS:*blockingWaitInJs "),
        "no jit frame for blockingWaitInJs in the main thread's stack: {frames:#?}"
    );
    let function = frames
        .iter()
        .position(|(_, s)| s.contains("blockingWaitInJs"))
        .expect("found above");
    let builtin = frames
        .iter()
        .position(|(_, s)| s.contains("AtomicsWait"))
        .unwrap_or_else(|| panic!("no Atomics.wait builtin in the stack: {frames:#?}"));
    assert!(
        builtin < function,
        "Atomics.wait is not called by blockingWaitInJs: {frames:#?}"
    );

    fs::rename(&map, map.with_extension("map.moved")).expect("moving the perf map away");
    let frames = once_frames(pid, &dir, "unnamed.json");
    assert!(
        !frames.iter().any(|(_, s)| s.contains("blockingWaitInJs")),
        "blockingWaitInJs named without its perf map: {frames:#?}"
    );
    assert!(
        frames.iter().any(|(kind, _)| kind == "jit"),
        "no (unnamed) jit frame left without the map: {frames:#?}"
    );

    // profile charges waits as they end: a second run with short waits, whose stacks reach
    // the JS function, unwound with DWARF through node and libc.
    let short = start_node_wait(&dir, SHORT_WAIT_MS, "30");
    let _cleanup = RemoveOnDrop(perf_map_path(short.pid()));
    let lines = profile_folded(short.pid(), &dir, "node", "dwarf");
    assert_profiled_in(&lines, "blockingWaitInJs", |f| {
        f.starts_with("JS:~blockingWaitInJs ") || f.starts_with("JS:*blockingWaitInJs ")
    });
}

/// Check that `profile` charges the off-CPU time of a C2-compiled Java method blocked in a
/// pipe read to that method, named by the map `jcmd PID Compiler.perfmap` wrote (JDK 17+,
/// `0x` addresses) as HotSpot prints it: `int JitWait.readOneByte(...)`; the method's stacks
/// hold most of the 2 s traced (the main thread waits ~200 ms per read, all the time).
#[test]
fn java_compiled_method_named_in_profile() {
    if !require_bpf() {
        return;
    }
    println!("JDK: {}", version("java", "-version"));
    let dir = TempDir::new("jit-java");
    compile_java("JitWait", dir.path());
    let classpath = dir.path().to_str().expect("UTF-8 temp path");
    let workload = RunningWorkload::spawn(
        Path::new("java"),
        &[
            "-XX:+PreserveFramePointer",
            "-XX:CompileCommand=quiet",
            "-XX:CompileCommand=dontinline,JitWait::readOneByte",
            "-cp",
            classpath,
            "JitWait",
            "200",
        ],
    );
    workload.wait_for("ready", STARTUP_TIMEOUT);
    let pid = workload.pid();
    let map = perf_map_path(pid);
    let _cleanup = RemoveOnDrop(map.clone());
    let jcmd = Command::new("jcmd")
        .args([&pid.to_string(), "Compiler.perfmap"])
        .output()
        .expect("jcmd");
    assert!(jcmd.status.success(), "jcmd: {jcmd:?}");
    let map_text = fs::read_to_string(&map).expect("jcmd wrote the perf map");
    assert!(
        map_text.starts_with("0x"),
        "expected the JVM's 0x-prefixed lines"
    );

    let lines = profile_folded(pid, &dir, "java", "auto");
    let method =
        "int JitWait.readOneByte(java.nio.channels.Pipe$SourceChannel, java.nio.ByteBuffer)";
    let in_method: Vec<&FoldedLine> = lines
        .iter()
        .filter(|l| l.frames.iter().any(|f| f == method))
        .collect();
    let total = folded::total_us(in_method.iter().copied());
    assert!(
        total >= 1_000_000,
        "{total} us in {method} of 2 s traced:\n{}",
        folded::dump(&lines, 20)
    );
    // The method is above the pipe read in each of its stacks.
    for line in &in_method {
        let method_at = line.frames.iter().position(|f| f == method).unwrap();
        assert!(
            line.frames[method_at..].iter().any(|f| f.contains("read")),
            "no read under {method}: {:?}",
            line.frames
        );
    }
}

/// Pyenv's newest CPython 3.12+ (the perf trampoline came in 3.12); panics if there is none.
fn pyenv_312_or_later() -> Python {
    pyenv_pythons()
        .into_iter()
        .filter(|p| p.version >= (3, 12, 0))
        .min_by_key(|p| p.version)
        .expect("pyenv has no CPython 3.12 or later (needed for -X perf)")
}

/// Check that a Python function blocked in `os.read` under `-X perf` shows in the main
/// thread's user stack as a `jit` frame `py::wait_in_python:FILE` (its trampoline, named by
/// CPython's perf map), above the native `os_read`; and that `profile --unwind dwarf` charges
/// the reads of a second such program to it in its folded stacks.
#[test]
fn python_function_named_through_perf_map() {
    if !require_bpf() {
        return;
    }
    let python = pyenv_312_or_later();
    println!("Python: {python}");
    let dir = TempDir::new("jit-python");
    let script = workload_file("py_perf_trampoline.py");
    let script_arg = script.to_str().expect("UTF-8 path");
    let workload = RunningWorkload::spawn(&python.path, &["-X", "perf", script_arg, LONG_WAIT_MS]);
    workload.wait_for("ready", STARTUP_TIMEOUT);
    let pid = workload.pid();
    let _cleanup = RemoveOnDrop(perf_map_path(pid));
    thread::sleep(PAST_THRESHOLD);

    let frames = once_frames(pid, &dir, "python.json");
    let expected = format!("py::wait_in_python:{script_arg}");
    let function = frames
        .iter()
        .position(|(kind, s)| kind == "jit" && *s == expected)
        .unwrap_or_else(|| panic!("no jit frame {expected}: {frames:#?}"));
    let read = frames
        .iter()
        .position(|(_, s)| s == "os_read")
        .unwrap_or_else(|| panic!("no os_read in the stack: {frames:#?}"));
    assert!(read < function, "os_read not under {expected}: {frames:#?}");

    // profile charges waits as they end: a second run with short waits, whose stacks reach
    // the trampoline, unwound with DWARF through CPython and libc.
    let short = RunningWorkload::spawn(&python.path, &["-X", "perf", script_arg, SHORT_WAIT_MS]);
    short.wait_for("ready", STARTUP_TIMEOUT);
    let _cleanup = RemoveOnDrop(perf_map_path(short.pid()));
    let lines = profile_folded(short.pid(), &dir, "python", "dwarf");
    assert_profiled_in(&lines, &expected, |f| f == expected);
}
