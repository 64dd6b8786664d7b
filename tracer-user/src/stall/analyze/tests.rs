//! Verdicts over hand-built threads: each test is one situation from the issue.

use super::*;
use crate::{
    model::SyscallCall,
    stall::fixtures::{self, frames, futex_facts},
};

fn futex_thread(
    tid: u32,
    uaddr: u64,
    owner: Option<(u32, OwnerSource)>,
    stack: &[&str],
) -> BlockedThread {
    let mut t = fixtures::futex_thread(1, tid, &format!("t{tid}"), 6_000_000_000);
    t.futex = Some(futex_facts(uaddr, owner));
    t.user_stack = frames(stack);
    t
}

fn process(tids: &[u32]) -> BTreeMap<u32, ProcessView> {
    BTreeMap::from([(1, fixtures::process(1, tids))])
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
    let analysis = analyze(&threads, &process(&[1, 10, 11, 12]));
    assert_eq!(analysis.cycles.len(), 1);
    let edges: Vec<(u32, u32)> = analysis.cycles[0]
        .edges
        .iter()
        .map(|e| (e.tid, e.owner.tid))
        .collect();
    assert_eq!(edges, [(10, 11), (11, 10)]);
    let first = &analysis.cycles[0].edges[0];
    assert_eq!(
        crate::report::describe::edge_resource(first, None),
        "mutex 0xa"
    );
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
    let analysis = analyze(&threads, &process(&[1, 10, 11]));
    assert!(analysis.cycles.is_empty());
    assert!(
        verdicts(&analysis)
            .values()
            .all(|&v| v == Verdict::ProcessStalled)
    );
    // With a fourth, running thread the locks are plain stalls and the join is idle.
    let analysis = analyze(&threads, &process(&[1, 10, 11, 12]));
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
    let analysis = analyze(&threads, &process(&[1, 20, 21]));
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
        kind: WaitKind::Recv,
        resource: 5,
        detail: 0,
        timeout: 0,
    });
    recv.fd = Some(fixtures::tcp_socket(5, "127.0.0.1:40000", "127.0.0.1:5432"));
    let mut sleeper = recv.clone();
    sleeper.tid = 31;
    sleeper.fd = None;
    sleeper.call = Some(SyscallCall {
        nr: 230,
        kind: WaitKind::Sleep,
        ..SyscallCall::default()
    });
    let mut blocked_loop = sleeper.clone();
    blocked_loop.tid = 32;
    blocked_loop.poll_returns = Some(crate::model::PollReturns {
        last_ns: blocked_loop.since_ns,
        count: 3,
    });
    let analysis = analyze(&[recv, sleeper, blocked_loop], &process(&[30, 31, 32]));
    let v = verdicts(&analysis);
    assert_eq!(v[&30], Verdict::Stall);
    let explanations: Vec<String> = analysis
        .findings
        .iter()
        .map(crate::report::describe::explanation)
        .collect();
    assert!(
        explanations.iter().any(|e| e.contains("127.0.0.1:5432")),
        "{explanations:?}"
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
    let analysis = analyze(&threads, &process(&[10, 11]));
    assert!(analysis.cycles.is_empty());
}

/// Check that the owners the analysis infers from the recorded memory are the ones the
/// memory names, by the rule the memory's layout calls for.
#[test]
fn owners_are_inferred_from_recorded_memory() {
    let threads = vec![
        futex_thread(10, 0xa, Some((11, OwnerSource::GlibcMutex)), MUTEX),
        futex_thread(
            11,
            0xb,
            Some((12, OwnerSource::PiWord)),
            &["pthread_mutex_lock"],
        ),
        futex_thread(12, 0xc, Some((10, OwnerSource::Join)), &["pthread_join"]),
        futex_thread(13, 0xd, None, MUTEX),
    ];
    let analysis = analyze(&threads, &process(&[10, 11, 12, 13]));
    let owners: BTreeMap<u32, Option<(u32, OwnerSource)>> = analysis
        .findings
        .iter()
        .map(|f| (f.thread.tid, f.owner.map(|o| (o.tid, o.source))))
        .collect();
    assert_eq!(owners[&10], Some((11, OwnerSource::GlibcMutex)));
    assert_eq!(owners[&11], Some((12, OwnerSource::PiWord)));
    assert_eq!(owners[&12], Some((10, OwnerSource::Join)));
    assert_eq!(owners[&13], None);
}

