//! Tests of `text`.

use super::*;
use crate::report::watch::fixtures::{abba, idle_pool, recv_stalls, report, resolved};

/// Check that a deadlock is printed jstack style: header, one line per edge naming the
/// waiter and the holder, then each thread's stack, user then kernel, innermost first.
#[test]
fn deadlock_prints_edges_with_owners_then_stacks() {
    let (findings, cycle) = abba();
    let text = render_text(&report(findings, vec![cycle]));
    crate::golden::assert_golden(
        "text-deadlock-prints-edges-with-owners-then-stacks.txt",
        &text,
    );
    assert!(
        text.starts_with("[+12.0s] 2 threads past 5.0 s, 1 new deadlock\n"),
        "{text}"
    );
    assert!(
        text.contains("Found one deadlock in process 1234 (deadlock_abba):\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\"abba-a\" (tid 1235): waiting for mutex 0x55d0c0a0, held by \"abba-b\" (tid 1236)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\"abba-b\" (tid 1236): waiting for mutex 0x55d0c0e0, held by \"abba-a\" (tid 1235)"
        ),
        "{text}"
    );
    let stacks = text
        .find("Stacks of the threads listed above:")
        .expect("stacks");
    let header = text
        .find("\"abba-a\" tid 1235, state S, blocked for 14.2 s in futex FUTEX_WAIT on mutex 0x55d0c0a0 held by tid 1236")
        .expect("thread header");
    let inner = text.find("__lll_lock_wait+0x10").expect("innermost");
    let lock = text
        .find("pthread_mutex_lock+0x20 (pthread_mutex_lock.c:80)")
        .expect("lock");
    let caller = text.find("lock_b+0x1e (abba.c:22)").expect("caller");
    let kernel = text.find("schedule+0x10").expect("kernel frame");
    assert!(stacks < header && header < inner, "{text}");
    assert!(inner < lock && lock < caller && caller < kernel, "{text}");
    // Cycle threads are not repeated as separate findings.
    assert!(!text.contains("deadlock: "), "{text}");
}

/// Check that four threads in recvfrom on connections to one peer make one headline, named
/// by the peer, with the longest wait, every thread listed, one shared explanation and one stack.
#[test]
fn identical_stalls_are_grouped_under_one_headline() {
    let text = render_text(&report(recv_stalls(), Vec::new()));
    crate::golden::assert_golden(
        "text-identical-stalls-are-grouped-under-one-headline.txt",
        &text,
    );
    assert!(text.contains("In process 2000 (api):\n"), "{text}");
    assert!(
        text.contains("stall: 4 threads blocked in recvfrom on 127.0.0.1:5432 for 31.0 s"),
        "{text}"
    );
    assert_eq!(text.matches("stall: ").count(), 1, "{text}");
    for (tid, name) in [(2001, "worker-0"), (2004, "worker-3")] {
        assert!(text.contains(&format!("{tid} ({name}, ")), "{text}");
    }
    // The headline says the call, the peer and the duration: no "why" repeats them.
    assert_eq!(text.matches("why").count(), 0, "{text}");
    assert!(text.contains("stack of all 4 threads:"), "{text}");
    assert_eq!(
        text.matches("db_query+0x40 (db.c:120)").count(),
        1,
        "{text}"
    );
    assert!(text.contains("kernel: no stack"), "{text}");
}

/// Check that different stacks in one group are all printed, each with its threads.
#[test]
fn differing_stacks_in_a_group_are_all_printed() {
    let mut findings = recv_stalls();
    findings[3].thread.user_stack.pop();
    let text = render_text(&report(findings, Vec::new()));
    crate::golden::assert_golden(
        "text-differing-stacks-in-a-group-are-all-printed.txt",
        &text,
    );
    assert!(
        text.contains("stack of threads 2003, 2002 and 2001:"),
        "{text}"
    );
    assert!(text.contains("stack of thread 2004:"), "{text}");
}

/// Check that idle threads are listed compactly, after the problems of their process, and
/// that a process with idle threads only gets its own block.
#[test]
fn idle_threads_listed_after_problems() {
    let mut findings = recv_stalls();
    findings.extend(idle_pool(2000));
    findings.extend(idle_pool(3000));
    let text = render_text(&report(findings, Vec::new()));
    crate::golden::assert_golden("text-idle-threads-listed-after-problems.txt", &text);
    assert!(
        text.contains(
            "idle: 3 threads waiting in futex FUTEX_WAIT (no owner known): pool-0 (2100), pool-1 (2101), pool-2 (2102)"
        ),
        "{text}"
    );
    assert!(text.contains("In process 3000"), "{text}");
    assert!(text.find("stall: ") < text.find("idle: "), "{text}");
}

