//! Tests of `watch_workloads`.

use std::net::TcpStream;

use super::*;
use crate::{deadlock_abba_bin, healthy_bin, recv_stall_bin, workload_file};

const SECOND: Duration = Duration::from_secs(1);
/// Safety timeout for the workloads these tests start.
const TIMEOUT: [&str; 2] = [TIMEOUT_S_ARG, "60"];

fn check_abba(pi: bool) {
    let mut args = TIMEOUT.to_vec();
    if pi {
        args.push(abba::PI_FLAG);
    }
    let w = RunningWorkload::spawn(deadlock_abba_bin(), &args);
    w.wait_for(READY, STARTUP_TIMEOUT);
    assert_abba_deadlock(
        &w,
        (abba::THREAD_A, abba::THREAD_B),
        (abba::LOCK_A, abba::LOCK_B),
        pi,
    );
    // main joins abba-a forever; the healthy thread keeps running.
    assert_stuck_in(&w, &[MAIN], &[SYS_FUTEX], Duration::ZERO);
    assert_running(&w, &[abba::HEALTHY], SECOND);
    w.lock(abba::LOCK_C);
}

#[test]
fn deadlock_abba_deadlocks() {
    check_abba(false);
}

#[test]
fn deadlock_abba_pi_deadlocks() {
    check_abba(true);
}

#[test]
fn deadlock_abba_kills_itself_after_its_timeout() {
    let mut w = RunningWorkload::spawn(deadlock_abba_bin(), &[TIMEOUT_S_ARG, "1"]);
    w.wait_for(READY, STARTUP_TIMEOUT);
    let status = w.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status}");
}

#[test]
fn recv_stall_clients_block_in_recv() {
    let w = RunningWorkload::spawn(recv_stall_bin(), &TIMEOUT);
    w.wait_for(READY, STARTUP_TIMEOUT);
    let stuck = assert_stuck_in(&w, &recv::CLIENTS, &[SYS_RECVFROM, SYS_RECVMSG], SECOND);
    // Four distinct sockets.
    let mut fds: Vec<u64> = stuck.iter().map(|s| s.args[0]).collect();
    fds.sort();
    fds.dedup();
    assert_eq!(fds.len(), 4, "{stuck:?}");
    assert_stuck_in(
        &w,
        &[recv::SERVER],
        &[SYS_ACCEPT, SYS_ACCEPT4],
        Duration::ZERO,
    );
    assert_stuck_in(&w, &[MAIN], &[SYS_FUTEX], Duration::ZERO);
    // The reported port is the server's: it accepts us too, and then waits again.
    let _conn = TcpStream::connect(("127.0.0.1", w.port())).expect("connecting to the server");
    wait_until_blocked_in(&w, recv::SERVER, &[SYS_ACCEPT, SYS_ACCEPT4], SECOND);
    assert_stuck_in(&w, &[recv::SERVER], &[SYS_ACCEPT, SYS_ACCEPT4], SECOND);
}

#[test]
fn recv_stall_delay_postpones_the_stall() {
    let w = RunningWorkload::spawn(
        recv_stall_bin(),
        &[DELAY_MS_ARG, "1500", TIMEOUT[0], TIMEOUT[1]],
    );
    let start = Instant::now();
    w.port();
    for client in recv::CLIENTS {
        let sys = task_syscall(w.pid(), w.tid(client));
        assert!(
            sys.is_none_or(|s| s.nr != SYS_RECVFROM),
            "{client} in recv before the delay ended: {sys:?}"
        );
    }
    w.wait_for(READY, STARTUP_TIMEOUT);
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn healthy_has_nothing_stuck() {
    let w = RunningWorkload::spawn(healthy_bin(), &TIMEOUT);
    w.wait_for(READY, STARTUP_TIMEOUT);
    let idle: Vec<&str> = healthy::POOL.iter().copied().chain([MAIN]).collect();
    let busy: Vec<String> = w
        .tids()
        .into_iter()
        .map(|(role, _)| role)
        .filter(|role| !idle.contains(&role.as_str()))
        .collect();
    assert_eq!(busy.len(), 6, "{busy:?}");
    // main prints READY just before it joins.
    wait_until_blocked_in(&w, MAIN, &[SYS_FUTEX], SECOND);
    let busy: Vec<&str> = busy.iter().map(String::as_str).collect();
    // Sample the idle ones over the same second: pool workers and main never run.
    let all: Vec<&str> = busy.iter().chain(&idle).copied().collect();
    for (role, before, after) in run_counts_over(&w, &all, SECOND) {
        if idle.contains(&role.as_str()) {
            assert_eq!(before, after, "{role} ran");
        } else {
            assert!(after > before, "{role} never ran");
        }
    }
    assert_stuck_in(&w, &healthy::POOL, &[SYS_FUTEX], Duration::ZERO);
    for lock in [
        healthy::LOCK_CV,
        healthy::LOCK_QUEUE,
        healthy::LOCK_CONTENDED,
    ] {
        w.lock(lock);
    }
}

fn check_asyncio(mode: &str, nr: i64) {
    let script = workload_file(asyncio::SCRIPT);
    let w = RunningWorkload::spawn_python(
        &script,
        &[mode, asyncio::WARMUP_S_ARG, "1.5", TIMEOUT[0], TIMEOUT[1]],
    );
    w.wait_for(READY, STARTUP_TIMEOUT);
    // The loop cycles (50 ms ticks) during the warmup.
    assert_running(&w, &[asyncio::LOOP], Duration::from_millis(500));
    w.wait_for(asyncio::BLOCKING, STARTUP_TIMEOUT);
    thread::sleep(Duration::from_millis(200));
    assert_stuck_in(&w, &[asyncio::LOOP], &[nr], SECOND);
    if mode == asyncio::MODE_LOCK {
        assert_stuck_in(
            &w,
            &[asyncio::HOLDER],
            &[SYS_CLOCK_NANOSLEEP],
            Duration::ZERO,
        );
    }
}

#[test]
fn asyncio_sleep_blocks_the_loop() {
    check_asyncio(asyncio::MODE_SLEEP, SYS_CLOCK_NANOSLEEP);
}

#[test]
fn asyncio_lock_blocks_the_loop() {
    check_asyncio(asyncio::MODE_LOCK, SYS_FUTEX);
}

#[test]
fn asyncio_kills_itself_after_its_timeout() {
    let script = workload_file(asyncio::SCRIPT);
    let args = [
        asyncio::MODE_LOCK,
        asyncio::WARMUP_S_ARG,
        "0",
        TIMEOUT_S_ARG,
        "1",
    ];
    let mut w = RunningWorkload::spawn_python(&script, &args);
    w.wait_for(asyncio::BLOCKING, STARTUP_TIMEOUT);
    let status = w.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status}");
}
