//! `stallwatch watch` on threads reading pipes and FIFOs: a reader whose writer is alive
//! waits for input (idle, exit status 0); one whose writer is stuck, or who holds the only
//! write end itself, is a stall (exit status 10). Root only.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, require_bpf,
    tracer::{RunOutput, run},
    watch_report::WatchOutput,
    watch_workloads::{READY, RunningWorkload, task_syscall, wait_until_blocked_in},
    workload_file,
};

/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The threshold the tests run `watch` with.
const THRESHOLD: &str = "1s";
/// How long the readers are left blocked before `watch` looks: past [`THRESHOLD`].
const BLOCKED_BEFORE_WATCH: Duration = Duration::from_millis(1600);
/// x86_64 `read`.
const SYS_READ: i64 = 0;
/// The Python workload.
const SCRIPT: &str = "fd_waits.py";

/// Kills and reaps its processes when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sh -c SCRIPT`, with no stdin or stdout.
fn shell(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning sh -c {script:?}: {e}"))
}

/// Waits until thread `pid` is blocked in `read`.
fn wait_until_reading(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_syscall(pid, pid).is_none_or(|s| s.nr != SYS_READ) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) did not block in read: {:?}",
            task_syscall(pid, pid)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `watch -p PIDS --once --threshold 1s --json -o OUT`, with its JSON.
fn watch_once(pids: &[u32], out: &Path) -> (RunOutput, WatchOutput) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut args = vec!["watch".to_owned()];
    for pid in &pids {
        args.extend(["-p".to_owned(), pid.clone()]);
    }
    args.extend(
        ["--once", "--threshold", THRESHOLD, "--json", "-o"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    args.push(out.to_str().expect("UTF-8 temp path").to_owned());
    let result = run(&args, RUN_TIMEOUT);
    let report = WatchOutput::read(out);
    (result, report)
}

/// Panics unless every report of `tid` says idle, waiting for input from `writer` (`watch`
/// lists idle threads only in some reports: none at all is fine).
fn assert_waiting_for_input(report: &WatchOutput, tid: u32, writer: u32) {
    for t in report.thread(tid) {
        assert_eq!(t["verdict"], "idle", "{t:#}");
        assert_input_from(t, writer);
    }
}

fn assert_input_from(t: &Value, writer: u32) {
    let explanation = t["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains(&format!("waiting for input from pid {writer}")),
        "{t:#}"
    );
    assert_eq!(t["resource"]["peer_pid"], writer, "{t:#}");
}

/// Check that `tail -f FILE | grep x` (tail alive, asleep between polls of the file) is not a
/// problem: grep waits for input from tail, exit status 0.
#[test]
fn tail_grep_pipeline_waits_for_input() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-pipeline");
    let log = dir.join("log");
    std::fs::write(&log, "x first\n").expect("writing the log");
    let mut tail = Command::new("tail")
        .arg("-f")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning tail");
    let pipe = tail.stdout.take().expect("tail's stdout");
    // Not /dev/null: GNU grep then stops reading at the first match, like `grep -q`.
    let matches = std::fs::File::create(dir.join("matches")).expect("creating grep's output");
    let grep = Command::new("grep")
        .args(["--line-buffered", "x"])
        .stdin(pipe)
        .stdout(matches)
        .spawn()
        .expect("spawning grep");
    let (tail_pid, grep_pid) = (tail.id(), grep.id());
    let _processes = Processes(vec![tail, grep]);
    wait_until_reading(grep_pid, "grep");
    thread::sleep(BLOCKED_BEFORE_WATCH);

    let (result, report) = watch_once(&[grep_pid, tail_pid], &dir.join("watch.jsonl"));
    assert!(report.problems().is_empty(), "{}", report.dump());
    result.assert_code(0);
    assert_waiting_for_input(&report, grep_pid, tail_pid);
}

/// Check that a shell `while read` loop on a FIFO whose writer (a shell waiting for its
/// `sleep` child) is alive is not a problem: exit status 0.
#[test]
fn fifo_while_read_loop_waits_for_input() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-fifo");
    let fifo = dir.join("fifo");
    let fifo_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o600) }, 0);
    let fifo_arg = fifo.to_str().unwrap();
    let reader = shell(&format!("while read line; do :; done < {fifo_arg}"));
    let writer = shell(&format!(
        "exec 3> {fifo_arg}; while true; do sleep 30; echo tick >&3; done"
    ));
    let reader_pid = reader.id();
    let _processes = Processes(vec![reader, writer]);
    wait_until_reading(reader_pid, "the while-read loop");
    thread::sleep(BLOCKED_BEFORE_WATCH);

    let (result, report) = watch_once(&[reader_pid], &dir.join("watch.jsonl"));
    assert!(report.problems().is_empty(), "{}", report.dump());
    result.assert_code(0);
    // The writer shell and its `sleep` child both hold the write end; either is named.
    for t in report.thread(reader_pid) {
        assert_eq!(t["verdict"], "idle", "{t:#}");
        assert!(
            t["explanation"]
                .as_str()
                .is_some_and(|e| e.contains("waiting for input from pid")),
            "{t:#}"
        );
    }
}

