//! Root-free inspection of live threads and their file descriptors through `/proc`.
//!
//! `stallwatch watch` has to say which threads are stuck *right now*, what they wait on and who
//! holds it, including waits that began before any BPF program was attached (so no trace event
//! ever saw them start). Everything needed for that is in `/proc`, and most of it is readable
//! without root (same user, or `CAP_SYS_PTRACE`), so this module is plain file reading with no
//! aya and no BPF: it also works where BPF cannot be loaded at all.
//!
//! What each submodule answers:
//!
//! - [`threads`]: which processes and threads exist ([`list_pids`], [`threads::list_tids`])
//!   and what one thread is doing ([`threads::read_thread`] -> [`threads::ProcThread`]): state,
//!   the syscall it is in with its arguments (`/proc/PID/task/TID/syscall`), `wchan`, the
//!   kernel stack (root only), when it last ran and how often it has run (`sched`,
//!   `schedstat`).
//! - [`schedclock`]: when a sleeping thread went to sleep, on the `CLOCK_MONOTONIC` timescale
//!   ([`blocked_since_ns`] -> `(ns, `[`schedclock::Exactness`]`)`). The scheduler's clock in
//!   `/proc/PID/task/TID/sched` is *not* `CLOCK_MONOTONIC`: see that module for what was measured
//!   and how it is corrected.
//! - [`memory`]: reading a target's memory through `/proc/PID/mem` ([`ProcessMemory`]), e.g. a
//!   futex word or the `__owner` TID of a glibc `pthread_mutex_t` (offset 8).
//! - [`fds`]: what a file descriptor is ([`FdScanner::describe`] -> `model::FdDescription`):
//!   its type, the other holders of a pipe (in any process), an epoll instance's watched fds,
//!   an eventfd's count, a timerfd's next expiry. [`FdScanner`] shares the host-wide "who holds
//!   this pipe" scan between many descriptions.
//! - [`sockets`]: the socket behind a socket inode (`model::SocketInfo`): protocol, local and peer
//!   address and TCP state, from `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` (the tables of the
//!   process's own network namespace).
//! - [`sock_diag`]: a TCP socket's own timing (`tcp_info`: when data last went each way),
//!   from a `sock_diag` netlink dump of `watch`'s own network namespace.
//! - [`unix_diag`]: the other end of a unix socket (peer inode and name) and the bytes it has
//!   not read, from the same interface's `AF_UNIX` dump.
//!
//! Parsing uses the `procfs` crate where it covers the file (task lists, `stat`, fd targets,
//! the net tables) and small hand-written parsers for the rest (`syscall`, `stack`, `wchan`,
//! `sched`, `schedstat`, `fdinfo`); each hand parser is a pure function over the file's text
//! with its own tests.
//!
//! Threads and fds vanish at any moment. Every reader treats `ENOENT`/`ESRCH` as "gone"
//! ([`InspectError::is_gone`]) and never panics on odd file content: a field it cannot parse
//! becomes `None`/`Unknown`, only the fields nothing works without (a thread's `stat`) turn
//! into an error.

pub(crate) mod fdinfo;
pub(crate) mod fds;
pub(crate) mod memory;
pub(crate) mod schedclock;
pub(crate) mod sock_diag;
pub(crate) mod sockets;
pub(crate) mod threads;
pub(crate) mod unix_diag;

use std::{io, path::PathBuf};

pub(crate) use fds::FdScanner;
#[cfg(test)]
pub(crate) use fds::describe_fd;
pub(crate) use memory::ProcessMemory;
pub(crate) use schedclock::blocked_since_ns;
pub(crate) use threads::{KernelFrameName, list_pids};

/// Why something could not be read from `/proc`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InspectError {
    /// The process, thread or fd no longer exists (`ENOENT`/`ESRCH` while reading it).
    #[error("{path} is gone")]
    Gone {
        /// The `/proc` path that vanished.
        path: PathBuf,
    },
    /// Reading a `/proc` file failed for another reason (typically `EACCES`: another user's
    /// process without `CAP_SYS_PTRACE`).
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `procfs` crate failed on a file it parses for us.
    #[error("cannot read {path} through procfs")]
    Procfs {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: procfs::ProcError,
    },
    /// A file that cannot be done without had content we do not understand.
    #[error("unexpected content in {path}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
}

impl InspectError {
    /// True when the object read is gone (exited thread or process, closed fd). Callers that
    /// walk many threads skip those silently.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(self, InspectError::Gone { .. })
    }

    /// Wraps an I/O error on `path`, classifying `ENOENT`/`ESRCH` as [`InspectError::Gone`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_gone_io(&source) {
            InspectError::Gone { path }
        } else {
            InspectError::Io { path, source }
        }
    }

    /// Wraps a `procfs` error on `path`, classifying "not found" (which procfs also uses for
    /// `ESRCH`) as [`InspectError::Gone`].
    pub(crate) fn procfs(path: impl Into<PathBuf>, source: procfs::ProcError) -> Self {
        let path = path.into();
        match source {
            procfs::ProcError::NotFound(_) => InspectError::Gone { path },
            procfs::ProcError::Io(ref e, _) if is_gone_io(e) => InspectError::Gone { path },
            source => InspectError::Procfs { path, source },
        }
    }
}

/// `ENOENT` or `ESRCH`: the thing read has gone away.
pub(crate) fn is_gone_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads a whole `/proc` file as text (lossy: `/proc` text is ASCII except for names).
pub(crate) fn read_text(path: &str) -> Result<String, InspectError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => Err(InspectError::io(path, e)),
    }
}

/// Reads an optional `/proc` file of the object whose directory is `owner_dir`: `Ok(None)`
/// when it cannot be read for a reason other than the object being gone (permissions, a
/// kernel without that file), `Err` only when `owner_dir` itself has gone.
pub(crate) fn read_text_optional(
    path: &str,
    owner_dir: &str,
) -> Result<Option<String>, InspectError> {
    match read_text(path) {
        Ok(text) => Ok(Some(text)),
        // A missing file in a live directory is a kernel without that feature.
        Err(e) if e.is_gone() && !std::path::Path::new(owner_dir).exists() => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