/// Check that a Java monitor wait the runtime names is a lock stall held by its owner even
/// though its native wait is a timed condvar wait (HotSpot's re-parking "responsible" waiter),
/// while the same timed wait without the runtime's word is no finding.
#[test]
fn runtime_lock_wait_in_a_timed_park_is_a_stall() {
    let mut waiter = futex_thread(40, 0x7f00_0000_2000, None, &["pthread_cond_timedwait"]);
    waiter.call = waiter.call.map(|c| SyscallCall {
        detail: 9 | 128, // FUTEX_WAIT_BITSET_PRIVATE
        timeout: 0x7f00_0000_3000,
        ..c
    });
    let unnamed = BlockedThread {
        tid: 42,
        ..waiter.clone()
    };
    waiter.runtime = Some(crate::model::RuntimeThread {
        runtime: "hotspot".into(),
        name: Some("Thread-0".into()),
        wait: Some(RuntimeWait {
            kind: RuntimeWaitKind::Lock,
            object: 0x6_9ec1_96e8,
            class: Some("java.lang.Object".into()),
            owner_tid: Some(41),
        }),
        event_loop: false,
        task: None,
    });
    let analysis = analyze(&[waiter, unnamed], &process(&[40, 41, 42]));
    let v = verdicts(&analysis);
    assert_eq!(v[&40], Verdict::Stall);
    assert!(!v.contains_key(&42), "a timed wait alone is no finding");
    let finding = &analysis.findings[0];
    assert_eq!(finding.timing, Timing::Indefinite);
    assert_eq!(finding.owner.map(|o| o.tid), Some(41));
}

/// A GHC program's main OS thread waiting in the scheduler for its Haskell thread (as the
/// `ghc` runtime records it), beside an RTS worker; thread 3, if given, is an I/O manager
/// blocked in `epoll_wait`.
fn ghc_threads(io_manager_blocked: bool) -> (Vec<BlockedThread>, BTreeMap<u32, ProcessView>) {
    use crate::model::{GreenState, RuntimeProcess, RuntimeThread};
    let condvar = ["___pthread_cond_wait", "waitCondition", "yieldCapability"];
    let mut main = futex_thread(1, 0xa, None, &condvar);
    main.runtime = Some(RuntimeThread {
        runtime: "ghc".into(),
        name: Some("bound to a Haskell thread".into()),
        wait: Some(RuntimeWait {
            kind: RuntimeWaitKind::GreenThreads,
            object: 0xa,
            class: None,
            owner_tid: None,
        }),
        event_loop: false,
        task: None,
    });
    let worker = futex_thread(2, 0xb, None, &condvar);
    let mut threads = vec![main, worker];
    if io_manager_blocked {
        let mut io = futex_thread(3, 0, None, &["epoll_wait", "base:GHC.Event.EPoll.new10"]);
        io.futex = None;
        io.call = Some(SyscallCall {
            nr: 232,
            kind: WaitKind::Epoll,
            resource: 3,
            detail: 0,
            timeout: u64::from(u32::MAX),
        });
        threads.push(io);
    }
    let mut processes = process(&[1, 2, 3]);
    let green = |id, state| crate::model::GreenThread {
        id,
        label: None,
        state,
    };
    processes.get_mut(&1).expect("process 1").runtime_views = vec![RuntimeProcess {
        runtime: "ghc".into(),
        version: Some("9.0.2".into()),
        interpreters: None,
        green_threads: vec![
            green(2, GreenState::ForeignCall),
            green(4, GreenState::BlockedOnMvar),
            green(5, GreenState::BlockedOnMvar),
        ],
        service_tids: Vec::new(),
    }];
    (threads, processes)
}

