//! Tests of `summary`.

use std::time::Duration;

use tracer_common::syscalls::kind;

use super::*;
use crate::model::{OffCpuSample, SyscallCall};

fn s(pid: u32, tid: u32, comm: &str, wait_kind: u32, state: ThreadState, ns: u64) -> OffCpuSample {
    OffCpuSample {
        pid,
        tid,
        comm: comm.into(),
        call: (wait_kind != kind::NONE).then(|| SyscallCall {
            kind: WaitKind::from_raw(wait_kind),
            ..SyscallCall::default()
        }),
        state: Some(state),
        total_ns: ns,
        count: 2,
        max_ns: ns,
        ..OffCpuSample::default()
    }
}

fn capture() -> Capture {
    let mut still = s(20, 21, "db-io", kind::READ, ThreadState::Disk, 4_000_000);
    still.still_blocked = true;
    let mut c = Capture {
        samples: vec![
            s(
                10,
                10,
                "server",
                kind::EPOLL,
                ThreadState::Sleeping,
                1_000_000,
            ),
            s(
                10,
                11,
                "worker",
                kind::FUTEX,
                ThreadState::Sleeping,
                3_000_400,
            ),
            s(
                10,
                11,
                "worker",
                kind::FUTEX,
                ThreadState::Runnable,
                9_000_000,
            ),
            still,
            s(30, 31, "helper", kind::NONE, ThreadState::Other, 500_000),
        ],
        duration: Duration::from_millis(2_500),
        ..Capture::default()
    };
    c.process_names.insert(10, "server-main".into());
    c.counters.waits_charged = 11;
    c.counters.stack_memo_hits = 4;
    c
}

/// Check that totals count blocked time only, runnable apart, still-blocked included,
/// and lists are sorted by time descending with names from capture, callback, comm.
#[test]
fn totals_separate_blocked_runnable_and_still_blocked() {
    let sum = Summary::from_capture(&capture(), |pid| (pid == 20).then(|| "db".into()));
    assert_eq!(sum.duration_ms, 2_500);
    assert_eq!(sum.blocked_us, 8_500);
    assert_eq!(sum.runnable_us, 9_000);
    assert_eq!(sum.still_blocked_us, 4_000);
    assert_eq!(sum.waits, 8);
    let procs: Vec<(u32, &str, u64)> = sum
        .processes
        .iter()
        .map(|p| (p.pid, p.name.as_str(), p.offcpu_us))
        .collect();
    assert_eq!(
        procs,
        [
            (10, "server-main", 4_000),
            (20, "db", 4_000),
            (30, "helper", 500)
        ]
    );
    let kinds: Vec<(&str, u64, u64)> = sum
        .wait_kinds
        .iter()
        .map(|k| (k.kind.as_str(), k.offcpu_us, k.waits))
        .collect();
    assert_eq!(
        kinds,
        [
            ("read", 4_000, 2),
            ("futex", 3_000, 2),
            ("epoll", 1_000, 2),
            ("other", 500, 2)
        ]
    );
    let threads: Vec<(u32, &str, u64)> = sum
        .threads
        .iter()
        .map(|t| (t.tid, t.comm.as_str(), t.offcpu_us))
        .collect();
    assert_eq!(
        threads,
        [
            (21, "db-io", 4_000),
            (11, "worker", 3_000),
            (10, "server", 1_000),
            (31, "helper", 500)
        ]
    );
    assert!(sum.losses.is_empty());
}

/// Check the text block: totals, top-N processes, kinds, events, and "Lost: none".
#[test]
fn render_text_shows_totals_top_processes_and_no_losses() {
    let text = Summary::from_capture(&capture(), |_| None).render_text(2);
    assert!(
        text.starts_with("Traced 2.50 s: 8.5 ms blocked off-CPU in 8 waits, 9.0 ms runnable"),
        "{text}"
    );
    assert!(text.contains("4.0 ms in waits still blocked"), "{text}");
    assert!(text.contains("(top 2 of 3)"), "{text}");
    assert!(text.contains("server-main (10)"), "{text}");
    assert!(!text.contains("helper (30)"), "{text}");
    assert!(text.contains("futex"), "{text}");
    assert!(text.contains("Events: 11 waits charged, 4 stack memo hits, 0 wakers recorded"));
    assert!(text.ends_with("Lost: none\n"), "{text}");
}

/// Check that losses are listed with counts and a hint.
#[test]
fn losses_are_listed_with_hints() {
    let mut c = capture();
    c.counters.drop_stacks_full = 12;
    c.counters.user_stack_errors = 3;
    let sum = Summary::from_capture(&c, |_| None);
    assert_eq!(
        sum.losses,
        [
            Loss {
                reason: "stack map full".into(),
                count: 12,
                hint: "raise --stack-storage-size".into(),
            },
            Loss {
                reason: "user stack error".into(),
                count: 3,
                hint: "user stack walks failed; those waits show [missed user stack]".into(),
            },
        ]
    );
    let text = sum.render_text(10);
    assert!(
        text.contains("  stack map full: 12 (raise --stack-storage-size)"),
        "{text}"
    );
    assert!(!text.contains("Lost: none"));
}

/// Check that the summary round-trips through JSON.
#[test]
fn summary_round_trips_through_json() {
    let sum = Summary::from_capture(&capture(), |_| None);
    let json = serde_json::to_string(&sum).unwrap();
    assert_eq!(serde_json::from_str::<Summary>(&json).unwrap(), sum);
    assert!(json.contains("\"blocked_us\":8500"));
}

/// Check that an empty capture gives zeros and still renders.
#[test]
fn empty_capture_renders() {
    let text = Summary::from_capture(&Capture::default(), |_| None).render_text(5);
    assert!(
        text.starts_with("Traced 0 us: 0 us blocked off-CPU in 0 waits"),
        "{text}"
    );
}
