//! The blocking syscalls the tracer follows, and the wait kinds they map to.
//!
//! Numbers are the x86_64 syscall table (`arch/x86/entry/syscalls/syscall_64.tbl`), which is
//! ABI and never changes. Other architectures would add a table here.

/// Wait kinds: what a blocked thread waits on.
pub mod kind {
    /// Not in a tracked syscall (page fault, preemption, untracked syscall).
    pub const NONE: u32 = 0;
    /// `futex` wait or lock; resource = futex address.
    pub const FUTEX: u32 = 1;
    /// `futex_waitv`; resource = address of the waiter array.
    pub const FUTEX_WAITV: u32 = 2;
    /// `epoll_wait`/`epoll_pwait`/`epoll_pwait2`; resource = epoll fd.
    pub const EPOLL: u32 = 3;
    /// `poll`/`ppoll`; resource = address of the pollfd array.
    pub const POLL: u32 = 4;
    /// `select`/`pselect6`; resource = nfds.
    pub const SELECT: u32 = 5;
    /// `read`/`readv`; resource = fd.
    pub const READ: u32 = 6;
    /// `recvfrom`/`recvmsg`; resource = fd.
    pub const RECV: u32 = 7;
    /// `accept`/`accept4`; resource = listening fd.
    pub const ACCEPT: u32 = 8;
    /// `nanosleep`/`clock_nanosleep`.
    pub const SLEEP: u32 = 9;
    /// `wait4`/`waitid`; resource = pid waited for (as u64 bits of i64).
    pub const WAIT_CHILD: u32 = 10;
    /// Number of kinds.
    pub const COUNT: u32 = 11;
}

/// `futex` (x86_64).
pub const SYS_FUTEX: u32 = 202;
/// `futex_waitv`.
pub const SYS_FUTEX_WAITV: u32 = 449;

/// How a tracked syscall's arguments are read: which argument is the waited-on resource, which
/// the kind-specific detail, which the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLayout {
    /// A [`kind`] value.
    pub kind: u32,
    /// Index of the resource argument.
    pub resource: usize,
    /// Index of the detail argument (futex op, poll/epoll timeout in ms).
    pub detail: Option<usize>,
    /// Index of the timeout argument (a pointer, or milliseconds for poll/epoll_wait).
    pub timeout: Option<usize>,
}

const fn layout(
    kind: u32,
    resource: usize,
    detail: Option<usize>,
    timeout: Option<usize>,
) -> ArgLayout {
    ArgLayout {
        kind,
        resource,
        detail,
        timeout,
    }
}

/// Classifies a syscall number: how to read its arguments, or `None` if it is not tracked.
#[inline(always)]
pub fn classify(nr: u32) -> Option<ArgLayout> {
    use kind::*;
    Some(match nr {
        0 | 19 => layout(READ, 0, None, None),        // read, readv
        7 => layout(POLL, 0, Some(2), Some(2)),       // poll(fds, nfds, timeout_ms)
        23 => layout(SELECT, 0, None, Some(4)),       // select(nfds, r, w, e, tvp)
        35 => layout(SLEEP, 0, None, None),           // nanosleep
        43 => layout(ACCEPT, 0, None, None),          // accept
        45 | 47 => layout(RECV, 0, None, None),       // recvfrom, recvmsg
        61 => layout(WAIT_CHILD, 0, None, None),      // wait4(pid, ...)
        202 => layout(FUTEX, 0, Some(1), Some(3)),    // futex(uaddr, op, val, utime)
        230 => layout(SLEEP, 0, None, None),          // clock_nanosleep(clockid, ...)
        232 => layout(EPOLL, 0, Some(3), Some(3)),    // epoll_wait(epfd, ev, max, ms)
        247 => layout(WAIT_CHILD, 1, None, None),     // waitid(which, id, ...)
        270 => layout(SELECT, 0, None, Some(4)),      // pselect6(nfds, r, w, e, tsp)
        271 => layout(POLL, 0, None, Some(2)),        // ppoll(fds, nfds, tsp, ...)
        281 => layout(EPOLL, 0, Some(3), Some(3)),    // epoll_pwait(epfd, ev, max, ms)
        288 => layout(ACCEPT, 0, None, None),         // accept4
        441 => layout(EPOLL, 0, None, Some(3)),       // epoll_pwait2(epfd, ev, max, tsp)
        449 => layout(FUTEX_WAITV, 0, None, Some(3)), // futex_waitv(w, nr, fl, tsp)
        _ => return None,
    })
}

/// Whether the timeout argument of syscall `nr` is in milliseconds (`-1` = for ever) rather
/// than a pointer (`NULL` = for ever).
pub fn timeout_is_ms(nr: u32) -> bool {
    matches!(nr, 7 | 232 | 281)
}

/// `FUTEX_LOCK_PI`.
pub const FUTEX_LOCK_PI: u32 = 6;
/// `FUTEX_LOCK_PI2`.
pub const FUTEX_LOCK_PI2: u32 = 13;
/// `FUTEX_TID_MASK`: the owner tid bits of a PI futex word.
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// `EDEADLK`.
pub const EDEADLK: i64 = 35;
/// `ENOSYS`: what x86_64 syscall entry puts in the saved `ax` until the syscall returns.
pub const ENOSYS: i64 = 38;

/// `FUTEX_PRIVATE_FLAG`: the futex is private to the process (no other process can wake it).
pub const FUTEX_PRIVATE_FLAG: u64 = 128;

/// Mask applied to the futex op argument to get the command (`FUTEX_CMD_MASK`: drops
/// `FUTEX_PRIVATE_FLAG` and `FUTEX_CLOCK_REALTIME`).
pub const FUTEX_CMD_MASK: u64 = !(128 | 256);

/// Name of a syscall number this module tracks, for reports.
pub fn name(nr: u32) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        7 => "poll",
        19 => "readv",
        23 => "select",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return None,
    })
}

/// Name of a wait kind, as shown in reports and folded leaf frames.
pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        kind::FUTEX => "futex",
        kind::FUTEX_WAITV => "futex_waitv",
        kind::EPOLL => "epoll",
        kind::POLL => "poll",
        kind::SELECT => "select",
        kind::READ => "read",
        kind::RECV => "recv",
        kind::ACCEPT => "accept",
        kind::SLEEP => "sleep",
        kind::WAIT_CHILD => "wait-child",
        _ => "other",
    }
}

/// Name of a futex command (`op & FUTEX_CMD_MASK`).
pub fn futex_op_name(op: u32) -> &'static str {
    match op {
        0 => "FUTEX_WAIT",
        1 => "FUTEX_WAKE",
        6 => "FUTEX_LOCK_PI",
        7 => "FUTEX_UNLOCK_PI",
        8 => "FUTEX_TRYLOCK_PI",
        9 => "FUTEX_WAIT_BITSET",
        11 => "FUTEX_WAIT_REQUEUE_PI",
        13 => "FUTEX_LOCK_PI2",
        _ => "FUTEX_OTHER",
    }
}