/// Check that the final report of a live watch restates what is open in one line per
/// process and verdict, without stacks.
#[test]
fn restated_final_report_is_a_summary() {
    let mut r = report(recv_stalls(), Vec::new());
    r.is_final = true;
    r.restated = true;
    let text = render_text(&r);
    crate::golden::assert_golden("text-restated-final-report-is-a-summary.txt", &text);
    assert!(
        text.contains("still blocked at exit: 4 threads, 0 deadlocks:"),
        "{text}"
    );
    assert!(
        text.contains("  process 2000 (api): stall: worker-0 (2001)"),
        "{text}"
    );
    assert!(!text.contains("user:"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

/// Check the resolved line and the losses footer.
#[test]
fn resolved_and_losses_are_reported() {
    let mut r = report(Vec::new(), Vec::new());
    r.resolved.push(resolved());
    r.losses = vec![(crate::model::LossReason::StackMapFull, 3)];
    let text = render_text(&r);
    crate::golden::assert_golden("text-resolved-and-losses-are-reported.txt", &text);
    assert!(
        text.contains(
            "resolved: thread 1235 (abba-a) in process 1234 (deadlock_abba) after 14.2 s (was stall)"
        ),
        "{text}"
    );
    assert!(text.starts_with("[+12.0s] 1 resolved\n"), "{text}");
    assert!(text.contains("Lost: stack map full 3"), "{text}");
}

/// Check that an empty final report says nothing was found and an empty intermediate
/// report prints nothing.
#[test]
fn empty_reports() {
    let mut r = report(Vec::new(), Vec::new());
    assert_eq!(render_text(&r), "");
    r.is_final = true;
    assert_eq!(
        render_text(&r),
        "[+12.0s] nothing new (final)\nNo stalls past the threshold (5.0 s) were found.\n"
    );
}

/// Check each problem verdict's headline and frame fallbacks.
#[test]
fn verdict_headlines_and_frame_names() {
    let mut findings = recv_stalls();
    findings.truncate(1);
    findings[0].verdict = Verdict::EventLoopBlocked;
    let text = render_text(&report(findings, Vec::new()));
    crate::golden::assert_golden("text-verdict-headlines-and-frame-names.txt", &text);
    assert!(
        text.contains(
            "event_loop_blocked: thread 2001 (worker-0) blocked in recvfrom on 127.0.0.1:5432"
        ),
        "{text}"
    );
    assert!(text.contains("its events are not handled"), "{text}");
    let module_only = Frame {
        addr: 0x1234,
        module: Some("/usr/lib/libfoo.so.1".into()),
        offset: 0x1a2b,
        ..Frame::default()
    };
    assert_eq!(frame_text(&module_only), "libfoo.so.1+0x1a2b");
    assert_eq!(
        frame_text(&Frame {
            addr: 0xdead,
            ..Frame::default()
        }),
        "[unknown 0xdead]"
    );
    assert_eq!(fmt_ns(725_000_000_000), "12 min 5 s");
}

/// Check that a process whose name is unknown is named by its pid alone, never `(?)`.
#[test]
fn unknown_process_names_are_left_out() {
    let mut findings = recv_stalls();
    findings.truncate(1);
    let mut r = report(findings, Vec::new());
    r.process_names.clear();
    let text = render_text(&r);
    assert!(text.contains("In process 2000:\n"), "{text}");
    assert!(!text.contains("(?)"), "{text}");
}

/// Check that a wait on a local connection leads into the process at the other end when that
/// process has problems of its own in the report: the API's workers wait for replies from a
/// process in a deadlock, and the report follows the chain under their headline, one line
/// per link, to where the cycle closes; the process not watched says so.
#[test]
fn waits_on_local_peers_lead_into_their_problems() {
    use crate::model::{LocalPeer, PeerRef};
    let mut findings = recv_stalls();
    for f in &mut findings {
        let socket = f.thread.fd.as_mut().and_then(|fd| fd.socket.as_mut());
        socket.expect("a socket").local_peer = Some(LocalPeer {
            inode: 91234,
            pid: Some(1234),
            unread_bytes: 0,
        });
        f.peer = Some(PeerRef {
            pid: 1234,
            tid: None,
        });
    }
    let (abba, cycle) = abba();
    findings.extend(abba);
    let mut r = report(findings, vec![cycle]);
    r.peer_processes.insert(1234);
    let text = render_text(&r);
    assert!(
        text.contains(
            "  -> waits for a reply from process 1234 (deadlock_abba): \"abba-a\" (tid 1235) is \
             deadlock: blocked in futex FUTEX_WAIT on mutex 0x55d0c0a0 \
             held by tid 1236 for 14.2 s\n  \
             -> waits for the holder \"abba-b\" (tid 1236), deadlock: blocked in futex \
             FUTEX_WAIT on mutex 0x55d0c0e0 held by tid 1235 for 14.2 s\n  \
             -> waits for the holder \"abba-a\" (tid 1235), deadlock: blocked in futex \
             FUTEX_WAIT on mutex 0x55d0c0a0 held by tid 1236 for 14.2 s: the cycle closes here\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Found one deadlock in process 1234 (deadlock_abba) (not watched: a watched thread \
             waits on it):\n"
        ),
        "{text}"
    );
    assert!(
        text.starts_with("[+12.0s] 4 threads past 5.0 s, leading into 1 process not watched\n"),
        "{text}"
    );
    // Without problems at the other end, nothing is added.
    let text = render_text(&report(recv_stalls(), Vec::new()));
    assert!(!text.contains("waits for a reply"), "{text}");
}
