//! The `rust_mutex_abba` workload really deadlocks (no tracer, no root).
//!
//! It is a binary target of this crate, so only integration tests know its path
//! (`CARGO_BIN_EXE_*`); the C and Python workloads are checked by the library's unit tests.

use std::{path::Path, time::Duration};

use stallwatch_tests::watch_workloads::{
    MAIN, READY, RunningWorkload, STARTUP_TIMEOUT, SYS_CLOCK_NANOSLEEP, SYS_FUTEX, TIMEOUT_S_ARG,
    assert_abba_deadlock, assert_stuck_in, rust_abba, wait_until_blocked_in,
};

fn rust_mutex_abba_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rust_mutex_abba"))
}

#[test]
fn rust_mutex_abba_deadlocks() {
    let w = RunningWorkload::spawn(rust_mutex_abba_bin(), &[TIMEOUT_S_ARG, "60"]);
    w.wait_for(READY, STARTUP_TIMEOUT);
    assert_abba_deadlock(
        &w,
        (rust_abba::THREAD_A, rust_abba::THREAD_B),
        (rust_abba::LOCK_A, rust_abba::LOCK_B),
        false,
    );
    wait_until_blocked_in(&w, MAIN, &[SYS_FUTEX], Duration::from_secs(1));
    assert_stuck_in(
        &w,
        &[rust_abba::WATCHDOG],
        &[SYS_CLOCK_NANOSLEEP],
        Duration::ZERO,
    );
}

#[test]
fn rust_mutex_abba_kills_itself_after_its_timeout() {
    let mut w = RunningWorkload::spawn(rust_mutex_abba_bin(), &[TIMEOUT_S_ARG, "1"]);
    w.wait_for(READY, STARTUP_TIMEOUT);
    let status = w.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(124), "{status}");
}
