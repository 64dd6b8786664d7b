//! How a blocked thread's wait and verdict are put into words, once for every place that says
//! them: the text and JSON reports of `watch` (`report::watch`). The analysis hands over
//! structured facts and reasons (`crate::model`); this is the only place they become English.

pub(crate) mod fd;
mod green;

use tracer_common::syscalls;

use crate::model::{
    BlockedThread, CycleEdge, Finding, FutexOwner, OwnerSource, Reason, RuntimeWait,
    RuntimeWaitKind, ThreadRef, WaitKind, WaitingCode,
};

pub(crate) use fd::fd_phrase;
pub(crate) use green::green_threads_phrase;

/// An address: `0x` and lowercase hex, no padding.
pub(crate) fn hex(addr: u64) -> String {
    format!("0x{addr:x}")
}

/// A thread as reports name it: `"abba-b" (tid 4243)` when its name is known, else
/// `tid 4243`.
pub(crate) fn named_thread(tid: u32, comm: Option<&str>) -> String {
    match comm {
        Some(comm) => format!("\"{comm}\" (tid {tid})"),
        None => format!("tid {tid}"),
    }
}

/// [`named_thread`] of a thread named in a reason.
fn thread_ref(t: &ThreadRef) -> String {
    named_thread(t.tid, t.comm.as_deref())
}

/// The syscall name, if the thread is in a syscall stallwatch knows.
pub(crate) fn syscall_name(t: &BlockedThread) -> Option<&'static str> {
    t.call.and_then(|c| c.name())
}

/// The futex command name (`FUTEX_WAIT`...), for futex waits.
pub(crate) fn futex_op(t: &BlockedThread) -> Option<&'static str> {
    if let Some(f) = &t.futex {
        return Some(syscalls::futex_op_name(f.op));
    }
    let call = t.call?;
    (call.nr == syscalls::SYS_FUTEX)
        .then(|| syscalls::futex_op_name((call.detail & syscalls::FUTEX_CMD_MASK) as u32))
}

/// What the thread is in: `recvfrom`, `futex FUTEX_WAIT`, or, outside a known syscall,
/// the kernel wait channel (`kernel wait in folio_wait_bit`) or `an untracked wait`.
pub(crate) fn describe_call(t: &BlockedThread) -> String {
    match (syscall_name(t), futex_op(t)) {
        (Some(name), Some(op)) => format!("{name} {op}"),
        (Some(name), None) => name.to_owned(),
        (None, _) => match (t.call, &t.wchan) {
            (Some(c), _) => format!("syscall {}", c.nr),
            (None, Some(w)) => format!("kernel wait in {w}"),
            (None, None) => "an untracked wait".to_owned(),
        },
    }
}

/// What the thread waits for, without its holder: `mutex 0x55..`, `PI mutex 0x55..`,
/// `thread 4242 to exit`, `lock 0x55.. (no owner known)`, `futex 0x7f.. (no owner known)`,
/// the fd's description, `child 4711`, `any child`, `a timer`, or `nothing known`.
pub(crate) fn resource_phrase(f: &Finding) -> String {
    wait_phrase(&f.thread, f.owner, f.code)
}

fn wait_phrase(t: &BlockedThread, owner: Option<FutexOwner>, code: WaitingCode) -> String {
    if let Some(wait) = t.runtime.as_ref().and_then(|r| r.wait.as_ref()) {
        return runtime_wait_phrase(wait, owner);
    }
    if let Some(futex) = &t.futex {
        let lock = futex.lock_uaddr();
        return match owner {
            Some(owner) => lock_phrase(owner, lock),
            None if matches!(code, WaitingCode::Lock { .. }) => {
                format!("lock {} (no owner known)", hex(lock))
            }
            None => format!("futex {} (no owner known)", hex(lock)),
        };
    }
    if let Some(fd) = &t.fd {
        return fd_phrase(fd);
    }
    let Some(call) = t.call else {
        return "nothing known".to_owned();
    };
    if let Some(pid) = call.child_pid() {
        return child_phrase(pid);
    }
    match call.kind {
        WaitKind::Futex | WaitKind::FutexWaitv => {
            format!("futex {} (no owner known)", hex(call.resource))
        }
        WaitKind::Epoll | WaitKind::Read | WaitKind::Recv | WaitKind::Accept => {
            format!("fd {}", call.resource as i32)
        }
        WaitKind::Sleep => "a timer".to_owned(),
        _ => "nothing known".to_owned(),
    }
}

