//! `stallwatch watch` on real stuck programs: deadlocks (glibc, PI, Rust std), a silent TCP
//! server, blocked asyncio loops, and a healthy control. Root only.

use std::{path::Path, thread, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, deadlock_abba_bin, healthy_bin,
    nodebug::{DEBUG_ONLY_NAMES, HiddenDebugFiles, debug_files_hidden},
    recv_stall_bin, require_bpf,
    tracer::{RunOutput, Tracer, run},
    watch_report::{WatchOutput, user_symbols},
    watch_workloads::{
        self, DELAY_MS_ARG, MAIN, READY, RunningWorkload, abba, asyncio, healthy, once_json, recv,
        rust_abba,
    },
    workload_file,
};

/// Long enough for `watch` to attach before the workload blocks.
const ATTACH_DELAY_MS: &str = "3000";
/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// Starts `watch -p PID --json -o OUT ARGS` and waits until it is attached, before the
/// workload printed `not_yet`.
fn attach_watch(workload: &RunningWorkload, out: &Path, args: &[&str], not_yet: &str) -> Tracer {
    let mut command: Vec<&str> = vec!["--json", "-o", out.to_str().expect("UTF-8 temp path")];
    command.extend_from_slice(args);
    watch_workloads::attach_watch(workload, &command, not_yet)
}

/// `watch ARGS` run to its end, with its JSON output.
fn finish(tracer: Tracer, out: &Path) -> (RunOutput, WatchOutput) {
    let result = tracer.wait(RUN_TIMEOUT);
    let report = WatchOutput::read(out);
    (result, report)
}

fn hex(addr: u64) -> String {
    format!("0x{addr:x}")
}

/// The one cycle among tids `a` and `b`, checked to be a <-> b. (A cycle is reported when
/// found and restated in the final report.)
fn assert_abba_cycle(report: &WatchOutput, a: u32, b: u32) {
    let distinct = report.distinct_cycles();
    let mut expected = vec![(a, b), (b, a)];
    expected.sort_unstable();
    assert_eq!(distinct, [expected], "cycles:\n{}", report.dump());
}

/// Checks one deadlocked thread: its owner, the mutex it wants and its lock-call frame.
fn assert_deadlocked(report: &WatchOutput, tid: u32, owner: u32, mutex: u64, frame: &str) {
    let t = report.thread_with(tid, "deadlock");
    assert_eq!(t["resource"]["owner_tid"], owner, "owner of {tid}:\n{t:#}");
    let wanted = t["resource"]["lock_uaddr"]
        .as_str()
        .or(t["resource"]["futex_uaddr"].as_str());
    assert_eq!(wanted, Some(hex(mutex).as_str()), "mutex of {tid}:\n{t:#}");
    let symbols = user_symbols(t);
    assert!(
        symbols.iter().any(|s| s == frame),
        "{frame} not in the user stack of {tid}: {symbols:?}"
    );
}

