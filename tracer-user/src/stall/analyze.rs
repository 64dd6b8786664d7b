//! Verdicts: what each thread blocked past the threshold is stuck on, and why.
//!
//! Order of precedence: a deadlock cycle, then waiting behind one, then a whole process with
//! no way out, then an event loop blocked outside its poll, then any other indefinite wait on a
//! lock or on I/O. Waits for work (idle pool workers, servers in accept, loops in epoll -1,
//! joins of live threads) are `idle`; timed waits are healthy and not findings at all.

use std::collections::{BTreeMap, BTreeSet};

use tracer_common::syscalls::{self, kind};

use super::{
    describe::{describe_call, named_thread, resource_phrase},
    graph::WaitForGraph,
    model::{
        Analysis, BlockedThread, Finding, FutexOwner, OwnerSource, ProcessView, Timing, Verdict,
    },
    owner::{WaitingCode, parked_by_glibc, waiting_code},
    timing::is_poll,
};

/// Gives every thread a verdict and finds deadlock cycles. `threads` are the threads blocked
/// at least the threshold; `processes` every process they belong to, with all its threads.
pub fn analyze(threads: Vec<BlockedThread>, processes: &BTreeMap<u32, ProcessView>) -> Analysis {
    let by_tid: BTreeMap<u32, &BlockedThread> = threads.iter().map(|t| (t.tid, t)).collect();
    let mut graphs: BTreeMap<u32, WaitForGraph> = BTreeMap::new();
    for thread in &threads {
        if let Some(owner) = owner_in_process(thread, processes) {
            graphs.entry(thread.pid).or_default().add(
                thread.tid,
                resource_phrase(thread),
                owner.tid,
            );
        }
    }
    let cycles: Vec<_> = graphs.iter().flat_map(|(&pid, g)| g.cycles(pid)).collect();
    let members: BTreeSet<u32> = cycles
        .iter()
        .flat_map(|c| c.edges.iter().map(|e| e.tid))
        .collect();
    let stalled: BTreeSet<u32> = processes
        .values()
        .filter(|p| process_stalled(p, &by_tid))
        .map(|p| p.pid)
        .collect();

    let mut findings = Vec::new();
    for thread in &threads {
        let graph = graphs.get(&thread.pid);
        let verdict = if members.contains(&thread.tid) {
            let edge = graph.and_then(|g| g.edge(thread.tid));
            edge.map(|e| {
                (
                    Verdict::Deadlock,
                    format!(
                        "in a deadlock cycle: waits for {} held by {}",
                        e.resource,
                        name_of(e.owner_tid, &by_tid)
                    ),
                )
            })
        } else if let Some(member) = graph.and_then(|g| g.leads_into(thread.tid, &members)) {
            Some((
                Verdict::BlockedByDeadlock,
                format!(
                    "waits for {}, behind deadlocked {}",
                    resource_phrase(thread),
                    name_of(member, &by_tid)
                ),
            ))
        } else if stalled.contains(&thread.pid) {
            let n = processes.get(&thread.pid).map_or(0, |p| p.tids.len());
            Some((
                Verdict::ProcessStalled,
                format!(
                    "all {n} threads of the process wait indefinitely on futexes that nothing \
                     outside the process can wake (likely deadlock; lock owners unknown); this \
                     one waits for {}",
                    resource_phrase(thread)
                ),
            ))
        } else if thread.event_loop && !is_poll(thread.call.as_ref()) {
            Some((
                Verdict::EventLoopBlocked,
                format!(
                    "event loop thread blocked in {} for {:.1} s instead of polling for events",
                    describe_call(thread),
                    secs(thread.blocked_for_ns)
                ),
            ))
        } else {
            ordinary_verdict(thread, &by_tid)
        };
        if let Some((verdict, explanation)) = verdict {
            findings.push(Finding {
                thread: thread.clone(),
                verdict,
                explanation,
            });
        }
    }
    findings.sort_by_key(|f| (f.thread.pid, f.verdict, f.thread.tid));
    Analysis { findings, cycles }
}

/// The thread's futex owner, if it is a thread of the same process (edges of the graph).
fn owner_in_process(
    thread: &BlockedThread,
    processes: &BTreeMap<u32, ProcessView>,
) -> Option<FutexOwner> {
    let owner = thread.futex.as_ref()?.owner?;
    let process = processes.get(&thread.pid)?;
    process.tids.contains(&owner.tid).then_some(owner)
}

