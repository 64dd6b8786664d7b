//! Verdicts: what each thread blocked past the threshold is stuck on, and why.
//!
//! First, once per thread, what follows from its facts alone: what its waiting code is (by
//! the runtimes' wait names), whether its wait can end by itself, whether it runs an event
//! loop (its frames, `runtime::loop_in_frames` or its runtime's view, else repeated poll
//! returns), and who holds what it waits for (`owner`). Then the verdicts, in order of
//! precedence: a deadlock cycle, then waiting behind one, then a whole process with no way
//! out and a lock among its waits, then an event loop blocked outside its poll, then any
//! other indefinite wait on a lock or on I/O. Last, waits on another process (a pipe, a local
//! socket) follow that process's verdicts (`peer_chain`). `docs/verdicts.md` states the
//! rules. Waits for work (idle pool workers, servers in accept, loops in epoll -1, joins of
//! live threads) are `idle`; timed waits are healthy and not findings at all.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tracer_common::syscalls;

use super::{
    graph::WaitForGraph,
    owner::infer_owner,
    peer_chain::follow_peers,
    pipe_wait::pipe_read_verdict,
    socket_wait::socket_recv_verdict,
    timing::{is_poll, timing},
};
use crate::{
    model::{
        Analysis, BlockedThread, FdType, Finding, FutexOwner, GreenThread, OwnerSource,
        ProcessView, Reason, RuntimeWait, RuntimeWaitKind, ThreadRef, ThreadState, Timing, Verdict,
        WaitKind, WaitingCode,
    },
    runtime::{self, Runtimes, parked_by_glibc},
};

/// Without frames that show a loop, a thread counts as an event loop when it returned from a
/// poll-style call at least this many times since `watch` attached, the last one at most
/// [`EVENT_LOOP_GAP`] before its current wait began. One is not enough: a shell or a CLI
/// client polls once (during `connect()`, for a prompt) and then blocks reading the same
/// descriptor, which is no loop. (A loop idle in `epoll_wait` when `watch` attached whose
/// first event's handler blocks is then known only from its frames.)
const EVENT_LOOP_MIN_POLLS: u64 = 2;
/// See [`EVENT_LOOP_MIN_POLLS`].
const EVENT_LOOP_GAP: Duration = Duration::from_secs(1);

/// What follows from one thread's facts before any verdict.
struct Inferred {
    code: WaitingCode,
    timing: Timing,
    event_loop: bool,
    /// The native event loop its frames show, if any.
    native_loop: Option<runtime::LoopInFrames>,
    owner: Option<FutexOwner>,
    /// What identifies what it waits for in the wait-for graph: the runtime's lock object,
    /// else the futex (or refused PI lock) address.
    lock: Option<u64>,
}

