//! `profile --unwind`: the `offcpu_sites` workload built the way distributions build code
//! (`-O2 -fomit-frame-pointer`, system libc), whose stacks a frame-pointer walk cannot follow.
//! With `--unwind dwarf` and `auto` every blocking site, the `pthread_cond_wait` inside libc
//! included, is attributed to the function that waited and its callers up to the thread's
//! start, with the workload's own clock as ground truth; with `--unwind fp` those callers are
//! lost, which is why the stack copies exist.
//!
//! Root only; run with `--test-threads=1` (`cargo xtask test`).

use stallwatch_tests::{
    TempDir, assert_close,
    folded::{FoldedLine, any_frame_contains},
    offcpu_sites_nofp_bin, require_bpf,
    sites::{FUTEX_WAIT_FRAMES, SitesTrace, pid_filter, trace_sites_binary},
    workload::{CONDVAR, EPOLL, GATE_FUNCTION, PIPE, SIGNAL, SLEEP},
};

/// Per-site totals may differ from the workload's clock by this fraction (as in `profile.rs`).
const TOLERANCE: f64 = 0.02;
/// 100 waits of 20 ms per site (2 s per run).
const ITERATIONS: u32 = 100;
/// The workload's site period.
const SITE_PERIOD_US: u64 = 20_000;

/// Each site thread, a kernel frame its wait must show, and the user frames, outermost first,
/// that each of its site lines must hold in this order: the thread's start, the thread's
/// function, the function that waited (and for the condvar, libc's `pthread_cond_wait`, which
/// has no frame pointer).
const CHAINS: &[(&str, &[&str], &[&str])] = &[
    (
        SLEEP,
        &["do_nanosleep"],
        &["start_thread", "sleep_thread", "site_nanosleep"],
    ),
    (
        EPOLL,
        &["do_epoll_wait"],
        &["start_thread", "epoll_thread", "site_epoll_wait"],
    ),
    (
        PIPE,
        &["pipe_read"],
        &["start_thread", "pipe_thread", "site_pipe_read"],
    ),
    (
        CONDVAR,
        FUTEX_WAIT_FRAMES,
        &[
            "start_thread",
            "condvar_thread",
            "site_condvar_wait",
            "pthread_cond_wait",
        ],
    ),
];

/// Whether `frames` holds frames containing each of `chain`, in that order.
fn holds_in_order(frames: &[String], chain: &[&str]) -> bool {
    let mut rest = frames;
    chain.iter().all(
        |needle| match rest.iter().position(|f| f.contains(needle)) {
            Some(i) => {
                rest = &rest[i + 1..];
                true
            }
            None => false,
        },
    )
}

/// The lines of `thread` in its measured phase (not the gate wait before it) whose kernel
/// frames show its wait.
fn measured_lines<'a>(trace: &'a SitesTrace, thread: &str, kernel: &[&str]) -> Vec<&'a FoldedLine> {
    trace
        .thread_lines(thread)
        .into_iter()
        .filter(|l| {
            let parts = l.parts(true);
            any_frame_contains(parts.kernel, kernel)
                && !any_frame_contains(parts.user, &[GATE_FUNCTION])
        })
        .collect()
}

/// Traces the frame-pointer-less workload with `--unwind MODE`, and `--wakers`: a waker's
/// user stack is taken the same way.
fn trace(mode: &str, summary: &std::path::Path) -> SitesTrace {
    let summary = summary.display().to_string();
    trace_sites_binary(
        offcpu_sites_nofp_bin(),
        &format!("unwind-{mode}"),
        ITERATIONS,
        pid_filter,
        &["--unwind", mode, "--wakers", "--summary-json", &summary],
        libc::SIGINT,
    )
}

/// The condvar thread's measured lines that the signalling thread woke, and how many of
/// their microseconds have a waker user stack holding (innermost first) libc's
/// `pthread_cond_signal` called by `signal_thread`.
fn signalled_by_caller(trace: &SitesTrace) -> (u64, u64) {
    let woken: Vec<&FoldedLine> = measured_lines(trace, CONDVAR, FUTEX_WAIT_FRAMES)
        .into_iter()
        .filter(|l| l.parts(true).waker.is_some_and(|w| w.comm == SIGNAL))
        .collect();
    let total: u64 = woken.iter().map(|l| l.value_us).sum();
    let with_caller: u64 = woken
        .iter()
        .filter(|l| {
            l.parts(true)
                .waker
                .is_some_and(|w| holds_in_order(w.user, &["pthread_cond_signal", "signal_thread"]))
        })
        .map(|l| l.value_us)
        .sum();
    (with_caller, total)
}