/// Check that GHC's main OS thread waiting for its Haskell thread is a stall naming the green
/// threads when no thread of the process ran past the threshold, and an ordinary idle
/// condition wait while one still runs; RTS workers stay idle.
#[test]
fn ghc_green_threads_all_blocked() {
    let (threads, processes) = ghc_threads(true);
    let analysis = analyze(&threads, &processes);
    let main = &analysis
        .findings
        .iter()
        .find(|f| f.thread.tid == 1)
        .expect("main");
    assert_eq!(main.verdict, Verdict::Stall);
    let Reason::GreenThreadsBlocked { green_threads } = &main.reason else {
        panic!("not a green-thread stall: {:?}", main.reason);
    };
    assert_eq!(green_threads.len(), 3);
    assert_eq!(verdicts(&analysis)[&2], Verdict::Idle);
    assert_eq!(verdicts(&analysis)[&3], Verdict::Idle);

    let (threads, processes) = ghc_threads(false);
    let analysis = analyze(&threads, &processes);
    assert_eq!(verdicts(&analysis)[&1], Verdict::Idle);
}

/// A thread blocked in `recvfrom` on fd 5 (a TCP socket to 127.0.0.1:5432).
fn recv_thread(tid: u32) -> BlockedThread {
    let mut t = futex_thread(tid, 0, None, &["__libc_recv", "cli_main"]);
    t.futex = None;
    t.call = Some(SyscallCall {
        nr: 45,
        kind: WaitKind::Recv,
        resource: 5,
        detail: 0,
        timeout: 0,
    });
    t.fd = Some(fixtures::tcp_socket(5, "127.0.0.1:40000", "127.0.0.1:5432"));
    t
}

fn polled(mut t: BlockedThread, count: u64) -> BlockedThread {
    t.poll_returns = Some(crate::model::PollReturns {
        last_ns: t.since_ns,
        count,
    });
    t
}

/// Check that one poll return just before a blocking recv (a CLI client that polled during
/// `connect()`) is not an event loop, and that coming back to poll repeatedly is.
#[test]
fn one_poll_is_not_an_event_loop() {
    let threads = [polled(recv_thread(40), 1), polled(recv_thread(41), 2)];
    let analysis = analyze(&threads, &process(&[1, 40, 41]));
    let v = verdicts(&analysis);
    assert_eq!(v[&40], Verdict::Stall);
    assert_eq!(v[&41], Verdict::EventLoopBlocked);
    let client = analysis.findings.iter().find(|f| f.thread.tid == 40);
    assert!(client.is_some_and(|f| !f.event_loop));
}

/// Node's main thread blocked in `Atomics.wait` from a timer callback, as `/proc` shows it
/// (no poll return seen): the frames make it a libuv event loop, and the call is named.
fn node_main(tid: u32, call: &[&str]) -> BlockedThread {
    let mut stack = call.to_vec();
    stack.extend(["uv__run_timers", "uv_run", "node::SpinEventLoop", "main"]);
    let mut t = futex_thread(tid, 0xe, None, &stack);
    t.origin = crate::model::Origin::Snapshot;
    t
}

/// Check that a native loop known from its frames and blocked outside its poll is
/// `event_loop_blocked` naming the call past the wait's plumbing, without any poll return.
#[test]
fn native_loop_blocked_from_frames_names_the_call() {
    let blocked = node_main(
        50,
        &[
            "__futex_abstimed_wait_common",
            "___pthread_cond_wait",
            "v8::base::ConditionVariable::Wait",
            "v8::internal::FutexEmulation::WaitSync",
        ],
    );
    let analysis = analyze(&[blocked], &process(&[1, 50, 51]));
    let f = &analysis.findings[0];
    assert_eq!(f.verdict, Verdict::EventLoopBlocked);
    assert!(f.event_loop);
    assert_eq!(
        f.reason,
        Reason::EventLoopInFrames {
            library: Some("libuv".to_owned()),
            blocking_call: Some("v8::internal::FutexEmulation::WaitSync".to_owned()),
            task: None,
        }
    );
    let explanation = crate::report::describe::explanation(f);
    assert!(
        explanation.contains("v8::internal::FutexEmulation::WaitSync"),
        "{explanation}"
    );
}