/// Gives every thread a verdict and finds deadlock cycles. `threads` are the threads blocked
/// at least the threshold; `processes` every process they belong to, with all its threads.
pub(crate) fn analyze(
    threads: &[BlockedThread],
    processes: &BTreeMap<u32, ProcessView>,
) -> Analysis {
    let inferred: Vec<Inferred> = threads.iter().map(|t| infer(t, processes)).collect();
    let comms: BTreeMap<u32, String> = threads
        .iter()
        .map(|t| (t.tid, t.name().to_owned()))
        .collect();
    let mut graphs: BTreeMap<u32, WaitForGraph> = BTreeMap::new();
    for (thread, inf) in threads.iter().zip(&inferred) {
        let in_process = processes
            .get(&thread.pid)
            .is_some_and(|p| inf.owner.is_some_and(|o| p.tids.contains(&o.tid)));
        if let (true, Some(owner), Some(lock)) = (in_process, inf.owner, inf.lock) {
            graphs
                .entry(thread.pid)
                .or_default()
                .add(thread.tid, lock, owner);
        }
    }
    let cycles: Vec<_> = graphs.iter().flat_map(|(&pid, g)| g.cycles(pid)).collect();
    let members: BTreeMap<u32, u32> = cycles
        .iter()
        .flat_map(|c| c.edges.iter().map(|e| (e.tid, e.owner.tid)))
        .collect();
    let member_tids: BTreeSet<u32> = members.keys().copied().collect();
    let stalled: BTreeMap<u32, Stalled> = {
        let by_tid: BTreeMap<u32, (&BlockedThread, &Inferred)> = threads
            .iter()
            .zip(&inferred)
            .map(|(t, i)| (t.tid, (t, i)))
            .collect();
        processes
            .values()
            .filter_map(|p| Some((p.pid, process_stalled(p, &by_tid)?)))
            .collect()
    };
    let blocked_tids: BTreeSet<u32> = threads.iter().map(|t| t.tid).collect();
    let name_of = |tid: u32| ThreadRef {
        tid,
        comm: comms.get(&tid).cloned(),
    };

    let mut findings = Vec::new();
    for (thread, inf) in threads.iter().zip(inferred) {
        let graph = graphs.get(&thread.pid);
        let verdict = if let Some(&owner) = members.get(&thread.tid) {
            Some((
                Verdict::Deadlock,
                Reason::InCycle {
                    owner: name_of(owner),
                },
            ))
        } else if let Some(member) = graph.and_then(|g| g.leads_into(thread.tid, &member_tids)) {
            Some((
                Verdict::BlockedByDeadlock,
                Reason::BehindDeadlock {
                    member: name_of(member),
                },
            ))
        } else if let Some(green_threads) = green_threads_blocked(thread, processes, &blocked_tids)
        {
            Some((
                Verdict::Stall,
                Reason::GreenThreadsBlocked { green_threads },
            ))
        } else if let Some(stall) = stalled
            .get(&thread.pid)
            .filter(|s| s.program.contains(&thread.tid))
        {
            Some((
                Verdict::ProcessStalled,
                Reason::AllThreadsWait {
                    threads: stall.program.len(),
                    result_waiter: stall.result_waiter.map(&name_of),
                },
            ))
        } else if inf.event_loop {
            let runtime = thread.runtime.as_ref().filter(|r| r.event_loop);
            let reason = match (runtime, &inf.native_loop) {
                (Some(r), _) => Reason::EventLoopInFrames {
                    library: None,
                    blocking_call: None,
                    task: r.task.clone(),
                },
                (None, Some(native)) => Reason::EventLoopInFrames {
                    library: Some(native.library.to_owned()),
                    blocking_call: native.blocking_call.clone(),
                    task: None,
                },
                (None, None) => Reason::EventLoopOutsidePoll,
            };
            Some((Verdict::EventLoopBlocked, reason))
        } else {
            ordinary_verdict(thread, &inf, name_of)
        };
        if let Some((verdict, reason)) = verdict {
            findings.push(Finding {
                thread: thread.clone(),
                code: inf.code,
                timing: inf.timing,
                event_loop: inf.event_loop,
                owner: inf.owner,
                peer: None,
                verdict,
                reason,
            });
        }
    }
    follow_peers(&mut findings, processes);
    findings.sort_by_key(|f| (f.thread.pid, f.verdict, f.thread.tid));
    Analysis { findings, cycles }
}

/// Waits that programs with no event loop make right after polling, so that repeated poll
/// returns say nothing about them: a wait for a child (`subprocess.communicate()`, Rust's
/// `Command::output()`: poll the child's pipes to their end, then reap it), and a read of a
/// pipe, FIFO or terminal (a shell reading its next command after running one; such reads are
/// judged by their writer, `pipe_wait`). Frames that show a loop still decide.
fn polls_then_waits_by_design(thread: &BlockedThread) -> bool {
    let Some(call) = thread.call else {
        return false;
    };
    let reads_pipe_or_terminal = call.kind == WaitKind::Read
        && thread.fd.as_ref().is_some_and(|fd| {
            matches!(fd.fd_type, FdType::Pipe | FdType::Fifo) || fd.is_terminal()
        });
    call.kind == WaitKind::WaitChild || reads_pipe_or_terminal
}