/// What a runtime says a thread waits for: `_thread.RLock 0x7f..`, `threading.Lock 0x7f..
/// (this kind of lock records no owner)`, `thread 4242 to exit`.
fn runtime_wait_phrase(wait: &RuntimeWait, owner: Option<FutexOwner>) -> String {
    let object = |default: &str| {
        format!(
            "{} {}",
            wait.class.as_deref().unwrap_or(default),
            hex(wait.object)
        )
    };
    match (wait.kind, owner) {
        (RuntimeWaitKind::Join, Some(owner)) => format!("thread {} to exit", owner.tid),
        (RuntimeWaitKind::Join, None) => format!("{} to exit", object("thread")),
        (RuntimeWaitKind::Lock, Some(_)) => object("lock"),
        (RuntimeWaitKind::Lock, None) => format!("{} (owner unknown)", object("lock")),
        (RuntimeWaitKind::OwnerlessLock, _) => format!(
            "{} (this kind of lock records no owner: who holds it cannot be known)",
            object("lock")
        ),
        (RuntimeWaitKind::Condition, _) => object("condition"),
        (RuntimeWaitKind::Result, _) => format!("the result of {}", object("future")),
        (RuntimeWaitKind::GreenThreads, _) => "its Haskell thread, in the RTS scheduler".to_owned(),
    }
}

/// A lock with a known owner: `mutex 0x55..`, `PI mutex 0x55..`, or, for a join, `thread
/// 4242 to exit`.
fn lock_phrase(owner: FutexOwner, lock: u64) -> String {
    match owner.source {
        OwnerSource::Join | OwnerSource::RuntimeJoin => format!("thread {} to exit", owner.tid),
        OwnerSource::PiWord | OwnerSource::FailedPiLock => format!("PI mutex {}", hex(lock)),
        OwnerSource::GlibcMutex => format!("mutex {}", hex(lock)),
        OwnerSource::RuntimeLock => format!("lock {}", hex(lock)),
    }
}

/// What the waiter of a cycle edge waits for: `mutex 0x55..`, or as its runtime names it
/// (`waiter`, its finding, says).
pub(crate) fn edge_resource(edge: &CycleEdge, waiter: Option<&Finding>) -> String {
    let runtime_wait = waiter
        .and_then(|f| f.thread.runtime.as_ref())
        .and_then(|r| r.wait.as_ref());
    match runtime_wait {
        Some(wait) if wait.object == edge.lock_uaddr => runtime_wait_phrase(wait, Some(edge.owner)),
        _ => lock_phrase(edge.owner, edge.lock_uaddr),
    }
}

/// [`resource_phrase`] with the holder when known: `mutex 0x55d0c0a0 held by tid 1236`.
pub(crate) fn describe_resource(f: &Finding) -> String {
    let phrase = resource_phrase(f);
    match f.owner {
        Some(o) if o.source.is_join() => phrase,
        Some(o) if o.source == OwnerSource::FailedPiLock => {
            format!("{phrase} held by tid {} (lock refused: EDEADLK)", o.tid)
        }
        Some(o) => format!("{phrase} held by tid {}", o.tid),
        None => phrase,
    }
}

/// The pid argument of wait4/waitid (a C int) as a phrase.
fn child_phrase(pid: i32) -> String {
    match pid {
        -1 => "any child".to_owned(),
        0 => "any child in its process group".to_owned(),
        p if p < 0 => format!("any child in process group {}", -i64::from(p)),
        p => format!("child {p}"),
    }
}