/// Check that a loop in its own poll, or a tokio worker parked in its runtime (however often
/// it polled before), is not blocked.
#[test]
fn loops_waiting_in_their_own_machinery_are_not_blocked() {
    let mut in_poll = node_main(60, &["epoll_wait", "uv__io_poll"]);
    in_poll.call = Some(SyscallCall {
        nr: 232,
        kind: WaitKind::Epoll,
        resource: 3,
        ..SyscallCall::default()
    });
    in_poll.futex = None;
    let parked = polled(
        futex_thread(
            61,
            0xf,
            None,
            &[
                "syscall",
                "std::sys::pal::unix::futex::futex_wait",
                "std::sync::condvar::Condvar::wait",
                "tokio::runtime::park::Inner::park",
                "tokio::runtime::scheduler::multi_thread::worker::run",
            ],
        ),
        5,
    );
    let analysis = analyze(&[in_poll, parked], &process(&[1, 60, 61]));
    let v = verdicts(&analysis);
    assert_ne!(v.get(&60), Some(&Verdict::EventLoopBlocked));
    assert_eq!(v[&61], Verdict::Idle);
    assert!(analysis.findings.iter().all(|f| !f.event_loop));
}

/// The facts a runtime view gives a Python thread waiting for a signal (`Event.wait`,
/// `SimpleQueue.get` in an executor worker).
fn python_condition(tid: u32) -> BlockedThread {
    let mut t = futex_thread(
        tid,
        0x100 + u64::from(tid),
        None,
        &[
            "do_futex_wait",
            "PyThread_acquire_lock_timed",
            "lock_PyThread_acquire_lock",
        ],
    );
    t.runtime = Some(crate::model::RuntimeThread {
        runtime: "cpython".to_owned(),
        name: None,
        wait: Some(RuntimeWait {
            kind: RuntimeWaitKind::Condition,
            object: 0x5000,
            class: None,
            owner_tid: None,
        }),
        event_loop: false,
        task: None,
    });
    t
}

/// Check that a process whose every thread waits for a signal (an idle Python pool, main in
/// `Event.wait`) is idle, not `process_stalled`; and that one runtime lock wait among them is
/// the evidence that makes it stalled.
#[test]
fn process_stalled_needs_a_lock() {
    let idle = [
        python_condition(1),
        python_condition(70),
        python_condition(71),
    ];
    let analysis = analyze(&idle, &process(&[1, 70, 71]));
    assert!(
        verdicts(&analysis).values().all(|&v| v == Verdict::Idle),
        "{:?}",
        verdicts(&analysis)
    );
    let mut locked = idle.clone();
    if let Some(wait) = locked[1].runtime.as_mut().and_then(|r| r.wait.as_mut()) {
        wait.kind = RuntimeWaitKind::OwnerlessLock;
    }
    let analysis = analyze(&locked, &process(&[1, 70, 71]));
    assert!(
        verdicts(&analysis)
            .values()
            .all(|&v| v == Verdict::ProcessStalled)
    );
}