/// What one thread's facts say before any verdict. What the thread's runtime read about its
/// wait (`BlockedThread::runtime`) comes before what its native frames and futex say: the
/// runtime knows the lock object and its owner where the native side sees a condvar.
fn infer(thread: &BlockedThread, processes: &BTreeMap<u32, ProcessView>) -> Inferred {
    let runtime_wait = thread.runtime.as_ref().and_then(|r| r.wait.as_ref());
    let code = match runtime_wait.map(|w| w.kind) {
        Some(RuntimeWaitKind::Lock | RuntimeWaitKind::OwnerlessLock) => {
            WaitingCode::Lock { glibc_mutex: false }
        }
        Some(RuntimeWaitKind::Join) => WaitingCode::Join,
        Some(
            RuntimeWaitKind::Condition | RuntimeWaitKind::GreenThreads | RuntimeWaitKind::Result,
        ) => WaitingCode::Condition,
        None => runtime::waiting_code(&thread.user_stack),
    };
    let call = thread.call.as_ref();
    let polled = thread.poll_returns.is_some_and(|p| {
        p.count >= EVENT_LOOP_MIN_POLLS
            && thread.since_ns.saturating_sub(p.last_ns) <= EVENT_LOOP_GAP.as_nanos() as u64
    }) && !polls_then_waits_by_design(thread);
    let runtime_loop = thread.runtime.as_ref().is_some_and(|r| r.event_loop);
    // Native frames that show a loop decide both ways: waiting in the loop's own machinery
    // (a parked tokio worker) is waiting for events however often it polled before.
    let native_loop = runtime::loop_in_frames(&thread.user_stack);
    let loop_signal = match &native_loop {
        Some(native) => native.blocking_call.is_some() || runtime_loop,
        None => polled || runtime_loop,
    };
    let event_loop = loop_signal && !is_poll(call);
    let native_loop = native_loop.filter(|_| event_loop);
    let process = processes.get(&thread.pid);
    let (owner, lock) = match runtime_wait {
        Some(wait) => (runtime_owner(thread, wait, process), Some(wait.object)),
        None => {
            let owner = thread.futex.as_ref().zip(process).and_then(|(futex, p)| {
                let runtimes = Runtimes::from_names(&p.runtimes);
                infer_owner(futex, code, thread.tid, &p.tids, runtimes)
            });
            (owner, thread.futex.as_ref().map(|f| f.lock_uaddr()))
        }
    };
    // A lock wait the runtime names is indefinite whatever the native wait's timeout: HotSpot
    // (JDK 17) parks a monitor's first waiter with a timeout of up to a second, again and
    // again, to recover from a missed wake-up; the thread still waits for the lock until its
    // owner releases it.
    let timing = match runtime_wait.map(|w| w.kind) {
        Some(RuntimeWaitKind::Lock) => Timing::Indefinite,
        _ => timing(call),
    };
    Inferred {
        code,
        timing,
        event_loop,
        native_loop,
        owner,
        lock,
    }
}

/// The owner a runtime named, if it is another live thread of the process.
fn runtime_owner(
    thread: &BlockedThread,
    wait: &RuntimeWait,
    process: Option<&ProcessView>,
) -> Option<FutexOwner> {
    let tid = wait.owner_tid?;
    let live = process.is_some_and(|p| p.tids.contains(&tid));
    let source = match wait.kind {
        RuntimeWaitKind::Lock => OwnerSource::RuntimeLock,
        RuntimeWaitKind::Join => OwnerSource::RuntimeJoin,
        RuntimeWaitKind::OwnerlessLock
        | RuntimeWaitKind::Condition
        | RuntimeWaitKind::GreenThreads
        | RuntimeWaitKind::Result => return None,
    };
    (live && tid != thread.tid).then_some(FutexOwner { tid, source })
}

/// For an OS thread waiting in its runtime's scheduler for the green thread bound to it
/// (GHC's main thread): when every thread of its process has been blocked past the threshold,
/// no green thread ran all that time, so they are all blocked (on MVars, STM, foreign calls):
/// the green threads the runtime read, else none known. `None` otherwise (the runtime is at
/// work; the wait is then an ordinary condition wait).
fn green_threads_blocked(
    thread: &BlockedThread,
    processes: &BTreeMap<u32, ProcessView>,
    blocked_tids: &BTreeSet<u32>,
) -> Option<Vec<GreenThread>> {
    let runtime = thread.runtime.as_ref()?;
    if runtime.wait.as_ref()?.kind != RuntimeWaitKind::GreenThreads {
        return None;
    }
    let process = processes.get(&thread.pid)?;
    let all_blocked =
        !process.tids.is_empty() && process.tids.iter().all(|t| blocked_tids.contains(t));
    all_blocked.then(|| {
        process
            .runtime_views
            .iter()
            .find(|v| v.runtime == runtime.runtime)
            .map(|v| v.green_threads.clone())
            .unwrap_or_default()
    })
}