/// Check, in one process, that a thread reading a pipe from a live writer is idle and names
/// it, while a thread reading a pipe whose writer is blocked for ever is a stall naming that
/// writer (exit status 10).
#[test]
fn stuck_writer_is_a_stall_live_writer_is_not() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-mixed");
    let workload =
        RunningWorkload::spawn_python(&workload_file(SCRIPT), &["mixed", "--timeout-s", "30"]);
    workload.wait_for(READY, Duration::from_secs(20));
    let (reader, stuck_reader) = (workload.tid("reader"), workload.tid("stuck-reader"));
    let (live, stuck) = (workload.tid("live-writer"), workload.tid("stuck-writer"));
    thread::sleep(BLOCKED_BEFORE_WATCH);

    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    result.assert_code(10);
    let stalled = report.thread_with(stuck_reader, "stall");
    assert_eq!(stalled["resource"]["peer_pid"], stuck, "{stalled:#}");
    assert!(
        stalled["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("its writer pid {stuck}"))),
        "{stalled:#}"
    );
    let idle: Vec<&Value> = report.thread(reader);
    assert!(!idle.is_empty(), "reader not listed:\n{}", report.dump());
    for t in idle {
        assert_eq!(t["verdict"], "idle", "{t:#}");
        assert_input_from(t, live);
    }
}

/// Check that a single-threaded process reading a pipe whose only write end it holds itself
/// (a write end it forgot to close) is a stall: nothing can ever write.
#[test]
fn reading_own_pipe_is_a_stall() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-own");
    let workload =
        RunningWorkload::spawn_python(&workload_file(SCRIPT), &["own-pipe", "--timeout-s", "30"]);
    workload.wait_for(READY, Duration::from_secs(20));
    let reader = workload.tid("reader");
    wait_until_reading(reader, "the own-pipe reader");
    thread::sleep(BLOCKED_BEFORE_WATCH);

    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    result.assert_code(10);
    let t = report.thread_with(reader, "stall");
    assert!(
        t["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("only write end is held by this process")),
        "{t:#}"
    );
}

/// The TCP workload in `mode`, its client blocked in recv past the threshold.
fn tcp_client(mode: &str) -> RunningWorkload {
    let workload =
        RunningWorkload::spawn_python(&workload_file(SCRIPT), &[mode, "--timeout-s", "30"]);
    workload.wait_for(READY, Duration::from_secs(20));
    wait_until_blocked_in(
        &workload,
        "client",
        &[SYS_RECVFROM],
        Duration::from_secs(10),
    );
    thread::sleep(BLOCKED_BEFORE_WATCH);
    workload
}

/// x86_64 `recvfrom` (Python's `socket.recv`).
const SYS_RECVFROM: i64 = 45;

/// Check that a subscriber that received a message from a live local server and waits for
/// the next is not a problem (exit status 0): the last thing on its connection was a message
/// received.
#[test]
fn subscriber_after_a_message_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-subscriber");
    let workload = tcp_client("subscriber");
    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    assert!(report.problems().is_empty(), "{}", report.dump());
    result.assert_code(0);
    for t in report.thread(workload.tid("client")) {
        assert_eq!(t["verdict"], "idle", "{t:#}");
    }
}

/// Check that a client whose request the local server never reads is a stall naming the
/// peer address and process, "request sent N s ago, nothing received since", with the
/// request still unread in the server's receive queue (exit status 10).
#[test]
fn unanswered_request_is_a_stall_naming_the_peer() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-request");
    let workload = tcp_client("request");
    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    result.assert_code(10);
    let peer = format!("127.0.0.1:{}", workload.port());
    let t = report.thread_with(workload.tid("client"), "stall");
    assert_eq!(t["resource"]["peer"], peer.as_str(), "{t:#}");
    let explanation = t["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains(&format!("to {peer}, nothing received since"))
            && explanation.contains("request sent "),
        "{t:#}"
    );
    // The server is a thread of the same process, which never read the request.
    assert_eq!(t["resource"]["peer_pid"], workload.pid(), "{t:#}");
    assert!(
        explanation.contains(&format!("pid {} has not read it", workload.pid())),
        "{t:#}"
    );
}

// A child reading its parent's pipe (`pipe_parent.py`).