/// Check that a thread waiting for a result is the evidence when every other thread is an
/// idle worker: the process is stalled, each finding names the waiter; a worker still running
/// (not blocked) keeps it from being stalled; the runtime's service threads, running or not,
/// change neither.
#[test]
fn result_wait_with_idle_workers_stalls_the_process() {
    let mut threads = vec![
        python_condition(1),
        python_condition(70),
        python_condition(71),
    ];
    if let Some(wait) = threads[0].runtime.as_mut().and_then(|r| r.wait.as_mut()) {
        wait.kind = RuntimeWaitKind::Result;
    }
    let analysis = analyze(&threads, &process(&[1, 70, 71]));
    for f in &analysis.findings {
        assert_eq!(f.verdict, Verdict::ProcessStalled, "{f:?}");
        let Reason::AllThreadsWait {
            threads,
            result_waiter: Some(waiter),
        } = &f.reason
        else {
            panic!("no result waiter: {f:?}");
        };
        assert_eq!((*threads, waiter.tid), (3, 1));
    }
    // Worker 72 runs (not blocked): the result may still come.
    let analysis = analyze(&threads, &process(&[1, 70, 71, 72]));
    assert!(
        verdicts(&analysis).values().all(|&v| v == Verdict::Idle),
        "{:?}",
        verdicts(&analysis)
    );
    // 72 and 73 are the runtime's own (a JIT compiler, a timed housekeeping thread).
    let mut processes = process(&[1, 70, 71, 72, 73]);
    if let Some(p) = processes.get_mut(&1) {
        p.runtime_views = vec![crate::model::RuntimeProcess {
            runtime: "hotspot".into(),
            version: None,
            interpreters: None,
            green_threads: Vec::new(),
            service_tids: vec![72, 73],
        }];
    }
    let mut with_service = threads.clone();
    with_service.push(python_condition(73));
    let analysis = analyze(&with_service, &processes);
    let v = verdicts(&analysis);
    assert_eq!(v.len(), 4);
    assert!(
        [1, 70, 71]
            .iter()
            .all(|tid| v[tid] == Verdict::ProcessStalled),
        "{v:?}"
    );
    // A service thread keeps its own verdict.
    assert_eq!(v[&73], Verdict::Idle);
    // Without the result wait, the same process is idle.
    let idle = [
        python_condition(1),
        python_condition(70),
        python_condition(71),
    ];
    let analysis = analyze(&idle, &processes);
    assert!(verdicts(&analysis).values().all(|&v| v == Verdict::Idle));
}

/// Check that repeated poll returns do not make an event loop of a thread reaping a child
/// (Rust's `Command::output()`, `subprocess.communicate()`: poll the pipes, then `wait4`) or of
/// a shell reading its next command from a pipe whose writer is alive (both seen on a healthy
/// host, `scripts/healthy-host.sh`): the first waits for its child, the second for input.
#[test]
fn poll_then_wait4_or_pipe_read_is_no_event_loop() {
    use crate::model::{FdAccess, FdDescription, FdHolder, HolderThread};
    let mut reaper = recv_thread(50);
    reaper.fd = None;
    reaper.call = Some(SyscallCall {
        nr: 61,
        kind: WaitKind::WaitChild,
        resource: 51,
        ..SyscallCall::default()
    });
    let mut shell = recv_thread(52);
    shell.call = Some(SyscallCall {
        nr: 0,
        kind: WaitKind::Read,
        ..SyscallCall::default()
    });
    let writer = FdHolder {
        pid: 53,
        comm: Some("runner".into()),
        fd: 4,
        access: Some(FdAccess::Write),
        threads: vec![HolderThread {
            tid: 53,
            state: ThreadState::Sleeping,
            call: Some(SyscallCall {
                nr: 232,
                kind: WaitKind::Epoll,
                ..SyscallCall::default()
            }),
        }],
    };
    shell.fd = Some(FdDescription {
        access: Some(FdAccess::Read),
        pipe_peers: vec![writer],
        ..FdDescription::new(0, FdType::Pipe, "pipe:[524336]".into())
    });
    let threads = [polled(reaper, 5), polled(shell, 5)];
    let analysis = analyze(&threads, &process(&[1, 50, 52]));
    let v = verdicts(&analysis);
    assert_eq!(v[&50], Verdict::Idle);
    assert_eq!(v[&52], Verdict::Idle);
    assert!(analysis.findings.iter().all(|f| !f.event_loop));
}