/// Check that with `--unwind MODE` each site's waits carry its whole caller chain and add up
/// to the workload's own clock within 2%, and that no stack copy was lost.
fn sites_are_attributed_to_their_callers(mode: &str) {
    let dir = TempDir::new("unwind-summary");
    let summary_path = dir.join("summary.json");
    let trace = trace(mode, &summary_path);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("summary written"))
            .expect("summary is JSON");
    let counters = &summary["counters"];
    println!("--unwind {mode}: counters {counters}");
    assert!(
        counters["sites_shipped"].as_u64().unwrap_or(0) > 0,
        "--unwind {mode} shipped no stack copy: {counters}"
    );
    for counter in [
        "stack_copy_errors",
        "drop_site_ring_full",
        "drop_sites_full",
        "sites_missing",
    ] {
        assert_eq!(
            counters[counter].as_u64().unwrap_or(0),
            0,
            "--unwind {mode}: {counter} in {counters}"
        );
    }
    for &(thread, kernel, chain) in CHAINS {
        let lines = measured_lines(&trace, thread, kernel);
        assert!(
            !lines.is_empty(),
            "{thread}: no lines\n{}",
            trace.context(thread)
        );
        // The condvar thread also waits for the mutex around its condvar wait (inside the
        // workload's window, a little): those lines need only the thread's own frames.
        let needed = |l: &FoldedLine| {
            let user = l.parts(true).user;
            if thread == CONDVAR && !any_frame_contains(user, &["pthread_cond_wait"]) {
                holds_in_order(user, &chain[..2])
            } else {
                holds_in_order(user, chain)
            }
        };
        for line in &lines {
            assert!(
                needed(line),
                "--unwind {mode}: {thread} line without {chain:?}: {:?}\n{}",
                line.frames,
                trace.context(thread)
            );
        }
        let truth = trace.truth.site(thread);
        let traced: u64 = lines.iter().map(|l| l.value_us).sum();
        println!(
            "--unwind {mode}: {thread}: traced {traced} us, workload {} us",
            truth.blocked_us()
        );
        // A wait whose end the kernel never showed (`drop_unmatched_wait`, see
        // docs/architecture.md) is reported lost, not attributed: allow one site period each.
        let lost_us = counters["drop_unmatched_wait"].as_u64().unwrap_or(0) * SITE_PERIOD_US;
        let tolerance = TOLERANCE + lost_us as f64 / truth.blocked_us().max(1) as f64;
        assert_close(
            &format!("--unwind {mode}: {thread} site total"),
            traced,
            truth.blocked_us(),
            tolerance,
            &trace.context(thread),
        );
    }
    // The waker's stack is unwound the same way: `pthread_cond_signal` keeps its caller.
    let (with_caller, woken) = signalled_by_caller(&trace);
    println!("--unwind {mode}: {with_caller} of {woken} us woken with the signaller's caller");
    assert!(
        woken > 0 && with_caller * 10 >= woken * 9,
        "--unwind {mode}: only {with_caller} of {woken} us woken by {SIGNAL} show \
         pthread_cond_signal called by signal_thread\n{}",
        trace.context(CONDVAR)
    );
    // Most of the condvar thread's time is in pthread_cond_wait, called by site_condvar_wait.
    let in_cond_wait: u64 = measured_lines(&trace, CONDVAR, FUTEX_WAIT_FRAMES)
        .iter()
        .filter(|l| any_frame_contains(l.parts(true).user, &["pthread_cond_wait"]))
        .map(|l| l.value_us)
        .sum();
    let truth = trace.truth.site(CONDVAR).blocked_us();
    assert!(
        in_cond_wait * 10 >= truth * 9,
        "--unwind {mode}: only {in_cond_wait} us of {truth} us in pthread_cond_wait\n{}",
        trace.context(CONDVAR)
    );
}

/// `--unwind dwarf`: every site attributed to its caller chain, totals within 2%.
#[test]
fn dwarf_attributes_sites_without_frame_pointers() {
    if !require_bpf() {
        return;
    }
    sites_are_attributed_to_their_callers("dwarf");
}

/// `--unwind auto`: the same.
#[test]
fn auto_attributes_sites_without_frame_pointers() {
    if !require_bpf() {
        return;
    }
    sites_are_attributed_to_their_callers("auto");
}

/// `--unwind fp` on the same build loses the callers: no sleep line reaches `sleep_thread`,
/// no condvar line reaches `site_condvar_wait`, no waker stack reaches `signal_thread`. (If this fails, the workload kept its frame
/// pointers and the tests above prove nothing.)
#[test]
fn frame_pointers_lose_the_callers() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("unwind-fp-summary");
    let trace = trace("fp", &dir.join("summary.json"));
    for (thread, kernel, caller) in [
        (SLEEP, &["do_nanosleep"][..], "sleep_thread"),
        (CONDVAR, FUTEX_WAIT_FRAMES, "site_condvar_wait"),
    ] {
        let lines = measured_lines(&trace, thread, kernel);
        assert!(
            !lines.is_empty(),
            "{thread}: no lines\n{}",
            trace.context(thread)
        );
        for line in lines {
            assert!(
                !any_frame_contains(line.parts(true).user, &[caller]),
                "--unwind fp found {caller} without frame pointers: {:?}",
                line.frames
            );
        }
    }
    let (with_caller, woken) = signalled_by_caller(&trace);
    assert!(
        woken > 0 && with_caller == 0,
        "--unwind fp found signal_thread in {with_caller} of {woken} us of waker stacks"
    );
}
