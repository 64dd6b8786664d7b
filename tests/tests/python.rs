//! `stallwatch watch` on stuck CPython programs: Python stacks read from memory on every CPython
//! version found here, thread names and what each Python thread waits for (an executor's join,
//! RLocks in a deadlock cycle, a plain Lock with no owner), subinterpreters. Root only.
//!
//! Ground truth comes from the workloads (`workloads/py_*.py`, see
//! [`stallwatch_tests::pythons`]): each prints its tids, locks and ports once its threads are
//! really stuck, and marks the lines its frames stop at with `# LINE: <tag>`.

use std::{path::Path, thread, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir,
    pythons::{
        ExpectedFrame, PyWorkload, Python, all_pythons, assert_stack, debian_and_newest, def_line,
        python_stack, scripts,
    },
    require_bpf,
    tracer::{RunOutput, Tracer, run},
    watch_report::WatchOutput,
    watch_workloads::{self, DELAY_MS_ARG, once_json},
};

/// `--threshold` of every run.
const THRESHOLD: &str = "1s";
/// How long to wait after a workload's facts (its threads stuck for 0.3 s already) so that its
/// waits are past [`THRESHOLD`].
const PAST_THRESHOLD: Duration = Duration::from_millis(1200);
/// Long enough for a live `watch` to attach before the workload blocks.
const ATTACH_DELAY_MS: &str = "3000";
/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// `co_filename` of code that `run_string` runs in a subinterpreter (checked by hand on 3.8,
/// 3.11 and 3.13).
const SUBINTERPRETER_FILE: &str = "<string>";
/// `watch` exit statuses.
const EXIT_STALLS: i32 = 10;
const EXIT_DEADLOCK: i32 = 11;

/// `watch -p PID --once --threshold 1s` (the text report, on stdout).
fn once_text(pid: u32) -> RunOutput {
    let pid = pid.to_string();
    run(
        ["watch", "-p", &pid, "--once", "--threshold", THRESHOLD],
        RUN_TIMEOUT,
    )
}

/// The facts' `threads.<role>.tid`.
fn tid_of(facts: &Value, role: &str) -> u32 {
    let tid = facts["threads"][role]["tid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tid for {role} in facts {facts}"));
    u32::try_from(tid).expect("tid fits u32")
}

/// The first thread object of `tid` with `verdict` (any verdict when `None`).
fn thread_obj<'a>(report: &'a WatchOutput, tid: u32, verdict: Option<&str>) -> &'a Value {
    report
        .thread(tid)
        .into_iter()
        .find(|t| verdict.is_none_or(|v| t["verdict"] == v))
        .unwrap_or_else(|| {
            panic!(
                "no thread object for tid {tid} with verdict {verdict:?}:\n{}",
                report.dump()
            )
        })
}

/// The `runtimes[]` entry of `pid`; checks it is CPython of the facts' version.
fn runtime_entry<'a>(report: &'a WatchOutput, pid: u32, facts: &Value) -> &'a Value {
    let entry = report
        .reports
        .iter()
        .flat_map(|r| r["runtimes"].as_array().into_iter().flatten())
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("no runtimes[] entry for pid {pid}:\n{}", report.dump()));
    assert_eq!(entry["runtime"], "cpython", "{entry:#}");
    assert_eq!(entry["version"], facts["python"]["version"], "{entry:#}");
    entry
}

/// The thread object's `runtime` facts, checked to be CPython's.
fn runtime_of(thread: &Value) -> &Value {
    let runtime = &thread["runtime"];
    assert_eq!(runtime["runtime"], "cpython", "runtime facts:\n{thread:#}");
    runtime
}

/// The stdlib's `threading.py` of this interpreter (from the facts).
fn threading_file(facts: &Value) -> &Path {
    Path::new(
        facts["python"]["threading_file"]
            .as_str()
            .expect("threading_file in facts"),
    )
}

/// The frames every `threading.Thread` ends with, innermost first: `Thread.run` (calling the
/// target), `Thread._bootstrap_inner`, `Thread._bootstrap`.
fn thread_bootstrap_frames(python: &Python, threading: &Path) -> Vec<ExpectedFrame> {
    [
        ("Thread.run", "run", "self._target("),
        ("Thread._bootstrap_inner", "_bootstrap_inner", "self.run()"),
        ("Thread._bootstrap", "_bootstrap", "self._bootstrap_inner()"),
    ]
    .into_iter()
    .map(|(qualname, def, call)| {
        ExpectedFrame::at(
            python.frame_name(qualname),
            threading,
            def_line(threading, def, call),
        )
    })
    .collect()
}

