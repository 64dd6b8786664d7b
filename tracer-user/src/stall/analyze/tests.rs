//! Verdicts over hand-built threads: each test is one situation from the issue.

use super::*;
use crate::stall::{
    fixtures::{self, frames},
    model::{FdInfo, FutexWait, SyscallCall},
};

fn futex_thread(
    tid: u32,
    uaddr: u64,
    owner: Option<(u32, OwnerSource)>,
    stack: &[&str],
) -> BlockedThread {
    let mut t = fixtures::futex_thread(1, tid, &format!("t{tid}"), 6_000_000_000);
    t.futex = Some(FutexWait {
        uaddr,
        op: 0,
        word: Some(2),
        lock_uaddr: None,
        owner: owner.map(|(tid, source)| FutexOwner { tid, source }),
    });
    t.user_stack = frames(stack);
    t
}

fn process(tids: &[u32]) -> BTreeMap<u32, ProcessView> {
    BTreeMap::from([(
        1,
        ProcessView {
            pid: 1,
            tids: tids.to_vec(),
        },
    )])
}

fn verdicts(analysis: &Analysis) -> BTreeMap<u32, Verdict> {
    analysis
        .findings
        .iter()
        .map(|f| (f.thread.tid, f.verdict))
        .collect()
}

const MUTEX: &[&str] = &["__lll_lock_wait", "pthread_mutex_lock", "worker"];

/// Check that a glibc ABBA is one cycle naming both owners, main joining a member is blocked
/// behind it, and a running healthy thread keeps the process from being "stalled".
#[test]
fn glibc_abba_is_a_deadlock() {
    let threads = vec![
        futex_thread(10, 0xa, Some((11, OwnerSource::GlibcMutex)), MUTEX),
        futex_thread(11, 0xb, Some((10, OwnerSource::GlibcMutex)), MUTEX),
        futex_thread(1, 0xc, Some((10, OwnerSource::Join)), &["pthread_join"]),
    ];
    let analysis = analyze(threads, &process(&[1, 10, 11, 12]));
    assert_eq!(analysis.cycles.len(), 1);
    let edges: Vec<(u32, u32)> = analysis.cycles[0]
        .edges
        .iter()
        .map(|e| (e.tid, e.owner_tid))
        .collect();
    assert_eq!(edges, [(10, 11), (11, 10)]);
    assert_eq!(analysis.cycles[0].edges[0].waits_for_resource, "mutex 0xa");
    let v = verdicts(&analysis);
    assert_eq!(v[&10], Verdict::Deadlock);
    assert_eq!(v[&11], Verdict::Deadlock);
    assert_eq!(v[&1], Verdict::BlockedByDeadlock);
    assert!(!v.contains_key(&12));
}

/// Check that Rust-style locks without owners give no cycle, and a process whose every
/// thread waits on futexes is "process stalled".
#[test]
fn ownerless_locks_stall_the_process_without_a_cycle() {
    let rust = &[
        "syscall",
        "std::sys::sync::mutex::futex::Mutex::lock_contended",
    ];
    let threads = vec![
        futex_thread(10, 0xa, None, rust),
        futex_thread(11, 0xb, None, rust),
        futex_thread(1, 0xc, Some((10, OwnerSource::Join)), &["pthread_join"]),
    ];
    let analysis = analyze(threads.clone(), &process(&[1, 10, 11]));
    assert!(analysis.cycles.is_empty());
    assert!(
        verdicts(&analysis)
            .values()
            .all(|&v| v == Verdict::ProcessStalled)
    );
    // With a fourth, running thread the locks are plain stalls and the join is idle.
    let analysis = analyze(threads, &process(&[1, 10, 11, 12]));
    let v = verdicts(&analysis);
    assert_eq!(v[&10], Verdict::Stall);
    assert_eq!(v[&1], Verdict::Idle);
}

/// Check that idle pool workers on a condvar are idle, never stalled or deadlocked.
#[test]
fn idle_pool_workers_are_idle() {
    let cond = &[
        "__futex_abstimed_wait_common",
        "pthread_cond_wait",
        "pool_worker",
    ];
    let threads = vec![
        futex_thread(20, 0xd, None, cond),
        futex_thread(21, 0xd, None, cond),
    ];
    let analysis = analyze(threads, &process(&[1, 20, 21]));
    assert!(verdicts(&analysis).values().all(|&v| v == Verdict::Idle));
    assert!(analysis.cycles.is_empty());
}

/// Check that a recv on a socket is a stall naming the peer, a timed wait is no finding, and
/// an event-loop thread blocked outside epoll is "event loop blocked" even in a timed sleep.
#[test]
fn recv_stall_timed_wait_and_event_loop() {
    let mut recv = futex_thread(30, 0, None, &[]);
    recv.futex = None;
    recv.call = Some(SyscallCall {
        nr: 45,
        kind: kind::RECV,
        resource: 5,
        detail: 0,
        timeout: 0,
    });
    recv.fd = Some(FdInfo {
        fd: 5,
        fd_type: "socket".into(),
        local: Some("127.0.0.1:40000".into()),
        peer: Some("127.0.0.1:5432".into()),
        description: "TCP 127.0.0.1:40000 -> 127.0.0.1:5432 (ESTABLISHED)".into(),
        external: true,
    });
    let mut sleeper = recv.clone();
    sleeper.tid = 31;
    sleeper.fd = None;
    sleeper.call = Some(SyscallCall {
        nr: 230,
        kind: kind::SLEEP,
        ..SyscallCall::default()
    });
    sleeper.timing = Timing::Timed;
    let mut blocked_loop = sleeper.clone();
    blocked_loop.tid = 32;
    blocked_loop.event_loop = true;
    let analysis = analyze(vec![recv, sleeper, blocked_loop], &process(&[30, 31, 32]));
    let v = verdicts(&analysis);
    assert_eq!(v[&30], Verdict::Stall);
    assert!(
        analysis.findings[0].explanation.contains("127.0.0.1:5432")
            || analysis.findings[1].explanation.contains("127.0.0.1:5432")
    );
    assert!(!v.contains_key(&31));
    assert_eq!(v[&32], Verdict::EventLoopBlocked);
}

/// Check that an owner outside the process never makes an edge.
#[test]
fn owners_outside_the_process_make_no_edge() {
    let threads = vec![
        futex_thread(10, 0xa, Some((99, OwnerSource::PiWord)), MUTEX),
        futex_thread(99, 0xb, Some((10, OwnerSource::PiWord)), MUTEX),
    ];
    let analysis = analyze(threads, &process(&[10, 11]));
    assert!(analysis.cycles.is_empty());
}
