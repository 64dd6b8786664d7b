//! How a blocked thread's wait is put into words, once for every place that says it: the
//! verdict explanations and cycle edges here, the text and JSON reports (`report::watch`).

use tracer_common::syscalls::{self, kind};

use super::{
    model::{BlockedThread, FutexWait, OwnerSource},
    owner::{WaitingCode, waiting_code},
};

/// An address: `0x` and lowercase hex, no padding.
pub fn hex(addr: u64) -> String {
    format!("0x{addr:x}")
}

/// A thread as reports name it: `"abba-b" (tid 4243)` when its name is known, else
/// `tid 4243`.
pub fn named_thread(tid: u32, comm: Option<&str>) -> String {
    match comm {
        Some(comm) => format!("\"{comm}\" (tid {tid})"),
        None => format!("tid {tid}"),
    }
}

/// The syscall name, if the thread is in a syscall stallwatch knows.
pub fn syscall_name(t: &BlockedThread) -> Option<&'static str> {
    t.call.and_then(|c| syscalls::name(c.nr))
}

/// The futex command name (`FUTEX_WAIT`...), for futex waits.
pub fn futex_op(t: &BlockedThread) -> Option<&'static str> {
    if let Some(f) = &t.futex {
        return Some(syscalls::futex_op_name(f.op));
    }
    let call = t.call?;
    (call.nr == syscalls::SYS_FUTEX)
        .then(|| syscalls::futex_op_name((call.detail & syscalls::FUTEX_CMD_MASK) as u32))
}

/// What the thread is in: `recvfrom`, `futex FUTEX_WAIT`, or, outside a known syscall,
/// the kernel wait channel (`kernel wait in folio_wait_bit`) or `an untracked wait`.
pub fn describe_call(t: &BlockedThread) -> String {
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
/// the fd's description, `child 4711`, `a timer`, or `nothing known`.
pub fn resource_phrase(t: &BlockedThread) -> String {
    if let Some(f) = &t.futex {
        return futex_phrase(f, waiting_code(&t.user_stack));
    }
    if let Some(fd) = &t.fd {
        return if fd.description.is_empty() {
            format!("fd {} ({})", fd.fd, fd.fd_type)
        } else {
            fd.description.clone()
        };
    }
    let Some(call) = t.call else {
        return "nothing known".to_owned();
    };
    match call.kind {
        kind::FUTEX | kind::FUTEX_WAITV => format!("futex {} (no owner known)", hex(call.resource)),
        kind::EPOLL | kind::READ | kind::RECV | kind::ACCEPT => format!("fd {}", call.resource),
        kind::WAIT_CHILD => child_phrase(call.resource as i64),
        kind::SLEEP => "a timer".to_owned(),
        _ => "nothing known".to_owned(),
    }
}

/// [`resource_phrase`] with the holder when known: `mutex 0x55d0c0a0 held by tid 1236`.
pub fn describe_resource(t: &BlockedThread) -> String {
    let phrase = resource_phrase(t);
    match t.futex.and_then(|f| f.owner) {
        Some(o) if o.source == OwnerSource::Join => phrase,
        Some(o) if o.source == OwnerSource::FailedPiLock => {
            format!("{phrase} held by tid {} (lock refused: EDEADLK)", o.tid)
        }
        Some(o) => format!("{phrase} held by tid {}", o.tid),
        None => phrase,
    }
}

/// A futex wait: a lock, a join, or a bare futex.
fn futex_phrase(f: &FutexWait, code: WaitingCode) -> String {
    let lock = hex(f.lock_uaddr.unwrap_or(f.uaddr));
    match f.owner.map(|o| (o.source, o.tid)) {
        Some((OwnerSource::Join, tid)) => format!("thread {tid} to exit"),
        Some((OwnerSource::PiWord | OwnerSource::FailedPiLock, _)) => format!("PI mutex {lock}"),
        Some((OwnerSource::GlibcMutex, _)) => format!("mutex {lock}"),
        None if matches!(code, WaitingCode::Lock { .. }) => format!("lock {lock} (no owner known)"),
        None => format!("futex {lock} (no owner known)"),
    }
}

/// The pid argument of wait4/waitid as a phrase.
fn child_phrase(pid: i64) -> String {
    match pid {
        -1 => "any child".to_owned(),
        0 => "any child in its process group".to_owned(),
        p if p < 0 => format!("any child in process group {}", -p),
        p => format!("child {p}"),
    }
}