/// Check that on every CPython here (Debian's 3.11, pyenv's 3.8 to 3.13) the Python stacks of
/// a waiter on a Lock and of the thread holding it are read with the right tids, function
/// names (qualified from 3.11), files and lines, down to the threading bootstrap frames; and
/// that the process is named as CPython of the right version.
#[test]
fn python_stacks_on_every_cpython_version() {
    if !require_bpf() {
        return;
    }
    let pythons = all_pythons();
    let dir = TempDir::new("python-versions");
    // All at once: each waits for its facts and the threshold in parallel.
    let workloads: Vec<PyWorkload> = pythons
        .iter()
        .map(|p| PyWorkload::spawn(p, scripts::LOCK_WAIT, &[]))
        .collect();
    let facts: Vec<Value> = workloads.iter().map(PyWorkload::facts).collect();
    thread::sleep(PAST_THRESHOLD);
    for (workload, facts) in workloads.iter().zip(&facts) {
        let python = &workload.python;
        let context = python.to_string();
        let pid = workload.pid();
        let (_, report) = once_json(
            pid,
            &dir.join(&format!("{}.jsonl", python.version_string())),
        );
        let waiter = thread_obj(&report, tid_of(facts, "waiter"), None);
        assert_stack(
            &python_stack(waiter),
            &[
                workload.frame("wait_for_lock", "waiter-acquire"),
                workload.frame("main", "waiter-main"),
                workload.frame("<module>", "lock-module"),
            ],
            &format!("{context}: waiter"),
        );
        let holder = thread_obj(&report, tid_of(facts, "holder"), None);
        let mut expected = vec![workload.frame("Holder.hold_forever", "holder-read")];
        expected.extend(thread_bootstrap_frames(python, threading_file(facts)));
        assert_stack(
            &python_stack(holder),
            &expected,
            &format!("{context}: holder"),
        );
        assert_eq!(
            runtime_of(holder)["thread_name"],
            "holder",
            "{context}:\n{holder:#}"
        );
        runtime_entry(&report, pid, facts);
        eprintln!("covered {python}");
    }
    let versions: Vec<String> = pythons.iter().map(Python::version_string).collect();
    eprintln!("CPython versions covered: {}", versions.join(", "));
}

/// Checks a report of `py_executor_shutdown` once stuck: the loop thread is
/// `event_loop_blocked` in `ThreadPoolExecutor.shutdown`, joining the worker (runtime wait
/// `join`, owner the worker's tid, both in `runtime` and in `resource`); the worker is a
/// `stall` in `recv` on the silent server, named `pool_0`, in `wait_for_reply`.
fn assert_executor_chain(workload: &PyWorkload, facts: &Value, report: &WatchOutput) {
    let python = &workload.python;
    let context = python.to_string();
    let (loop_tid, worker_tid) = (tid_of(facts, "loop"), tid_of(facts, "worker"));
    let executor_file = Path::new(facts["files"]["executor"].as_str().expect("executor file"));
    let threading = threading_file(facts);
    // Below 3.13 join waits in Thread._wait_for_tstate_lock; 3.13 joins a C _ThreadHandle
    // straight from Thread.join.
    let mut expected = Vec::new();
    if python.version < (3, 13, 0) {
        expected.push(ExpectedFrame::at(
            python.frame_name("Thread._wait_for_tstate_lock"),
            threading,
            def_line(
                threading,
                "_wait_for_tstate_lock",
                "lock.acquire(block, timeout)",
            ),
        ));
        expected.push(ExpectedFrame::at(
            python.frame_name("Thread.join"),
            threading,
            def_line(threading, "join", "self._wait_for_tstate_lock()"),
        ));
    } else {
        expected.push(ExpectedFrame::at(
            python.frame_name("Thread.join"),
            threading,
            def_line(threading, "join", "self._handle.join("),
        ));
    }
    expected.push(ExpectedFrame::at(
        python.frame_name("ThreadPoolExecutor.shutdown"),
        executor_file,
        def_line(executor_file, "shutdown", "t.join()"),
    ));
    expected.push(workload.frame("shutdown_in_task", "loop-shutdown"));
    assert_stack(
        &python_stack(thread_obj(report, loop_tid, None)),
        &expected,
        &format!("{context}: loop"),
    );
    let mut expected = vec![
        workload.frame("wait_for_reply", "worker-recv"),
        ExpectedFrame::at(
            python.frame_name("_WorkItem.run"),
            executor_file,
            def_line(executor_file, "run", "self.fn("),
        ),
        ExpectedFrame::at(
            "_worker",
            executor_file,
            def_line(executor_file, "_worker", "work_item.run()"),
        ),
    ];
    expected.extend(thread_bootstrap_frames(python, threading));
    assert_stack(
        &python_stack(thread_obj(report, worker_tid, None)),
        &expected,
        &format!("{context}: worker"),
    );

    let looper = thread_obj(report, loop_tid, Some("event_loop_blocked"));
    let runtime = runtime_of(looper);
    assert_eq!(runtime["wait"]["kind"], "join", "{context}:\n{looper:#}");
    assert_eq!(
        runtime["wait"]["owner_tid"], worker_tid,
        "{context}:\n{looper:#}"
    );
    assert_eq!(runtime["event_loop"], true, "{context}:\n{looper:#}");
    assert_eq!(
        looper["resource"]["owner_tid"], worker_tid,
        "{context}:\n{looper:#}"
    );
    assert_eq!(
        looper["resource"]["owner_source"], "runtime_join",
        "{context}:\n{looper:#}"
    );
    // The workload names the task on every version (create_task(name=) exists from 3.8).
    assert_eq!(
        runtime["task"], facts["task"],
        "{context}: task name:\n{looper:#}"
    );

    let worker = thread_obj(report, worker_tid, Some("stall"));
    assert_eq!(
        worker["resource"]["peer"], facts["threads"]["worker"]["peer"],
        "{context}:\n{worker:#}"
    );
    assert_eq!(
        worker["wait"]["syscall"], "recvfrom",
        "{context}:\n{worker:#}"
    );
    assert_eq!(
        runtime_of(worker)["thread_name"],
        facts["threads"]["worker"]["name"],
        "{context}:\n{worker:#}"
    );
    let runtimes = runtime_entry(report, workload.pid(), facts);
    assert_eq!(runtimes["interpreters"], 1, "{context}: {runtimes:#}");
}

