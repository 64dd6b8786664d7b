//! What a waiting thread is in: its state, the syscall it waits in, its user registers. One
//! shape each, whether the BPF programs recorded them (profile's aggregate, watch's waits in
//! flight) or `/proc` showed them (watch's snapshot of waits begun before it attached).

use serde::{Deserialize, Serialize};
use tracer_common::{state, syscalls};

/// Thread-state class at switch-out (BPF), or from the `ps` state letter (`/proc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum ThreadState {
    /// Interruptible sleep (S).
    Sleeping,
    /// Uninterruptible sleep (D).
    Disk,
    /// Preempted or yielded while runnable (R): waiting for a CPU, not blocked.
    Runnable,
    /// Stopped, traced, parked, or another state.
    Other,
}

impl ThreadState {
    /// From a `tracer_common::state` class bit.
    pub(crate) fn from_class(class: u32) -> Self {
        match class {
            state::SLEEPING => Self::Sleeping,
            state::DISK => Self::Disk,
            state::RUNNABLE => Self::Runnable,
            _ => Self::Other,
        }
    }

    /// From the state letter of `/proc/PID/task/TID/stat`.
    pub(crate) fn from_letter(letter: char) -> Self {
        match letter {
            'S' => Self::Sleeping,
            'D' => Self::Disk,
            'R' => Self::Runnable,
            _ => Self::Other,
        }
    }

    /// One-letter code as in `ps` (S, D, R, ?).
    pub(crate) fn letter(self) -> char {
        match self {
            Self::Sleeping => 'S',
            Self::Disk => 'D',
            Self::Runnable => 'R',
            Self::Other => '?',
        }
    }

    /// True for the sleeps a blocked thread is in: S or D.
    pub(crate) fn is_asleep(self) -> bool {
        matches!(self, Self::Sleeping | Self::Disk)
    }
}

/// What a blocked thread waits on, by the syscall it is in (`tracer_common::syscalls::kind`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WaitKind {
    /// Not in a tracked syscall (page fault, preemption, untracked syscall).
    #[default]
    Other,
    /// `futex` wait or lock.
    Futex,
    /// `futex_waitv`.
    FutexWaitv,
    /// `epoll_wait` and its variants.
    Epoll,
    /// `poll`/`ppoll`.
    Poll,
    /// `select`/`pselect6`.
    Select,
    /// `read`/`readv`.
    Read,
    /// `recvfrom`/`recvmsg`.
    Recv,
    /// `accept`/`accept4`.
    Accept,
    /// `nanosleep`/`clock_nanosleep`.
    Sleep,
    /// `wait4`/`waitid`.
    WaitChild,
}

impl WaitKind {
    /// From a `tracer_common::syscalls::kind` value.
    pub(crate) fn from_raw(kind: u32) -> Self {
        use syscalls::kind;
        match kind {
            kind::FUTEX => Self::Futex,
            kind::FUTEX_WAITV => Self::FutexWaitv,
            kind::EPOLL => Self::Epoll,
            kind::POLL => Self::Poll,
            kind::SELECT => Self::Select,
            kind::READ => Self::Read,
            kind::RECV => Self::Recv,
            kind::ACCEPT => Self::Accept,
            kind::SLEEP => Self::Sleep,
            kind::WAIT_CHILD => Self::WaitChild,
            _ => Self::Other,
        }
    }

    /// Name as in reports and folded wait leaves: `futex`, `epoll`, `wait-child`, ... `other`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Futex => "futex",
            Self::FutexWaitv => "futex_waitv",
            Self::Epoll => "epoll",
            Self::Poll => "poll",
            Self::Select => "select",
            Self::Read => "read",
            Self::Recv => "recv",
            Self::Accept => "accept",
            Self::Sleep => "sleep",
            Self::WaitChild => "wait-child",
            Self::Other => "other",
        }
    }

    /// A poll-style call (epoll_wait, poll, select): what an event loop blocks in between
    /// events.
    pub(crate) fn is_poll(self) -> bool {
        matches!(self, Self::Epoll | Self::Poll | Self::Select)
    }

    /// A wait on a file descriptor (the resource is an fd).
    pub(crate) fn is_fd(self) -> bool {
        matches!(self, Self::Read | Self::Recv | Self::Accept | Self::Epoll)
    }
}

/// The syscall a thread waits in, with the arguments the analysis needs, read the way the
/// BPF side reads them at `sys_enter` (`tracer_common::syscalls::classify`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct SyscallCall {
    /// Syscall number (x86_64).
    pub nr: u32,
    /// What it waits on.
    pub kind: WaitKind,
    /// Futex address, fd, epoll fd, pid... (see `tracer_common::SyscallCtx::resource`).
    pub resource: u64,
    /// Futex op or poll/epoll timeout in ms.
    pub detail: u64,
    /// Raw timeout argument (see `tracer_common::SyscallCtx::timeout`); 0 in profile's
    /// aggregate, which does not keep it.
    pub timeout: u64,
}

impl SyscallCall {
    /// The tracked syscall `nr` with its six argument registers (as `/proc` shows them), or
    /// `None` for a syscall stallwatch does not follow.
    pub(crate) fn from_args(nr: u32, args: &[u64; 6]) -> Option<Self> {
        let layout = syscalls::classify(nr)?;
        Some(Self {
            nr,
            kind: WaitKind::from_raw(layout.kind),
            resource: args[layout.resource],
            detail: layout.detail.map_or(0, |i| args[i]),
            timeout: layout.timeout.map_or(0, |i| args[i]),
        })
    }

    /// The syscall's name (`futex`, `recvfrom`...).
    pub(crate) fn name(&self) -> Option<&'static str> {
        syscalls::name(self.nr)
    }

    /// The futex command (`op & FUTEX_CMD_MASK`) of a `futex` call.
    pub(crate) fn futex_cmd(&self) -> Option<u32> {
        (self.nr == syscalls::SYS_FUTEX).then_some((self.detail & syscalls::FUTEX_CMD_MASK) as u32)
    }

    /// The fd of an fd wait. fds are C ints: the register's upper half is not part of the value.
    pub(crate) fn fd(&self) -> Option<i32> {
        self.kind.is_fd().then_some(self.resource as i32)
    }

    /// The pid argument of wait4/waitid: a C int (-1 any child, 0 the process group, -N
    /// process group N).
    pub(crate) fn child_pid(&self) -> Option<i32> {
        (self.kind == WaitKind::WaitChild).then_some(self.resource as i32)
    }
}

/// User registers of a blocked thread: from BPF at switch-out (all three), or from
/// `/proc/PID/task/TID/syscall` (ip and sp only: bp unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct UserRegs {
    /// Instruction pointer (the innermost frame's address).
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer register (rbp), if known.
    pub bp: Option<u64>,
}
