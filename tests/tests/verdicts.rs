//! Verdicts a user can trust: a native event loop known from its frames when it was stuck
//! before `watch` attached, a CLI client that polled once is no event loop, an idle Python
//! pool is idle (listed under `-p`, exit status 0). Root only.

use std::{path::Path, process::Command, thread, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, require_bpf,
    tracer::Tracer,
    watch_report::WatchOutput,
    watch_workloads::{self, DELAY_MS_ARG, READY, RunningWorkload, once_json},
    workload_file,
};

/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Line `node_blocked_loop.js` prints right before it blocks.
const BLOCKING: &str = "BLOCKING";

/// A live `watch -p` attached before the workload printed `not_yet`, writing JSON to `out`.
fn attach(workload: &RunningWorkload, out: &Path, args: &[&str], not_yet: &str) -> Tracer {
    let mut command: Vec<&str> = vec!["--json", "-o", out.to_str().expect("UTF-8 temp path")];
    command.extend_from_slice(args);
    watch_workloads::attach_watch(workload, &command, not_yet)
}

fn version_of(program: &str, flag: &str) -> String {
    let output = Command::new(program)
        .arg(flag)
        .output()
        .unwrap_or_else(|e| panic!("{program} {flag}: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Check that Node's main thread, blocked in `Atomics.wait` from a timer callback before
/// `watch` looked (no poll return seen: `--once` reads `/proc` only), is `event_loop_blocked`
/// from its frames (libuv's `uv_run`), and that the report names the call that blocked it.
#[test]
fn node_loop_blocked_before_watch_is_known_from_frames() {
    if !require_bpf() {
        return;
    }
    println!("node {}", version_of("node", "--version"));
    let dir = TempDir::new("verdicts-node");
    let script = workload_file("node_blocked_loop.js");
    let script = script.to_str().expect("UTF-8 path");
    let workload = RunningWorkload::spawn(Path::new("node"), &[script, "--timeout-s", "60"]);
    workload.wait_for(BLOCKING, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1500));
    let (result, report) = once_json(workload.pid(), &dir.join("once.jsonl"));
    result.assert_code(10);
    let main = report.thread_with(workload.pid(), "event_loop_blocked");
    assert_eq!(main["event_loop"], true, "{main:#}");
    assert_eq!(main["event_loop_library"], "libuv", "{main:#}");
    let call = main["blocking_call"].as_str().unwrap_or_default();
    assert!(
        call.contains("Atomics") || call.contains("FutexEmulation"),
        "blocking call {call:?} is not the Atomics.wait: {main:#}"
    );
    let explanation = main["explanation"].as_str().unwrap_or_default();
    assert!(explanation.contains(call), "{explanation}");
}

/// Check that a CLI client that polled once during a non-blocking `connect()` and then blocks
/// in `recv` on that socket (watched live: its poll return is seen) is no event loop: a stall
/// on the silent server, never `event_loop_blocked`.
#[test]
fn cli_client_that_polled_once_is_not_an_event_loop() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("verdicts-cli");
    let out = dir.join("watch.jsonl");
    let workload = RunningWorkload::spawn(
        Path::new(env!("CLI_CLIENT_BIN")),
        &[DELAY_MS_ARG, "2000", "--timeout-s", "60"],
    );
    let tracer = attach(&workload, &out, &["--threshold", "1s", "-d", "5s"], READY);
    let result = tracer.wait(RUN_TIMEOUT);
    let report = WatchOutput::read(&out);
    let main_tid = workload.tid("main");
    let main = report.thread(main_tid);
    assert!(!main.is_empty(), "client not reported:\n{}", report.dump());
    for t in &main {
        assert_eq!(t["event_loop"], false, "{t:#}");
        assert_eq!(t["verdict"], "stall", "{t:#}");
        assert_eq!(t["wait"]["syscall"], "recvfrom", "{t:#}");
    }
    result.assert_code(10);
}

/// Check that an idle Python thread pool (workers in `SimpleQueue.get`, main in
/// `Event.wait`) watched with `-p` is listed, every thread `idle`, with no problem verdict
/// (no `process_stalled`) and exit status 0.
#[test]
fn idle_python_pool_is_listed_idle_under_p() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("verdicts-pool");
    let out = dir.join("watch.jsonl");
    let workload =
        RunningWorkload::spawn_python(&workload_file("py_idle_pool.py"), &["--timeout-s", "60"]);
    workload.wait_for(READY, Duration::from_secs(20));
    let version = workload
        .lines()
        .into_iter()
        .find_map(|l| l.strip_prefix("version ").map(str::to_owned))
        .expect("version line");
    println!("python {version}");
    let mut command = vec!["watch", "-p"];
    let pid = workload.pid().to_string();
    command.push(&pid);
    command.extend([
        "--threshold",
        "1s",
        "-d",
        "3s",
        "--json",
        "-o",
        out.to_str().expect("UTF-8 temp path"),
    ]);
    let result = Tracer::spawn(&command).wait(RUN_TIMEOUT);
    let report = WatchOutput::read(&out);
    assert!(
        report.problems().is_empty(),
        "problems on an idle pool:\n{}",
        report.dump()
    );
    let tids: Vec<u32> = workload
        .tids()
        .into_iter()
        .filter(|(role, _)| role == "main" || role == "worker")
        .map(|(_, tid)| tid)
        .collect();
    assert_eq!(tids.len(), 4, "{:?}", workload.lines());
    for tid in tids {
        let listed: Vec<&Value> = report.thread(tid);
        assert!(
            listed.iter().any(|t| t["verdict"] == "idle"),
            "thread {tid} not listed idle:\n{}",
            report.dump()
        );
    }
    result.assert_code(0);
}

/// Check the true-positive twin of the idle pool: two Python threads deadlocked on plain
/// `threading.Lock`s (no owner recorded, so no cycle), main joining one of them, is still
/// `process_stalled` for every thread, with exit status 10.
#[test]
fn plain_lock_abba_is_still_process_stalled() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("verdicts-plain-abba");
    let workload = RunningWorkload::spawn_python(
        &workload_file("py_plain_lock_abba.py"),
        &["--timeout-s", "60"],
    );
    workload.wait_for(READY, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1500));
    let (result, report) = once_json(workload.pid(), &dir.join("once.jsonl"));
    result.assert_code(10);
    for role in ["main", "one", "two"] {
        let tid = workload.tid(role);
        assert_eq!(
            report.verdicts(tid),
            ["process_stalled"],
            "{role}:\n{}",
            report.dump()
        );
    }
}