/// Checks the text report of `py_executor_shutdown`: the loop thread's block names the
/// worker it waits for (tid and thread name) after the loop thread itself, and shows the
/// Python frames among the native ones.
fn assert_executor_text(workload: &PyWorkload, facts: &Value, text: &str) {
    let context = workload.python.to_string();
    let loop_tid = tid_of(facts, "loop").to_string();
    let worker_tid = tid_of(facts, "worker").to_string();
    let worker_name = facts["threads"]["worker"]["name"].as_str().expect("name");
    let at_loop = text
        .find(&loop_tid)
        .unwrap_or_else(|| panic!("{context}: loop tid {loop_tid} not in:\n{text}"));
    let after = &text[at_loop..];
    assert!(
        after.contains(&worker_tid) && after.contains(worker_name),
        "{context}: the worker ({worker_tid}, {worker_name}) is not named after the loop \
         thread {loop_tid}:\n{text}"
    );
    let shutdown = workload.python.frame_name("ThreadPoolExecutor.shutdown");
    for frame in [shutdown, "shutdown_in_task", "wait_for_reply"] {
        assert!(
            text.contains(frame),
            "{context}: Python frame {frame} not in the text report:\n{text}"
        );
    }
}

/// Check that an asyncio loop that has been stuck in `ThreadPoolExecutor.shutdown` (joining a
/// worker stuck in `recv`) since before `watch` started is explained by `--once`, JSON and
/// text, on Debian's 3.11 and the newest pyenv version: the loop blocked, joining the worker
/// by tid, the worker stalled on the silent server, with both Python stacks.
#[test]
fn executor_shutdown_chain_stuck_before_watch() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("python-executor-before");
    for python in debian_and_newest() {
        let workload = PyWorkload::spawn(&python, scripts::EXECUTOR_SHUTDOWN, &[]);
        let facts = workload.facts();
        thread::sleep(PAST_THRESHOLD);
        let name = format!("{}.jsonl", python.version_string());
        let (result, report) = once_json(workload.pid(), &dir.join(&name));
        assert_executor_chain(&workload, &facts, &report);
        result.assert_code(EXIT_STALLS);
        let text = once_text(workload.pid());
        text.assert_code(EXIT_STALLS);
        assert_executor_text(&workload, &facts, &text.stdout);
        eprintln!("covered {python}");
    }
}