/// Every thread of the process blocked past the threshold in an indefinite wait on a
/// process-private futex: no timer, fd, child or other process can end any of them. (A
/// shared futex, e.g. a semaphore in shared memory, can be woken from another process.)
fn process_stalled(process: &ProcessView, by_tid: &BTreeMap<u32, &BlockedThread>) -> bool {
    !process.tids.is_empty()
        && process.tids.iter().all(|tid| {
            by_tid.get(tid).is_some_and(|t| {
                t.timing == Timing::Indefinite
                    && t.call.is_some_and(|c| {
                        c.kind == kind::FUTEX && c.detail & syscalls::FUTEX_PRIVATE_FLAG != 0
                    })
            })
        })
}

/// Verdict of a thread that is in no cycle, no stalled process and no blocked event loop.
fn ordinary_verdict(
    thread: &BlockedThread,
    by_tid: &BTreeMap<u32, &BlockedThread>,
) -> Option<(Verdict, String)> {
    let blocked = secs(thread.blocked_for_ns);
    match thread.timing {
        Timing::Timed => return None,
        Timing::Unknown if thread.state == 'D' => {
            let wchan = thread.wchan.as_deref().unwrap_or("the kernel");
            return Some((
                Verdict::Stall,
                format!("in uninterruptible sleep (D) in {wchan} for {blocked:.1} s"),
            ));
        }
        Timing::Unknown => return None,
        Timing::Indefinite => {}
    }
    let call = thread.call?;
    let what = describe_call(thread);
    Some(match call.kind {
        kind::FUTEX => match thread.futex.as_ref().and_then(|f| f.owner) {
            Some(owner) if owner.source == OwnerSource::Join => (
                Verdict::Idle,
                format!("waits for {} to exit", name_of(owner.tid, by_tid)),
            ),
            Some(owner) => (
                Verdict::Stall,
                format!(
                    "waits for {} held by {} for {blocked:.1} s",
                    resource_phrase(thread),
                    name_of(owner.tid, by_tid)
                ),
            ),
            None if is_parked_by_glibc(thread) => (
                Verdict::Stall,
                format!(
                    "parked for ever by glibc inside pthread_mutex_lock for {blocked:.1} s: the \
                     kernel refused its PI lock (EDEADLK: a lock cycle runs through this thread, \
                     or ESRCH: the owner died) before watch attached, so the lock is not known"
                ),
            ),
            None => match waiting_code(&thread.user_stack) {
                WaitingCode::Lock { .. } => (
                    Verdict::Stall,
                    format!("waits for {} for {blocked:.1} s", resource_phrase(thread)),
                ),
                _ => (
                    Verdict::Idle,
                    format!(
                        "waits in {what} for a signal (condition, park or unknown; no owner known)"
                    ),
                ),
            },
        },
        kind::READ | kind::RECV if !is_terminal(thread) => (
            Verdict::Stall,
            format!(
                "blocked in {what} on {} for {blocked:.1} s",
                resource_phrase(thread)
            ),
        ),
        kind::READ | kind::RECV => (Verdict::Idle, "waits for terminal input".to_string()),
        kind::ACCEPT => (
            Verdict::Idle,
            format!("waits for connections on {}", resource_phrase(thread)),
        ),
        kind::WAIT_CHILD => (Verdict::Idle, "waits for a child process".to_string()),
        _ => (Verdict::Idle, format!("waits for events in {what}")),
    })
}

/// See [`parked_by_glibc`].
fn is_parked_by_glibc(thread: &BlockedThread) -> bool {
    thread.futex.as_ref().is_some_and(|f| {
        parked_by_glibc(
            f.op,
            f.uaddr,
            f.word,
            thread.user_sp,
            waiting_code(&thread.user_stack),
        )
    })
}

fn is_terminal(thread: &BlockedThread) -> bool {
    thread.fd.as_ref().is_some_and(|fd| {
        let d = &fd.description;
        d.starts_with("/dev/pts/") || d.starts_with("/dev/tty") || d == "/dev/console"
    })
}

/// `"abba-b" (tid 4243)` when the thread is among the blocked ones, else `tid 4243`.
fn name_of(tid: u32, by_tid: &BTreeMap<u32, &BlockedThread>) -> String {
    named_thread(tid, by_tid.get(&tid).map(|t| t.comm.as_str()))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests;