/// Runs `deadlock_abba WORKLOAD_ARGS` so that its deadlock forms while `watch
/// --exit-on-deadlock` runs, and checks what every ABBA report must hold: exit status 11,
/// one cycle a <-> b, each thread's owner, wanted mutex and lock-call frame.
fn watch_abba_forming(workload_args: &[&str]) -> (RunningWorkload, WatchOutput) {
    let dir = TempDir::new("watch-abba");
    let out = dir.join("watch.jsonl");
    let mut args = workload_args.to_vec();
    args.extend([DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let workload = RunningWorkload::spawn(deadlock_abba_bin(), &args);
    let watch_args = [
        "--threshold",
        "1s",
        "--interval",
        "200ms",
        "--exit-on-deadlock",
        "-d",
        "40s",
    ];
    let tracer = attach_watch(&workload, &out, &watch_args, READY);
    let (result, report) = finish(tracer, &out);
    result.assert_code(11);
    let (a, b) = (workload.tid(abba::THREAD_A), workload.tid(abba::THREAD_B));
    assert_abba_cycle(&report, a, b);
    let (lock_a, lock_b) = (workload.lock(abba::LOCK_A), workload.lock(abba::LOCK_B));
    assert_deadlocked(&report, a, b, lock_b, abba::LOCK_B_WHILE_HOLDING_A);
    assert_deadlocked(&report, b, a, lock_a, abba::LOCK_A_WHILE_HOLDING_B);
    (workload, report)
}

/// Check that a pthread ABBA deadlock that forms while `watch` runs is reported as one cycle
/// with both owners and both lock-call frames, that the thread joining a member is blocked
/// by the deadlock, that the healthy thread is not reported, and that --exit-on-deadlock
/// exits with 11.
#[test]
fn abba_deadlock_is_reported_with_owners_and_stacks() {
    if require_bpf() {
        abba_deadlock_forming();
    }
}

/// See [`abba_deadlock_is_reported_with_owners_and_stacks`].
fn abba_deadlock_forming() {
    let (workload, report) = watch_abba_forming(&[]);
    let a = workload.tid(abba::THREAD_A);
    assert_eq!(report.thread_with(a, "deadlock")["origin"], "traced");
    let main = workload.tid(MAIN);
    assert!(
        report
            .verdicts(main)
            .iter()
            .all(|v| v == "blocked_by_deadlock"),
        "main joins abba-a: {:?}",
        report.verdicts(main)
    );
    let healthy = workload.tid(abba::HEALTHY);
    assert!(
        report.thread(healthy).is_empty(),
        "healthy thread reported:\n{}",
        report.dump()
    );
}

/// `deadlock_abba ARGS`, deadlocked for 1.5 s already (longer than the tests' 1 s threshold).
fn deadlock_formed_before_watch(args: &[&str]) -> RunningWorkload {
    let workload = RunningWorkload::spawn(deadlock_abba_bin(), args);
    workload.wait_for(READY, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1500));
    workload
}

/// Check that a deadlock that formed before `watch` started is found from /proc alone, both
/// by `--once` and by a live watch, with owners and lock-call frames unwound without frame
/// pointers in glibc.
#[test]
fn deadlock_before_attach_is_found_from_proc() {
    if require_bpf() {
        deadlock_before_attach();
    }
}

/// Checks that no frame of `report` has a name only libc's debug files give, when they are
/// hidden from the tracer; prints which such names it has otherwise.
fn assert_debug_names_as_expected(report: &WatchOutput) {
    let threads = report.reports.iter().flat_map(|r| {
        r["threads"]
            .as_array()
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    });
    let debug_names: Vec<String> = threads
        .flat_map(user_symbols)
        .filter(|s| DEBUG_ONLY_NAMES.contains(&s.as_str()))
        .collect();
    if debug_files_hidden() {
        assert!(
            debug_names.is_empty(),
            "libc's debug files were not hidden: {debug_names:?}"
        );
    } else {
        println!("names from libc's debug files: {debug_names:?}");
    }
}

/// See [`deadlock_before_attach_is_found_from_proc`].
fn deadlock_before_attach() {
    let dir = TempDir::new("watch-before");
    let workload = deadlock_formed_before_watch(&[]);
    let pid = workload.pid().to_string();
    let (a, b) = (workload.tid(abba::THREAD_A), workload.tid(abba::THREAD_B));
    let (lock_a, lock_b) = (workload.lock(abba::LOCK_A), workload.lock(abba::LOCK_B));

    let once = dir.join("once.jsonl");
    once_json(workload.pid(), &once).0.assert_code(11);
    let live = dir.join("live.jsonl");
    let result = run(
        [
            "watch",
            "-p",
            &pid,
            "--threshold",
            "1s",
            "--interval",
            "200ms",
            "--json",
            "-o",
            live.to_str().unwrap(),
            "--exit-on-deadlock",
            "-d",
            "30s",
        ],
        RUN_TIMEOUT,
    );
    result.assert_code(11);
    for path in [once, live] {
        let report = WatchOutput::read(&path);
        assert_abba_cycle(&report, a, b);
        assert_deadlocked(&report, a, b, lock_b, abba::LOCK_B_WHILE_HOLDING_A);
        assert_deadlocked(&report, b, a, lock_a, abba::LOCK_A_WHILE_HOLDING_B);
        let t = report.thread_with(a, "deadlock");
        assert_eq!(t["origin"], "snapshot", "{t:#}");
        assert!(
            t["blocked_for_ms"].as_u64().unwrap_or(0) >= 1000,
            "blocked_for_ms of a deadlock 1.5 s old: {t:#}"
        );
        assert!(
            !t["kernel_stack"].as_array().is_none_or(Vec::is_empty),
            "no kernel stack: {t:#}"
        );
        let main = report.thread_with(workload.tid(MAIN), "blocked_by_deadlock");
        assert_eq!(
            main["resource"]["owner_tid"], a,
            "main joins abba-a: {main:#}"
        );
        assert_debug_names_as_expected(&report);
    }
}

/// Check that a PI-mutex ABBA, where the kernel refuses the closing lock with EDEADLK and
/// glibc parks that thread on a word of its own stack, is still reported as the full cycle.
#[test]
fn pi_mutex_deadlock_is_reported_from_the_refused_lock() {
    if require_bpf() {
        pi_deadlock_forming();
    }
}

/// See [`pi_mutex_deadlock_is_reported_from_the_refused_lock`].
fn pi_deadlock_forming() {
    let (workload, report) = watch_abba_forming(&[abba::PI_FLAG]);
    let (a, b) = (workload.tid(abba::THREAD_A), workload.tid(abba::THREAD_B));
    let sources: Vec<&Value> = [a, b]
        .iter()
        .map(|&t| &report.thread_with(t, "deadlock")["resource"]["owner_source"])
        .collect();
    assert!(
        sources.contains(&&Value::from("failed_pi_lock"))
            && sources.contains(&&Value::from("pi_word")),
        "owner sources {sources:?}:\n{}",
        report.dump()
    );
}

/// Check that a PI-mutex deadlock that formed before `watch` started, where the refused lock
/// was never seen, invents no cycle: the thread glibc parked is a stall explained as such, and
/// the other thread's wait names the parked thread as the owner of its lock.
#[test]
fn pi_deadlock_before_attach_is_explained_without_a_cycle() {
    if require_bpf() {
        pi_deadlock_before_attach();
    }
}

/// See [`pi_deadlock_before_attach_is_explained_without_a_cycle`].
fn pi_deadlock_before_attach() {
    let workload = deadlock_formed_before_watch(&[abba::PI_FLAG]);
    let dir = TempDir::new("watch-pi-before");
    let out = dir.join("once.jsonl");
    let pid = workload.pid().to_string();
    let out_arg = out.to_str().expect("UTF-8 temp path");
    let once = [
        "watch",
        "-p",
        &pid,
        "--once",
        "--threshold",
        "1s",
        "--json",
        "-o",
        out_arg,
    ];
    run(once, RUN_TIMEOUT).assert_code(10);
    let report = WatchOutput::read(&out);
    assert!(
        report.cycles().is_empty(),
        "invented cycle:\n{}",
        report.dump()
    );
    let (a, b) = (workload.tid(abba::THREAD_A), workload.tid(abba::THREAD_B));
    let parked: Vec<u32> = [a, b]
        .into_iter()
        .filter(|&tid| {
            report.thread(tid).iter().any(|t| {
                t["explanation"]
                    .as_str()
                    .is_some_and(|e| e.contains("parked for ever by glibc"))
            })
        })
        .collect();
    assert_eq!(
        parked.len(),
        1,
        "one parked thread expected:\n{}",
        report.dump()
    );
    let other = if parked[0] == a { b } else { a };
    let t = report.thread_with(other, "stall");
    assert_eq!(t["resource"]["owner_tid"], parked[0], "{t:#}");
    assert_eq!(t["resource"]["owner_source"], "pi_word", "{t:#}");
}

/// Check that a Rust std::sync::Mutex ABBA (no owner in the lock word) is reported as a
/// stall or stalled process, with the lock-call frames, and that no cycle is invented.
#[test]
fn rust_mutex_deadlock_is_a_stall_without_an_invented_cycle() {
    if require_bpf() {
        rust_mutex_deadlock();
    }
}

/// See [`rust_mutex_deadlock_is_a_stall_without_an_invented_cycle`].
fn rust_mutex_deadlock() {
    let dir = TempDir::new("watch-rust");
    let out = dir.join("watch.jsonl");
    let binary = Path::new(env!("CARGO_BIN_EXE_rust_mutex_abba"));
    let workload = RunningWorkload::spawn(binary, &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let tracer = attach_watch(&workload, &out, &["--threshold", "1s", "-d", "8s"], READY);
    let (result, report) = finish(tracer, &out);
    result.assert_code(10);
    assert!(
        report.cycles().is_empty(),
        "invented cycle:\n{}",
        report.dump()
    );
    for (role, frame) in [
        (rust_abba::THREAD_A, rust_abba::LOCK_B_WHILE_HOLDING_A),
        (rust_abba::THREAD_B, rust_abba::LOCK_A_WHILE_HOLDING_B),
    ] {
        let tid = workload.tid(role);
        let t = report
            .thread(tid)
            .into_iter()
            .find(|t| t["verdict"] == "stall" || t["verdict"] == "process_stalled")
            .unwrap_or_else(|| panic!("{role} not reported as a stall:\n{}", report.dump()));
        assert!(
            t["resource"]["owner_tid"].is_null(),
            "owner invented: {t:#}"
        );
        assert!(
            user_symbols(t).iter().any(|s| s.contains(frame)),
            "{frame} missing: {t:#}"
        );
    }
}

/// Check that threads blocked in recv on a server that never answers are stalls naming the
/// peer address, and the server idle in accept is not a problem. Scanning every 100 ms makes
/// the stack store be swept (every 10 scans) before and while they block: their kernel stacks
/// must survive it.
#[test]
fn recv_on_a_silent_server_names_the_peer() {
    if require_bpf() {
        recv_on_a_silent_server();
    }
}

/// See [`recv_on_a_silent_server_names_the_peer`].
fn recv_on_a_silent_server() {
    let dir = TempDir::new("watch-recv");
    let out = dir.join("watch.jsonl");
    let workload = RunningWorkload::spawn(recv_stall_bin(), &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let args = ["--threshold", "1s", "--interval", "100ms", "-d", "8s"];
    let tracer = attach_watch(&workload, &out, &args, READY);
    let (result, report) = finish(tracer, &out);
    result.assert_code(10);
    let peer = format!("127.0.0.1:{}", workload.port());
    for client in recv::CLIENTS {
        let t = report.thread_with(workload.tid(client), "stall");
        assert_eq!(t["resource"]["peer"], peer.as_str(), "{t:#}");
        assert_eq!(t["wait"]["syscall"], "recvfrom", "{t:#}");
        assert!(
            user_symbols(t).iter().any(|s| s == recv::RECV_FUNCTION),
            "{t:#}"
        );
        let kernel = t["kernel_stack"].as_array().map_or(0, Vec::len);
        assert!(kernel > 0, "kernel stack lost: {t:#}");
    }
    let server = workload.tid(recv::SERVER);
    assert!(
        report.verdicts(server).iter().all(|v| v == "idle"),
        "server in accept: {:?}",
        report.verdicts(server)
    );
    // The human report groups the four clients under one headline with the peer.
    let text = run(
        [
            "watch",
            "-p",
            &workload.pid().to_string(),
            "--once",
            "--threshold",
            "1s",
        ],
        RUN_TIMEOUT,
    );
    text.assert_code(10);
    assert!(
        text.stdout.contains("4 threads blocked in recvfrom") && text.stdout.contains(&peer),
        "text report:\n{}",
        text.stdout
    );
}

/// Check that an asyncio loop blocked by time.sleep, and one blocked by threading.Lock in a
/// coroutine, are reported as blocked event loops.
#[test]
fn blocked_asyncio_loops_are_reported() {
    if !require_bpf() {
        return;
    }
    for mode in [asyncio::MODE_SLEEP, asyncio::MODE_LOCK] {
        blocked_asyncio_loop(mode);
    }
}

/// See [`blocked_asyncio_loops_are_reported`]: one `mode` of the workload.
fn blocked_asyncio_loop(mode: &str) {
    let dir = TempDir::new("watch-asyncio");
    let out = dir.join("watch.jsonl");
    let workload = RunningWorkload::spawn_python(
        &workload_file(asyncio::SCRIPT),
        &[mode, asyncio::WARMUP_S_ARG, "4"],
    );
    workload.wait_for(READY, Duration::from_secs(20));
    let tracer = attach_watch(
        &workload,
        &out,
        &["--threshold", "1s", "-d", "9s"],
        asyncio::BLOCKING,
    );
    let (result, report) = finish(tracer, &out);
    result.assert_code(10);
    let tid = workload.tid(asyncio::LOOP);
    let t = report.thread_with(tid, "event_loop_blocked");
    assert!(t["event_loop"] == true, "{mode}: {t:#}");
}

/// Check that a healthy program (timers, an epoll loop with timeouts, a busy condvar, idle
/// pool workers, a briefly contended mutex) gets no problem verdict and exit status 0.
#[test]
fn healthy_program_has_no_problem_verdicts() {
    if require_bpf() {
        healthy_program();
    }
}

/// See [`healthy_program_has_no_problem_verdicts`].
fn healthy_program() {
    let dir = TempDir::new("watch-healthy");
    let out = dir.join("watch.jsonl");
    let workload = RunningWorkload::spawn(healthy_bin(), &[]);
    workload.wait_for(READY, Duration::from_secs(20));
    let pid = workload.pid().to_string();
    let result = run(
        [
            "watch",
            "-p",
            &pid,
            "--threshold",
            "1s",
            "--interval",
            "200ms",
            "-d",
            "5s",
            "--json",
            "-o",
            out.to_str().unwrap(),
        ],
        RUN_TIMEOUT,
    );
    result.assert_code(0);
    let report = WatchOutput::read(&out);
    assert!(
        report.problems().is_empty(),
        "problems in a healthy program:\n{}",
        report.dump()
    );
    assert!(report.cycles().is_empty());
    // The idle pool workers are blocked past the threshold, yet --once reports nothing.
    for worker in healthy::POOL {
        let tid = workload.tid(worker);
        assert!(report.verdicts(tid).iter().all(|v| v == "idle"));
    }
    let result = run(
        ["watch", "-p", &pid, "--once", "--threshold", "1s"],
        RUN_TIMEOUT,
    );
    result.assert_code(0);
}

/// Check that without libc's debug files (hidden from the tracer, as on most production
/// hosts) `watch` gives the same verdicts, owners and cycles: pthread ABBA live and from
/// `/proc` (with the join behind it), PI deadlocks live and from `/proc` (the parked waiter),
/// a Rust std mutex ABBA, recv stalls, a healthy program and a blocked asyncio loop; and that the debug files really
/// were hidden (no libc-internal name in the reports).
#[test]
fn same_verdicts_without_libc_debug_files() {
    if !require_bpf() {
        return;
    }
    let _hidden = HiddenDebugFiles::new();
    let checks: [(&str, fn()); 8] = [
        ("deadlock before attach", deadlock_before_attach),
        ("abba forming", abba_deadlock_forming),
        ("pi before attach", pi_deadlock_before_attach),
        ("pi forming", pi_deadlock_forming),
        ("rust mutex", rust_mutex_deadlock),
        ("recv stall", recv_on_a_silent_server),
        ("healthy", healthy_program),
        ("asyncio loop blocked by time.sleep", || {
            blocked_asyncio_loop(asyncio::MODE_SLEEP);
        }),
    ];
    for (name, check) in checks {
        println!("without libc's debug files: {name}");
        check();
    }
}

/// Check that a reported stall is reported again when it ends (here: its process is killed),
/// with how long it lasted, and not repeated every interval in between; and that watch ends
/// by itself when its only process is gone.
#[test]
fn stall_is_reported_once_then_resolved() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("watch-resolved");
    let out = dir.join("watch.jsonl");
    let mut workload = RunningWorkload::spawn(recv_stall_bin(), &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let client = workload.tid(recv::CLIENTS[0]);
    let tracer = attach_watch(
        &workload,
        &out,
        &["--threshold", "1s", "--interval", "200ms"],
        READY,
    );
    workload.wait_for(READY, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(2500));
    workload.kill();
    // With -p, watch ends by itself once every watched process is gone.
    let (result, report) = finish(tracer, &out);
    assert!(
        result.stderr.contains("every watched process has exited"),
        "{}",
        result.stderr
    );
    result.assert_code(10);
    // Its stall is reported in one interval report (and restated in the final one), not in
    // every interval. (With -p its earlier idle wait for the start gate is listed once too.)
    let reports_with_client = report
        .reports
        .iter()
        .filter(|r| r["final"] == false)
        .filter(|r| {
            r["threads"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["tid"] == client && t["verdict"] != "idle")
            })
        })
        .count();
    assert_eq!(reports_with_client, 1, "{}", report.dump());
    let resolved: Vec<&Value> = report
        .reports
        .iter()
        .flat_map(|r| r["resolved"].as_array().into_iter().flatten())
        .filter(|r| r["tid"] == client)
        .collect();
    assert_eq!(resolved.len(), 1, "{}", report.dump());
    assert_eq!(resolved[0]["verdict"], "stall");
    // The process is gone by then, yet still named.
    assert_eq!(
        resolved[0]["process_name"],
        "recv_stall",
        "{}",
        report.dump()
    );
    let lasted_ms = resolved[0]["blocked_for_ms"].as_u64().unwrap_or(0);
    assert!(
        (2000..6000).contains(&lasted_ms),
        "blocked {lasted_ms} ms before the kill, about 2.6 s expected"
    );
}

/// Check that SIGTERM ends a watch that has no duration, and the final report still says
/// what is blocked.
#[test]
fn sigterm_writes_the_final_report() {
    if !require_bpf() {
        return;
    }
    let workload = RunningWorkload::spawn(recv_stall_bin(), &[]);
    workload.wait_for(READY, Duration::from_secs(20));
    let pid = workload.pid().to_string();
    let mut tracer = Tracer::spawn(["watch", "-p", &pid, "--threshold", "1s"]);
    tracer.wait_tracing();
    thread::sleep(Duration::from_millis(2000));
    let result = tracer.stop(libc::SIGTERM);
    result.assert_code(10);
    let final_part = result
        .stdout
        .split("(final)")
        .nth(1)
        .unwrap_or_else(|| panic!("no final report:\n{}", result.stdout));
    assert!(
        final_part.contains("still blocked at exit: 4 threads")
            && final_part.contains("stall: client-0"),
        "{}",
        result.stdout
    );
}

/// Check the error exits: a missing pid (5, one line), an unwritable output (6, before
/// attaching), a bad option value (2), and no privileges (3).
#[test]
fn watch_errors_have_distinct_exit_codes() {
    let bad_value = run(["watch", "--threshold", "soon"], RUN_TIMEOUT);
    bad_value.assert_code(2);
    if !require_bpf() {
        return;
    }
    let missing = run(["watch", "-p", "999999999", "-d", "2s"], RUN_TIMEOUT);
    missing.assert_code(5);
    assert_eq!(
        missing.stderr.trim().lines().count(),
        1,
        "{}",
        missing.stderr
    );
    let unwritable = run(
        ["watch", "-o", "/nonexistent-dir/x.jsonl", "-d", "2s"],
        RUN_TIMEOUT,
    );
    unwritable.assert_code(6);
    assert!(
        !unwritable.stderr.contains("Watching"),
        "{}",
        unwritable.stderr
    );
    let mut command = std::process::Command::new(stallwatch_tests::stallwatch_bin());
    std::os::unix::process::CommandExt::uid(&mut command, 65534);
    std::os::unix::process::CommandExt::gid(&mut command, 65534);
    let output = command
        .args(["watch", "-d", "1s"])
        .output()
        .expect("running stallwatch as nobody");
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