/// Check the same chain when it forms while a live `watch --json` runs (attached while the
/// loop still cycles), on Debian's 3.11 and the newest pyenv version.
#[test]
fn executor_shutdown_chain_stuck_while_watching() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("python-executor-live");
    for python in debian_and_newest() {
        let workload = PyWorkload::spawn(
            &python,
            scripts::EXECUTOR_SHUTDOWN,
            &[DELAY_MS_ARG, ATTACH_DELAY_MS],
        );
        let out = dir.join(&format!("{}.jsonl", python.version_string()));
        let args = [
            "--json",
            "-o",
            out.to_str().expect("UTF-8 temp path"),
            "--threshold",
            THRESHOLD,
            "--interval",
            "200ms",
        ];
        let tracer: Tracer = watch_workloads::attach_watch(&workload.running, &args, "BLOCKING");
        let facts = workload.facts();
        thread::sleep(PAST_THRESHOLD + Duration::from_millis(500));
        let result = tracer.stop(libc::SIGINT);
        let report = WatchOutput::read(&out);
        assert_executor_chain(&workload, &facts, &report);
        result.assert_code(EXIT_STALLS);
        eprintln!("covered {python}");
    }
}

/// Check that an ABBA deadlock on two RLocks held in locals is one `deadlock` cycle between
/// the two threads, each waiting for the RLock the other owns (class `_thread.RLock`, object
/// the lock's address), with the lock-call Python frames, and the jstack-style cycle block of
/// the text report shows both threads' Python frames; main, joining one of them, is blocked by
/// the deadlock. On Debian's 3.11 and the newest pyenv version.
#[test]
fn rlock_abba_is_a_deadlock_cycle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("python-rlock-abba");
    for python in debian_and_newest() {
        let context = python.to_string();
        let workload = PyWorkload::spawn(&python, scripts::RLOCK_ABBA, &[]);
        let facts = workload.facts();
        thread::sleep(PAST_THRESHOLD);
        let name = format!("{}.jsonl", python.version_string());
        let (result, report) = once_json(workload.pid(), &dir.join(&name));
        let (a, b) = (tid_of(&facts, "abba-a"), tid_of(&facts, "abba-b"));
        for (role, tid) in [("abba-a", a), ("abba-b", b)] {
            assert_stack(
                &python_stack(thread_obj(&report, tid, None)),
                &[
                    workload.frame("take_second", "abba-take-second"),
                    workload.frame("lock_in_order", "abba-lock-in-order"),
                ],
                &format!("{context}: {role}"),
            );
        }
        result.assert_code(EXIT_DEADLOCK);
        let cycles = report.distinct_cycles();
        let mut expected = vec![(a, b), (b, a)];
        expected.sort_unstable();
        assert_eq!(cycles, [expected], "{context}: cycles:\n{}", report.dump());

        for (role, tid, owner) in [("abba-a", a, b), ("abba-b", b, a)] {
            let t = thread_obj(&report, tid, Some("deadlock"));
            assert_eq!(
                t["resource"]["owner_tid"], owner,
                "{context} {role}:\n{t:#}"
            );
            assert_eq!(
                t["resource"]["owner_source"], "runtime_lock",
                "{context} {role}:\n{t:#}"
            );
            let wait = &runtime_of(t)["wait"];
            assert_eq!(wait["kind"], "lock", "{context} {role}:\n{t:#}");
            assert_eq!(wait["owner_tid"], owner, "{context} {role}:\n{t:#}");
            assert!(
                wait["class"].as_str().is_some_and(|c| c.contains("RLock")),
                "{context} {role}: class:\n{t:#}"
            );
            // `object` is the RLock's PyObject address (Python's id()).
            let wanted = facts["threads"][role]["waits_for"].as_str().expect("lock");
            assert_eq!(
                wait["object"], facts["locks"][wanted],
                "{context} {role}: object is not RLock {wanted}:\n{t:#}"
            );
        }
        let main = thread_obj(&report, tid_of(&facts, "main"), None);
        assert_eq!(
            main["verdict"], "blocked_by_deadlock",
            "{context}: main joins abba-a:\n{main:#}"
        );
        assert_eq!(
            runtime_of(main)["wait"]["kind"],
            "join",
            "{context}:\n{main:#}"
        );
        assert_eq!(
            runtime_of(main)["wait"]["owner_tid"],
            a,
            "{context}:\n{main:#}"
        );

        let text = once_text(workload.pid());
        text.assert_code(EXIT_DEADLOCK);
        let at = text.stdout.find("Found one deadlock").unwrap_or_else(|| {
            panic!(
                "{context}: no jstack-style cycle block in:\n{}",
                text.stdout
            )
        });
        let block = &text.stdout[at..];
        for needle in [
            a.to_string().as_str(),
            b.to_string().as_str(),
            "take_second",
            "lock_in_order",
            "RLock",
        ] {
            assert!(
                block.contains(needle),
                "{context}: {needle} not in the deadlock block:\n{block}"
            );
        }
        eprintln!("covered {python}");
    }
}

