//! `stallwatch watch` on periodic waits: a client whose `recv` keeps ending by itself (a socket
//! receive timeout, invisible in the syscall's arguments) is reported at most once, not once
//! per period; the same client without a timeout is one stall. Root only.

use std::{process::Command, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, require_bpf,
    tracer::{RunOutput, Tracer},
    watch_report::WatchOutput,
    watch_workloads::{READY, RunningWorkload, attach_watch},
    workload_file,
};

/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The workload (modes `rcvtimeo`, `settimeout`, `blocking`).
const SCRIPT: &str = "periodic_recv.py";
/// `watch` arguments: 8 s at a 1 s threshold see five or six of the 1.5 s receive waits.
const WATCH_ARGS: [&str; 4] = ["--threshold", "1s", "-d", "8s"];

/// Starts the workload in `mode`, watches it live with `--json`, and returns the client's
/// tid, the run and its report.
fn watch_client(mode: &str) -> (u32, RunOutput, WatchOutput) {
    let dir = TempDir::new(&format!("periodic-{mode}"));
    let out = dir.join("watch.jsonl");
    let workload = RunningWorkload::spawn_python(
        &workload_file(SCRIPT),
        &[mode, "--timeout-s", "30", "--delay-ms", "1500"],
    );
    let client = workload.tid("client");
    let mut args = vec!["--json", "-o", out.to_str().expect("UTF-8 temp path")];
    args.extend(WATCH_ARGS);
    let tracer: Tracer = attach_watch(&workload, &args, READY);
    let result = tracer.wait(RUN_TIMEOUT);
    let report = WatchOutput::read(&out);
    (client, result, report)
}

/// The client's problem findings, not counting the final restatement (it repeats what is
/// open, and is no new report).
fn reported_problems(report: &WatchOutput, client: u32) -> Vec<&Value> {
    report
        .reports
        .iter()
        .filter(|r| r["restated"] != true)
        .flat_map(|r| r["threads"].as_array().into_iter().flatten())
        .filter(|t| t["tid"].as_u64() == Some(u64::from(client)) && t["verdict"] != "idle")
        .collect()
}

fn python_version() -> String {
    let out = Command::new("python3")
        .arg("--version")
        .output()
        .expect("python3 --version");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Check that a client receiving with `SO_RCVTIMEO` (each recv ends with EAGAIN after 1.5 s
/// and it receives again) is reported at most once in 8 s at a 1 s threshold, not once per
/// period, and that no finding of it is a stall once it is known periodic.
#[test]
fn recv_with_socket_timeout_is_reported_at_most_once() {
    if !require_bpf() {
        return;
    }
    println!("ran with {}", python_version());
    let (client, result, report) = watch_client("rcvtimeo");
    let problems = reported_problems(&report, client);
    assert!(
        problems.len() <= 1,
        "the periodic recv was reported {} times:\n{}",
        problems.len(),
        report.dump()
    );
    // The first wait may be reported (nothing can say yet that it will end); then the exit
    // status says so, and nothing else.
    result.assert_code(if problems.is_empty() { 0 } else { 10 });
    for r in report.reports.iter().filter(|r| r["restated"] == true) {
        for t in r["threads"].as_array().into_iter().flatten() {
            if t["tid"].as_u64() == Some(u64::from(client)) && t["verdict"] == "idle" {
                assert!(t["periodic"]["ended_before"].as_u64() >= Some(1), "{t:#}");
                assert!(
                    t["explanation"]
                        .as_str()
                        .is_some_and(|e| e.contains("periodic: this wait")),
                    "{t:#}"
                );
            }
        }
    }
}

/// Check that a client with Python's `settimeout` (CPython polls with a timeout before each
/// recv: a timed wait) is never reported, exit status 0.
#[test]
fn recv_with_settimeout_is_not_reported() {
    if !require_bpf() {
        return;
    }
    println!("ran with {}", python_version());
    let (client, result, report) = watch_client("settimeout");
    let problems = reported_problems(&report, client);
    assert!(problems.is_empty(), "{}", report.dump());
    result.assert_code(0);
}

/// Check the twin: the same client without a timeout is one stall (exit status 10), reported
/// once.
#[test]
fn recv_without_timeout_is_one_stall() {
    if !require_bpf() {
        return;
    }
    println!("ran with {}", python_version());
    let (client, result, report) = watch_client("blocking");
    result.assert_code(10);
    let problems = reported_problems(&report, client);
    assert_eq!(problems.len(), 1, "{}", report.dump());
    assert_eq!(problems[0]["verdict"], "stall", "{}", report.dump());
}