/// `pipe_parent.py MODE`, its child blocked in read past the threshold: (workload, parent,
/// child).
fn pipe_parent(mode: &str) -> (RunningWorkload, u32, u32) {
    let workload = RunningWorkload::spawn_python(
        &workload_file("pipe_parent.py"),
        &[mode, "--timeout-s", "30"],
    );
    workload.wait_for(READY, Duration::from_secs(20));
    let (parent, child) = (workload.tid("parent"), workload.tid("child"));
    wait_until_reading(child, "the child");
    thread::sleep(BLOCKED_BEFORE_WATCH);
    (workload, parent, child)
}

/// Check that a child reading its parent's pipe while the parent waits for it in `waitpid`
/// (alive, not stuck) is listed under `-p` as idle, waiting for input from the parent, exit
/// status 0.
#[test]
fn child_reading_waiting_parents_pipe_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-parent-wait");
    let (_workload, parent, child) = pipe_parent("wait");
    let (result, report) = watch_once(&[child], &dir.join("watch.jsonl"));
    assert!(
        !report.thread(child).is_empty(),
        "child not listed:\n{}",
        report.dump()
    );
    assert_waiting_for_input(&report, child, parent);
    result.assert_code(0);
}

/// Check the twin: the parent stuck for ever on a lock it holds (its only thread in an
/// indefinite futex wait), the child's read is a stall naming the parent, exit status 10.
#[test]
fn child_reading_stuck_parents_pipe_is_a_stall() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-parent-stuck");
    let (_workload, parent, child) = pipe_parent("stuck");
    let (result, report) = watch_once(&[child], &dir.join("watch.jsonl"));
    let stalled = report.thread_with(child, "stall");
    assert_eq!(stalled["resource"]["peer_pid"], parent, "{stalled:#}");
    assert!(
        stalled["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("its writer pid {parent}"))),
        "{stalled:#}"
    );
    result.assert_code(10);
}

/// The unix-socket workload in `mode`, serving on `socket`, its client blocked in recv past
/// the threshold.
fn unix_client(mode: &str, socket: &Path) -> RunningWorkload {
    let socket = socket.to_str().expect("UTF-8 temp path");
    let workload = RunningWorkload::spawn_python(
        &workload_file(SCRIPT),
        &[mode, "--socket", socket, "--timeout-s", "30"],
    );
    workload.wait_for(READY, Duration::from_secs(20));
    wait_until_blocked_in(
        &workload,
        "client",
        &[SYS_RECVFROM],
        Duration::from_secs(10),
    );
    thread::sleep(BLOCKED_BEFORE_WATCH);
    workload
}

/// Check that a unix stream client whose request the server (another process, alive and
/// waiting in accept) never reads is a stall (exit status 10) that names the server's path as
/// the peer, the server's pid as `peer_pid`, and says the server has not read the request,
/// which sits in its receive queue.
#[test]
fn unix_request_unread_by_the_server_is_a_stall() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-unix-request");
    let socket = dir.join("server.sock");
    let workload = unix_client("unix-request", &socket);
    let server = workload.tid("server");
    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    result.assert_code(10);
    let t = report.thread_with(workload.tid("client"), "stall");
    assert_eq!(t["resource"]["peer"], socket.to_str().unwrap(), "{t:#}");
    assert_eq!(t["resource"]["peer_pid"], server, "{t:#}");
    let explanation = t["explanation"].as_str().unwrap_or_default();
    let request = "GET /answer\n".len();
    assert!(
        explanation.contains(&format!(
            "pid {server} has not read it ({request} bytes unread in its receive queue)"
        )),
        "{t:#}"
    );
}

/// Check that a unix subscriber that received a message from a live server (another process,
/// idle in accept) and waits for the next is not a problem (exit status 0): idle, with the
/// server's pid as `peer_pid` and its path as the peer.
#[test]
fn unix_subscriber_after_a_message_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("fdwaits-unix-subscriber");
    let socket = dir.join("server.sock");
    let workload = unix_client("unix-subscriber", &socket);
    let server = workload.tid("server");
    let (result, report) = watch_once(&[workload.pid()], &dir.join("watch.jsonl"));
    assert!(report.problems().is_empty(), "{}", report.dump());
    result.assert_code(0);
    let client = report.thread(workload.tid("client"));
    assert!(!client.is_empty(), "client not listed:\n{}", report.dump());
    for t in client {
        assert_eq!(t["verdict"], "idle", "{t:#}");
        assert_eq!(t["resource"]["peer_pid"], server, "{t:#}");
        assert_eq!(t["resource"]["peer"], socket.to_str().unwrap(), "{t:#}");
        assert!(
            t["explanation"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("pid {server} read everything sent"))),
            "{t:#}"
        );
    }
}