/// Check that a thread waiting on a plain `threading.Lock` (which records no owner) is a
/// `stall` whose runtime wait is an ownerless lock, and that no owner is invented (not the
/// thread that took the lock, nor any other), on Debian's 3.11 and the newest pyenv version.
#[test]
fn plain_lock_waiter_has_no_invented_owner() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("python-plain-lock");
    for python in debian_and_newest() {
        let context = python.to_string();
        let workload = PyWorkload::spawn(&python, scripts::LOCK_WAIT, &[]);
        let facts = workload.facts();
        thread::sleep(PAST_THRESHOLD);
        let name = format!("{}.jsonl", python.version_string());
        let (result, report) = once_json(workload.pid(), &dir.join(&name));
        let waiter_tid = tid_of(&facts, "waiter");
        assert_stack(
            &python_stack(thread_obj(&report, waiter_tid, None)),
            &[workload.frame("wait_for_lock", "waiter-acquire")],
            &format!("{context}: waiter"),
        );
        assert!(
            report.cycles().is_empty(),
            "{context}: invented cycle:\n{}",
            report.dump()
        );
        let waiter = thread_obj(&report, waiter_tid, Some("stall"));
        assert!(
            waiter["resource"]["owner_tid"].is_null(),
            "{context}: invented owner:\n{waiter:#}"
        );
        let wait = &runtime_of(waiter)["wait"];
        // A plain Lock is found, and said to have no owner.
        assert_eq!(wait["kind"], "ownerless_lock", "{context}:\n{waiter:#}");
        assert!(
            wait["owner_tid"].is_null(),
            "{context}: invented owner:\n{waiter:#}"
        );
        assert!(
            wait["class"].as_str().is_some_and(|c| c.contains("lock")),
            "{context}: class:\n{waiter:#}"
        );
        let holder = tid_of(&facts, "holder");
        for t in report.threads() {
            assert!(
                t["resource"]["owner_tid"] != holder && t["runtime"]["wait"]["owner_tid"] != holder,
                "{context}: the holder of a plain Lock is not knowable:\n{t:#}"
            );
        }
        result.assert_code(EXIT_STALLS);
        eprintln!("covered {python}");
    }
}

/// Check that a process with a subinterpreter is seen with both interpreters, and that the
/// thread blocked in the subinterpreter shows the subinterpreter's frames
/// (`blocked_in_subinterpreter`) with its own tid, while main shows the main interpreter's,
/// on every CPython here.
#[test]
fn subinterpreter_threads_have_their_python_stacks() {
    if !require_bpf() {
        return;
    }
    let pythons = all_pythons();
    let dir = TempDir::new("python-subinterp");
    let workloads: Vec<PyWorkload> = pythons
        .iter()
        .map(|p| PyWorkload::spawn(p, scripts::SUBINTERP, &[]))
        .collect();
    let facts: Vec<Value> = workloads.iter().map(PyWorkload::facts).collect();
    thread::sleep(PAST_THRESHOLD);
    for (workload, facts) in workloads.iter().zip(&facts) {
        let python = &workload.python;
        let context = python.to_string();
        let pid = workload.pid();
        let (_, report) = once_json(
            pid,
            &dir.join(&format!("{}.jsonl", python.version_string())),
        );
        let sub = thread_obj(&report, tid_of(facts, "subinterp"), None);
        let sub_line = facts["sub_line"].as_u64().expect("sub_line");
        let sub_call_line = facts["sub_call_line"].as_u64().expect("sub_call_line");
        assert_stack(
            &python_stack(sub),
            &[
                ExpectedFrame {
                    file: Some(SUBINTERPRETER_FILE.to_owned()),
                    line: Some(sub_line),
                    ..ExpectedFrame::named("blocked_in_subinterpreter")
                },
                ExpectedFrame {
                    file: Some(SUBINTERPRETER_FILE.to_owned()),
                    line: Some(sub_call_line),
                    ..ExpectedFrame::named("<module>")
                },
            ],
            &format!("{context}: subinterpreter thread"),
        );
        let main = thread_obj(&report, tid_of(facts, "main"), None);
        assert_stack(
            &python_stack(main),
            &[
                workload.frame("blocked_in_main_interpreter", "main-read"),
                workload.frame("main", "main-call"),
            ],
            &format!("{context}: main"),
        );
        let entry = runtime_entry(&report, pid, facts);
        assert!(
            entry["interpreters"].as_u64() >= facts["interpreters"].as_u64(),
            "{context}: {} interpreters in the process:\n{entry:#}",
            facts["interpreters"]
        );
        eprintln!("covered {python} ({})", facts["module"]);
    }
}