/// Whether a whole process is stuck: every thread of the program (the runtime's own service
/// threads aside, `RuntimeProcess::service_tids`: they never run the program's code) blocked
/// past the threshold in an indefinite wait on a process-private futex: no timer, fd, child or
/// other process can end any of them. (A shared futex, e.g. a semaphore in shared memory, can
/// be woken from another process.) And evidence that this is no idle process (pool workers
/// waiting for work, a main thread waiting for an event, parked runtime workers wait the same
/// way without anything being wrong): a thread waits for a lock ([`waits_for_lock`]), or for
/// the result of work handed to other threads, which none of them is doing.
fn process_stalled(
    process: &ProcessView,
    by_tid: &BTreeMap<u32, (&BlockedThread, &Inferred)>,
) -> Option<Stalled> {
    let service: BTreeSet<u32> = process
        .runtime_views
        .iter()
        .flat_map(|v| v.service_tids.iter().copied())
        .collect();
    let program: Vec<u32> = process
        .tids
        .iter()
        .copied()
        .filter(|tid| !service.contains(tid))
        .collect();
    let all_wait = !program.is_empty()
        && program.iter().all(|tid| {
            by_tid.get(tid).is_some_and(|(t, inf)| {
                inf.timing == Timing::Indefinite
                    && t.call.is_some_and(|c| {
                        c.kind == WaitKind::Futex && c.detail & syscalls::FUTEX_PRIVATE_FLAG != 0
                    })
            })
        });
    if !all_wait {
        return None;
    }
    let waits = || program.iter().filter_map(|tid| by_tid.get(tid));
    let result_waiter = if waits().any(|(t, inf)| waits_for_lock(t, inf)) {
        None
    } else {
        Some(waits().find(|(t, _)| waits_for_result(t))?.0.tid)
    };
    Some(Stalled {
        program,
        result_waiter,
    })
}

/// Why a process is stalled ([`process_stalled`]).
struct Stalled {
    /// The threads of the program (service threads aside), all waiting: they get the verdict;
    /// the service threads keep their own.
    program: Vec<u32>,
    /// Without a lock among the waits, the thread whose wait for a result is the evidence.
    result_waiter: Option<u32>,
}

/// Its runtime says it waits for the result of work handed to other threads (a future).
fn waits_for_result(thread: &BlockedThread) -> bool {
    thread
        .runtime
        .as_ref()
        .and_then(|r| r.wait.as_ref())
        .is_some_and(|w| w.kind == RuntimeWaitKind::Result)
}

/// Evidence that a thread waits for a lock, not for work or an event: its runtime names a
/// lock it waits for, or (without a runtime wait) its waiting code is a lock, or it has an
/// owner that holds what it waits for (not a thread it joins), or glibc parked it after a
/// refused PI lock.
fn waits_for_lock(thread: &BlockedThread, inf: &Inferred) -> bool {
    matches!(inf.code, WaitingCode::Lock { .. })
        || inf.owner.is_some_and(|o| !o.source.is_join())
        || is_parked_by_glibc(thread, inf.code)
}

/// Verdict of a thread that is in no cycle, no stalled process and no blocked event loop.
fn ordinary_verdict(
    thread: &BlockedThread,
    inf: &Inferred,
    name_of: impl Fn(u32) -> ThreadRef,
) -> Option<(Verdict, Reason)> {
    match inf.timing {
        Timing::Timed => return None,
        Timing::Unknown if thread.state == ThreadState::Disk => {
            return Some((Verdict::Stall, Reason::Uninterruptible));
        }
        Timing::Unknown => return None,
        Timing::Indefinite => {}
    }
    let call = thread.call?;
    if let Some(verdict) = pipe_read_verdict(thread).or_else(|| socket_recv_verdict(thread)) {
        return Some(verdict);
    }
    Some(match call.kind {
        WaitKind::Futex => match inf.owner {
            Some(owner) if owner.source.is_join() => (
                Verdict::Idle,
                Reason::ThreadExit {
                    thread: name_of(owner.tid),
                },
            ),
            Some(owner) => (
                Verdict::Stall,
                Reason::LockHeld {
                    owner: name_of(owner.tid),
                },
            ),
            None if is_parked_by_glibc(thread, inf.code) => {
                (Verdict::Stall, Reason::ParkedAfterRefusedPiLock)
            }
            None => match inf.code {
                WaitingCode::Lock { .. } => (Verdict::Stall, Reason::LockWithoutOwner),
                _ => (Verdict::Idle, Reason::Signal),
            },
        },
        WaitKind::Read | WaitKind::Recv if !is_terminal(thread) => {
            (Verdict::Stall, Reason::NoInput)
        }
        WaitKind::Read | WaitKind::Recv => (Verdict::Idle, Reason::TerminalInput),
        WaitKind::Accept => (Verdict::Idle, Reason::Connections),
        WaitKind::WaitChild => (Verdict::Idle, Reason::ChildProcess),
        _ => (Verdict::Idle, Reason::Events),
    })
}

/// See [`parked_by_glibc`].
fn is_parked_by_glibc(thread: &BlockedThread, code: WaitingCode) -> bool {
    thread.futex.as_ref().is_some_and(|f| {
        let stack = &thread.user_stack;
        parked_by_glibc(f.op, f.uaddr, f.word(), thread.user_sp, code, stack)
    })
}

fn is_terminal(thread: &BlockedThread) -> bool {
    thread.fd.as_ref().is_some_and(|fd| fd.is_terminal())
}

#[cfg(test)]
mod tests;
