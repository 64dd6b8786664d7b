//! Idle processes against their true-positive twins: every thread of a process waiting is no
//! problem by itself (idle pool workers, a consumer on an empty channel, an idle JVM
//! executor); a thread waiting for a result that the idle workers will never produce is.
//! Real programs, the real binary and BPF (`watch -p PID --once`). Root only.

use std::{path::Path, thread, time::Duration};

use stallwatch_tests::{
    TempDir, compile_java, require_bpf,
    watch_report::WatchOutput,
    watch_workloads::{READY, RunningWorkload, once_json},
    workload_file,
};

/// How long a workload may take to start.
const STARTUP: Duration = Duration::from_secs(30);
/// Past `once_json`'s 1 s threshold, with room for a loaded machine.
const SETTLE: Duration = Duration::from_millis(2000);

/// The tids of `roles` in `workload`'s output.
fn tids_of(workload: &RunningWorkload, roles: &[&str]) -> Vec<u32> {
    workload
        .tids()
        .into_iter()
        .filter(|(role, _)| roles.contains(&role.as_str()))
        .map(|(_, tid)| tid)
        .collect()
}

/// Asserts every thread in `tids` is listed, and only as `idle`.
fn assert_listed_idle(report: &WatchOutput, tids: &[u32]) {
    for &tid in tids {
        let verdicts = report.verdicts(tid);
        assert!(
            !verdicts.is_empty() && verdicts.iter().all(|v| v == "idle"),
            "thread {tid} not listed idle ({verdicts:?}):\n{}",
            report.dump()
        );
    }
}

/// Asserts the result waiter `waiter` and the idle workers are `process_stalled`, the waiter
/// explained as waiting for a result of `class` nobody works on, the workers naming it.
fn assert_result_never_comes(report: &WatchOutput, waiter: u32, workers: &[u32], class: &str) {
    let main = report.thread_with(waiter, "process_stalled");
    assert_eq!(main["runtime"]["wait"]["kind"], "result", "{main:#}");
    assert!(
        main["runtime"]["wait"]["class"]
            .as_str()
            .is_some_and(|c| c.starts_with(class)),
        "{main:#}"
    );
    let explanation = main["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains("that no thread is working on"),
        "{explanation}"
    );
    for &tid in workers {
        let t = report.thread_with(tid, "process_stalled");
        assert_eq!(t["result_waiter_tid"], waiter, "{t:#}");
    }
}

/// Check the true-positive twin of the idle Python pool (`verdicts.rs`): main waits in
/// `Future.result()` for a reply a pool job registered and whose request went to a queue
/// nobody reads, the workers idle in `SimpleQueue.get`: `process_stalled` with the
/// result-wait explanation, exit status 10.
#[test]
fn python_pool_whose_result_never_comes_is_process_stalled() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("idle-py-lost-result");
    let workload =
        RunningWorkload::spawn_python(&workload_file("py_lost_result.py"), &["--timeout-s", "60"]);
    workload.wait_for(READY, STARTUP);
    let version = workload
        .lines()
        .into_iter()
        .find_map(|l| l.strip_prefix("version ").map(str::to_owned))
        .expect("version line");
    println!("python {version}");
    thread::sleep(SETTLE);
    let (result, report) = once_json(workload.pid(), &dir.join("once.jsonl"));
    let workers = tids_of(&workload, &["worker"]);
    assert_eq!(workers.len(), 3, "{:?}", workload.lines());
    assert_result_never_comes(
        &report,
        workload.tid("main"),
        &workers,
        "concurrent.futures.Future",
    );
    result.assert_code(10);
}

/// Starts `IdleExecutor` in `mode` and waits past the threshold after it is ready.
fn start_idle_executor(mode: &str, dir: &TempDir) -> RunningWorkload {
    let classpath = dir.path().to_str().expect("UTF-8 temp path");
    let workload = RunningWorkload::spawn(
        Path::new("java"),
        &["-Xmx64m", "-cp", classpath, "IdleExecutor", mode],
    );
    workload.wait_for(READY, STARTUP);
    thread::sleep(SETTLE);
    workload
}

/// Check that an idle JVM executor (workers parked in `LinkedBlockingQueue.take`, main in
/// `CountDownLatch.await()`) has no problem verdict under `-p`: main and the workers listed
/// idle, exit status 0, whatever the VM's own threads (GC, compilers, Signal Dispatcher,
/// Common-Cleaner, timed housekeeping) do.
#[test]
fn idle_jvm_executor_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("idle-jvm");
    compile_java("IdleExecutor", dir.path());
    let workload = start_idle_executor("idle", &dir);
    let (result, report) = once_json(workload.pid(), &dir.join("once.jsonl"));
    assert!(
        report.problems().is_empty(),
        "problems on an idle JVM executor:\n{}",
        report.dump()
    );
    let tids = tids_of(&workload, &["main", "worker"]);
    assert_eq!(tids.len(), 4, "{:?}", workload.lines());
    assert_listed_idle(&report, &tids);
    result.assert_code(0);
}

/// Check the twins of the idle JVM executor: main in `FutureTask.get()` on a task never
/// submitted, or in `CompletableFuture.get()` on a future nobody completes, the workers idle:
/// `process_stalled` with the result-wait explanation, exit status 10; the VM's own threads
/// keep their own verdicts (none is `process_stalled`).
#[test]
fn jvm_result_that_never_comes_is_process_stalled() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("idle-jvm-lost");
    compile_java("IdleExecutor", dir.path());
    for (mode, class) in [
        ("lost-result", "java.util.concurrent.FutureTask"),
        ("lost-completable", "java.util.concurrent.CompletableFuture"),
    ] {
        println!("mode {mode}");
        let workload = start_idle_executor(mode, &dir);
        let (result, report) = once_json(workload.pid(), &dir.join(&format!("{mode}.jsonl")));
        let workers = tids_of(&workload, &["worker"]);
        assert_eq!(workers.len(), 3, "{:?}", workload.lines());
        let main = workload.tid("main");
        assert_result_never_comes(&report, main, &workers, class);
        let program: Vec<u32> = workers.iter().copied().chain([main]).collect();
        for t in report.threads() {
            let tid = t["tid"].as_u64().unwrap_or_default() as u32;
            if !program.contains(&tid) {
                assert_ne!(t["verdict"], "process_stalled", "VM thread: {t:#}");
            }
        }
        result.assert_code(10);
    }
}

/// Check that a Rust process whose workers are parked in `mpsc::Receiver::recv` with no job
/// and whose consumer (main) is parked on an empty `mpsc` channel is listed, every thread
/// `idle`, exit status 0. (Its twin, a `std::sync::Mutex` ABBA, is `watch.rs`'s
/// `rust_mutex_deadlock`.)
#[test]
fn rust_consumer_on_empty_channel_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("idle-rust");
    let workload = RunningWorkload::spawn(Path::new(env!("CARGO_BIN_EXE_rust_idle_channels")), &[]);
    workload.wait_for(READY, STARTUP);
    thread::sleep(SETTLE);
    let (result, report) = once_json(workload.pid(), &dir.join("once.jsonl"));
    assert!(
        report.problems().is_empty(),
        "problems on idle channels:\n{}",
        report.dump()
    );
    let tids = tids_of(&workload, &["main", "worker"]);
    assert_eq!(tids.len(), 4, "{:?}", workload.lines());
    assert_listed_idle(&report, &tids);
    assert_eq!(report.threads().len(), 4, "{}", report.dump());
    result.assert_code(0);
}