/// Seconds, for explanations.
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One sentence saying why a thread got its verdict, complete on its own (JSON's
/// `explanation`): `waits for mutex 0x55.. held by "abba-b" (tid 1236) for 14.2 s`.
pub(crate) fn explanation(f: &Finding) -> String {
    let t = &f.thread;
    let blocked = secs(t.blocked_for_ns);
    let what = describe_call(t);
    let resource = resource_phrase(f);
    match &f.reason {
        Reason::InCycle { owner } => format!(
            "in a deadlock cycle: waits for {resource} held by {}",
            thread_ref(owner)
        ),
        Reason::BehindDeadlock { member } => format!(
            "waits for {resource}, behind deadlocked {}",
            thread_ref(member)
        ),
        Reason::AllThreadsWait {
            threads,
            result_waiter: None,
        } => format!(
            "all {threads} threads of the process wait indefinitely on futexes that nothing \
             outside the process can wake, at least one for a lock (likely deadlock; lock \
             owners unknown); this one waits for {resource}"
        ),
        Reason::AllThreadsWait {
            threads,
            result_waiter: Some(waiter),
        } if waiter.tid == t.tid => format!(
            "waits for {resource} that no thread is working on: all {threads} threads of the \
             process wait indefinitely on futexes that nothing outside the process can wake \
             (every worker is idle), so the result will never come"
        ),
        Reason::AllThreadsWait {
            threads,
            result_waiter: Some(waiter),
        } => format!(
            "all {threads} threads of the process wait indefinitely on futexes that nothing \
             outside the process can wake, and {} waits for a result none of them is working \
             on; this one waits for {resource}",
            thread_ref(waiter)
        ),
        Reason::GreenThreadsBlocked { green_threads } => format!(
            "waits for {resource} and no thread of the process has run for {blocked:.1} s: \
             {}",
            green_why(green_threads)
        ),
        Reason::EventLoopInFrames {
            blocking_call: Some(call),
            ..
        } => format!(
            "event loop thread blocked in {what} in {call} for {blocked:.1} s instead of \
             polling for events"
        ),
        Reason::EventLoopOutsidePoll | Reason::EventLoopInFrames { .. } => format!(
            "event loop thread blocked in {what} for {blocked:.1} s instead of polling for events"
        ),
        Reason::Uninterruptible => format!(
            "in uninterruptible sleep (D) in {} for {blocked:.1} s",
            t.wchan.as_deref().unwrap_or("the kernel")
        ),
        Reason::LockHeld { owner } => format!(
            "waits for {resource} held by {} for {blocked:.1} s",
            thread_ref(owner)
        ),
        Reason::ParkedAfterRefusedPiLock => format!(
            "parked for ever by glibc inside pthread_mutex_lock for {blocked:.1} s: {PARKED_WHY}"
        ),
        Reason::LockWithoutOwner => format!("waits for {resource} for {blocked:.1} s"),
        Reason::NoInput => format!("blocked in {what} on {resource} for {blocked:.1} s"),
        Reason::WaitingForInput { writer } => {
            format!(
                "waiting for input from {} on {resource}",
                fd::writer_phrase(writer)
            )
        }
        Reason::WriterNotVisible => {
            format!("waits for input on {resource}: {}", fd::WRITER_NOT_VISIBLE)
        }
        Reason::WriterBlocked { writer } => format!(
            "blocked in {what} on {resource} for {blocked:.1} s: {}",
            fd::writer_blocked_phrase(writer)
        ),
        Reason::ReadsOwnPipe => format!(
            "blocked in {what} on {resource} for {blocked:.1} s: {}",
            fd::READS_OWN_PIPE
        ),
        Reason::RequestUnanswered { sent_ms_ago } => format!(
            "blocked in {what} on {resource} for {blocked:.1} s: {}",
            fd::request_unanswered_phrase(
                *sent_ms_ago,
                t.fd.as_ref().and_then(|d| d.socket.as_ref())
            )
        ),
        Reason::LastMessageReceived { received_ms_ago } => format!(
            "waits in {what} on {resource}: {}",
            fd::last_message_phrase(*received_ms_ago)
        ),
        Reason::Periodic { .. } => format!(
            "waits in {what} on {resource}: {}",
            periodic_phrase(&f.reason)
        ),
        Reason::RequestUnread { unread_bytes } => format!(
            "blocked in {what} on {resource} for {blocked:.1} s: {}",
            fd::request_unread_phrase(*unread_bytes, t.fd.as_ref().and_then(|d| d.socket.as_ref()))
        ),
        Reason::PeerReadEverything => format!(
            "waits in {what} on {resource}: {}",
            fd::peer_read_everything_phrase(t.fd.as_ref().and_then(|d| d.socket.as_ref()))
        ),
        Reason::PeerBlocked { .. } => format!(
            "blocked in {what} on {resource} for {blocked:.1} s: {}",
            why(f).unwrap_or_default()
        ),
        Reason::RequestHeldByPeer { peer, sent_ms_ago } => format!(
            "waits in {what} on {resource}: {}",
            fd::request_held_phrase(peer, *sent_ms_ago)
        ),
        Reason::ThreadExit { thread } => format!("waits for {} to exit", thread_ref(thread)),
        Reason::Signal => {
            format!("waits in {what} for a signal (condition, park or unknown; no owner known)")
        }
        Reason::TerminalInput => "waits for terminal input".to_owned(),
        Reason::Connections => format!("waits for connections on {resource}"),
        Reason::ChildProcess => "waits for a child process".to_owned(),
        Reason::Events => format!("waits for events in {what}"),
    }
}

/// What all green threads being blocked means, with the threads when they were read.
fn green_why(green_threads: &[crate::model::GreenThread]) -> String {
    let meaning = "every Haskell thread is blocked (on an MVar, in STM, in a foreign call): a \
         likely Haskell-level deadlock, which the RTS does not report while another thread \
         keeps the blocked ones alive";
    match green_threads_phrase(green_threads).as_str() {
        "" => meaning.to_owned(),
        threads => format!("{meaning}; Haskell threads: {threads}"),
    }
}

/// What makes a wait periodic: `periodic: this wait on the same fd ended 3 times before,
/// every ~3.0 s (each lasting up to 3.0 s)`.
fn periodic_phrase(reason: &Reason) -> String {
    let Reason::Periodic {
        ended_before,
        period_ms,
        typical_wait_ms,
    } = reason
    else {
        return String::new();
    };
    let times = if *ended_before == 1 { "once" } else { "times" };
    let count = if *ended_before == 1 {
        String::new()
    } else {
        format!("{ended_before} ")
    };
    format!(
        "periodic: this wait on the same resource ended {count}{times} before, every ~{:.1} s \
         (each lasting up to {:.1} s), so it is not a hang",
        f64::from(*period_ms) / 1000.0,
        f64::from(*typical_wait_ms) / 1000.0
    )
}

/// Why glibc parked a thread without a known lock.
const PARKED_WHY: &str = "the kernel refused its PI lock (EDEADLK: a lock cycle runs through \
     this thread, or ESRCH: the owner died) before watch attached, so the lock is not known";

/// What the text report adds under a finding's headline, which already says the verdict, the
/// call, the resource with its holder's tid and the duration: only what it does not say
/// (`None` when nothing is left). Each thing is said once.
pub(crate) fn why(f: &Finding) -> Option<String> {
    reason_why(f, &f.reason)
}

/// [`why`] for `reason`, one of `f`'s (its own, or the one its own facts gave before its
/// peer was looked at).
fn reason_why(f: &Finding, reason: &Reason) -> Option<String> {
    match reason {
        Reason::BehindDeadlock { member } => {
            Some(format!("behind deadlocked {}", thread_ref(member)))
        }
        Reason::AllThreadsWait {
            threads,
            result_waiter: None,
        } => Some(format!(
            "all {threads} threads wait on futexes of this process, at least one for a lock \
             (likely a deadlock; lock owners unknown)"
        )),
        Reason::AllThreadsWait {
            threads,
            result_waiter: Some(waiter),
        } if waiter.tid == f.thread.tid => Some(format!(
            "no thread is working on the result it waits for: all {threads} threads wait on \
             futexes of this process (every worker is idle), so it will never come"
        )),
        Reason::AllThreadsWait {
            threads,
            result_waiter: Some(waiter),
        } => Some(format!(
            "all {threads} threads wait on futexes of this process, and {} waits for a result \
             none of them is working on",
            thread_ref(waiter)
        )),
        Reason::GreenThreadsBlocked { green_threads } => Some(format!(
            "no thread of the process has run past the threshold: {}",
            green_why(green_threads)
        )),
        Reason::EventLoopOutsidePoll => Some(
            "it came back to epoll_wait/poll/select repeatedly, the last time just before this \
             wait began"
                .to_owned(),
        ),
        Reason::EventLoopInFrames {
            library,
            blocking_call,
            task,
        } => {
            let what_loop = match library {
                Some(library) => format!("its frames run a {library} event loop"),
                None => "its frames run an event loop".to_owned(),
            };
            Some(match (blocking_call, task) {
                (Some(call), _) => format!("{what_loop}, blocked by the call to {call}"),
                (None, Some(task)) => format!("{what_loop}, which is running task \"{task}\""),
                (None, None) => what_loop,
            })
        }
        Reason::Uninterruptible => {
            Some("uninterruptible sleep (D): not even a signal can end it".to_owned())
        }
        Reason::LockHeld { owner } => Some(format!(
            "the holder is {}, {}",
            thread_ref(owner),
            match f.owner.map(|o| o.source) {
                Some(OwnerSource::PiWord) => "as the PI futex word says",
                Some(OwnerSource::GlibcMutex) => "as pthread_mutex_t.__owner says",
                Some(OwnerSource::FailedPiLock) => "as the word of the refused PI lock says",
                Some(OwnerSource::RuntimeLock) => "as the lock object's owner field says",
                Some(OwnerSource::Join | OwnerSource::RuntimeJoin) | None => {
                    "the thread it waits for"
                }
            }
        )),
        Reason::ParkedAfterRefusedPiLock => Some(format!(
            "parked for ever by glibc inside pthread_mutex_lock: {PARKED_WHY}"
        )),
        Reason::WaitingForInput { writer } => Some(format!(
            "waiting for input from {}",
            fd::writer_phrase(writer)
        )),
        Reason::WriterNotVisible => Some(fd::WRITER_NOT_VISIBLE.to_owned()),
        Reason::WriterBlocked { writer } => Some(fd::writer_blocked_phrase(writer)),
        Reason::ReadsOwnPipe => Some(fd::READS_OWN_PIPE.to_owned()),
        Reason::RequestUnanswered { sent_ms_ago } => Some(fd::request_unanswered_phrase(
            *sent_ms_ago,
            f.thread.fd.as_ref().and_then(|d| d.socket.as_ref()),
        )),
        Reason::LastMessageReceived { received_ms_ago } => {
            Some(fd::last_message_phrase(*received_ms_ago))
        }
        Reason::Periodic { .. } => Some(periodic_phrase(&f.reason)),
        Reason::RequestUnread { unread_bytes } => Some(fd::request_unread_phrase(
            *unread_bytes,
            f.thread.fd.as_ref().and_then(|d| d.socket.as_ref()),
        )),
        Reason::PeerReadEverything => Some(fd::peer_read_everything_phrase(
            f.thread.fd.as_ref().and_then(|d| d.socket.as_ref()),
        )),
        Reason::PeerBlocked {
            peer,
            peer_verdict,
            own,
        } => {
            let blocked = fd::peer_blocked_phrase(peer, *peer_verdict);
            Some(match reason_why(f, own) {
                Some(own) => format!("{own}; {blocked}"),
                None => blocked,
            })
        }
        Reason::RequestHeldByPeer { peer, sent_ms_ago } => {
            Some(fd::request_held_phrase(peer, *sent_ms_ago))
        }
        Reason::InCycle { .. }
        | Reason::LockWithoutOwner
        | Reason::NoInput
        | Reason::ThreadExit { .. }
        | Reason::Signal
        | Reason::TerminalInput
        | Reason::Connections
        | Reason::ChildProcess
        | Reason::Events => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SyscallCall, ThreadState};

    /// Check that wait4/waitid's pid argument, a C int, is read as one.
    #[test]
    fn child_pid_is_an_int() {
        assert_eq!(child_phrase(-1), "any child");
        assert_eq!(child_phrase(0), "any child in its process group");
        assert_eq!(child_phrase(-42), "any child in process group 42");
        assert_eq!(child_phrase(4711), "child 4711");
        let mut t = crate::stall::fixtures::futex_thread(1, 2, "sh", 0);
        t.state = ThreadState::Sleeping;
        // wait4(-1, ...) as the register holds it: the int's bits, zero-extended.
        t.call = Some(SyscallCall {
            nr: 61,
            kind: WaitKind::WaitChild,
            resource: 0xffff_ffff,
            detail: 0,
            timeout: 0,
        });
        assert_eq!(wait_phrase(&t, None, WaitingCode::Unknown), "any child");
    }
}
