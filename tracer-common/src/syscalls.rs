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

/// Classifies a syscall number: `Some((kind, index of the resource argument, index of the
/// detail argument))`, or `None` if the syscall is not tracked.
#[inline(always)]
pub fn classify(nr: u32) -> Option<(u32, usize, Option<usize>)> {
    Some(match nr {
        0 | 19 => (kind::READ, 0, None),     // read, readv
        7 => (kind::POLL, 0, Some(2)),       // poll(fds, nfds, timeout_ms)
        23 => (kind::SELECT, 0, None),       // select(nfds, ...)
        35 => (kind::SLEEP, 0, None),        // nanosleep
        43 => (kind::ACCEPT, 0, None),       // accept
        45 | 47 => (kind::RECV, 0, None),    // recvfrom, recvmsg
        61 => (kind::WAIT_CHILD, 0, None),   // wait4(pid, ...)
        202 => (kind::FUTEX, 0, Some(1)),    // futex(uaddr, op, ...)
        230 => (kind::SLEEP, 0, None),       // clock_nanosleep(clockid, ...)
        232 => (kind::EPOLL, 0, Some(3)),    // epoll_wait(epfd, events, max, timeout_ms)
        247 => (kind::WAIT_CHILD, 1, None),  // waitid(which, id, ...)
        270 => (kind::SELECT, 0, None),      // pselect6
        271 => (kind::POLL, 0, None),        // ppoll
        281 => (kind::EPOLL, 0, Some(3)),    // epoll_pwait
        288 => (kind::ACCEPT, 0, None),      // accept4
        441 => (kind::EPOLL, 0, None),       // epoll_pwait2 (timeout is a pointer)
        449 => (kind::FUTEX_WAITV, 0, None), // futex_waitv(waiters, nr, ...)
        _ => return None,
    })
}

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
