//! What a file descriptor is, and who else holds the other end.
//!
//! A thread blocked in `read(5)` waits on whatever fd 5 is: a pipe whose writer is stuck too,
//! a TCP peer, a timer, an epoll set of those. [`describe_fd`] turns an fd into an
//! [`FdDescription`]: its [`FdType`], the `readlink` target, socket details (via
//! [`super::sockets`]), for pipes and FIFOs the other holders of the same pipe in *any*
//! process with their access mode, for epoll the watched fds (from `fdinfo`'s `tfd:` lines,
//! each briefly described), eventfd counts and timerfd expiries, plus a one-line summary.
//!
//! Finding a pipe's other holders means reading every fd of every process. [`FdScanner`]
//! builds that index once and reuses it (and the socket tables of each network namespace)
//! for all fds described in one round; call [`FdScanner::clear`] to start the next round.
//! [`describe_fd`] is the one-off form. The index is per process, so threads that unshared
//! their fd table (`clone` without `CLONE_FILES`) are seen through their process only.
//!
//! fd targets come from `procfs`; `fdinfo` (flags, `eventfd-count`, timerfd and epoll
//! lines) is parsed by [`super::fdinfo`].

use std::{
    collections::{HashMap, hash_map::Entry},
    os::unix::fs::MetadataExt,
};

use procfs::process::FDTarget;
use serde::Serialize;

pub use super::fdinfo::{EpollWatch, FdInfoFields, parse_fdinfo};
use super::{
    InspectError,
    fdinfo::read_fdinfo,
    list_pids,
    sockets::{SocketInfo, SocketTables},
};

/// Holders listed by name in a summary before "and N more".
const SUMMARY_HOLDERS: usize = 4;

/// Kind of object behind an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FdType {
    /// Any socket (`socket:[N]`).
    Socket,
    /// Anonymous pipe (`pipe:[N]`).
    Pipe,
    /// Named pipe (a path whose file is a FIFO).
    Fifo,
    /// Regular file, directory or device.
    File,
    /// `eventfd`.
    EventFd,
    /// `timerfd`.
    TimerFd,
    /// `epoll` instance.
    Epoll,
    /// `signalfd`.
    SignalFd,
    /// Anything else (inotify, pidfd, io_uring, memfd, ...).
    Other,
}

impl FdType {
    /// Lower-case name, as in JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Pipe => "pipe",
            Self::Fifo => "fifo",
            Self::File => "file",
            Self::EventFd => "eventfd",
            Self::TimerFd => "timerfd",
            Self::Epoll => "epoll",
            Self::SignalFd => "signalfd",
            Self::Other => "other",
        }
    }
}

/// Access mode of an open file, from the `O_ACCMODE` bits of `fdinfo`'s `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FdAccess {
    /// `O_RDONLY`.
    Read,
    /// `O_WRONLY`.
    Write,
    /// `O_RDWR`.
    ReadWrite,
}

impl FdAccess {
    /// From the octal `flags:` value of `fdinfo`.
    pub fn from_flags(flags: u32) -> Option<Self> {
        match flags & libc::O_ACCMODE as u32 {
            0 => Some(FdAccess::Read),
            1 => Some(FdAccess::Write),
            2 => Some(FdAccess::ReadWrite),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, FdAccess::Read | FdAccess::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, FdAccess::Write | FdAccess::ReadWrite)
    }
}

/// Another fd open on the same pipe or FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdHolder {
    /// Process holding it.
    pub pid: u32,
    /// That process's name.
    pub comm: String,
    /// The fd number in that process.
    pub fd: i32,
    /// Read/write end; `None` if its `fdinfo` was unreadable.
    pub access: Option<FdAccess>,
}

/// One fd watched by an epoll instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpollTarget {
    /// The watched fd number (as registered, in the epoll owner's fd table).
    pub fd: i32,
    /// Requested `EPOLL*` event mask.
    pub events: u32,
    /// Brief description of the watched fd.
    pub description: String,
}

/// A timerfd's settings, from its `fdinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimerFdState {
    /// Clock name, e.g. `CLOCK_MONOTONIC`.
    pub clock: String,
    /// Time until the next expiry, ns; 0 = disarmed.
    pub next_expiry_ns: u64,
    /// Reload interval, ns; 0 = one-shot.
    pub interval_ns: u64,
    /// Expirations not yet read.
    pub ticks: u64,
}

/// Everything known about one fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdDescription {
    /// The fd number.
    pub fd: i32,
    /// Its kind.
    pub fd_type: FdType,
    /// `readlink /proc/PID/fd/FD`, e.g. `pipe:[1234]`, `/var/log/x.log`.
    pub target: String,
    /// Its access mode, if `fdinfo` was readable.
    pub access: Option<FdAccess>,
    /// For TCP, UDP and unix sockets.
    pub socket: Option<SocketInfo>,
    /// For pipes and FIFOs: every other fd open on it, in any process (not this fd itself).
    pub pipe_peers: Vec<FdHolder>,
    /// For epoll: the watched fds.
    pub epoll_targets: Vec<EpollTarget>,
    /// For eventfd: the current counter.
    pub eventfd_count: Option<u64>,
    /// For timerfd: its settings.
    pub timer: Option<TimerFdState>,
    /// One-line summary, e.g. `TCP 127.0.0.1:41234 -> 127.0.0.1:5432 (ESTABLISHED)`,
    /// `pipe:[1234], write end held by 4711 (writer) fd 5`, `eventfd (count 0)`.
    pub description: String,
}

/// Describes fd `fd` of process `pid`. Scans all processes when the fd is a pipe or FIFO;
/// use an [`FdScanner`] to describe many fds.
pub fn describe_fd(pid: u32, fd: i32) -> Result<FdDescription, InspectError> {
    FdScanner::new().describe(pid, fd)
}

/// The fds of process `pid` with their `readlink` targets, by fd number.
pub fn fd_targets(pid: u32) -> Result<Vec<(i32, String)>, InspectError> {
    let path = format!("/proc/{pid}/fd");
    let process =
        procfs::process::Process::new(pid as i32).map_err(|e| InspectError::procfs(&path, e))?;
    let fds = process.fd().map_err(|e| InspectError::procfs(&path, e))?;
    let mut targets: Vec<(i32, String)> = fds
        .filter_map(|info| info.ok())
        .map(|info| (info.fd, target_string(&info.target)))
        .collect();
    targets.sort_by_key(|&(fd, _)| fd);
    Ok(targets)
}

/// The `readlink` text of a parsed target (procfs parses it; we show it as the kernel did).
fn target_string(target: &FDTarget) -> String {
    match target {
        FDTarget::Path(p) => p.to_string_lossy().into_owned(),
        FDTarget::Socket(ino) => format!("socket:[{ino}]"),
        FDTarget::Net(ino) => format!("net:[{ino}]"),
        FDTarget::Pipe(ino) => format!("pipe:[{ino}]"),
        FDTarget::AnonInode(name) => format!("anon_inode:{name}"),
        FDTarget::MemFD(name) => format!("/memfd:{name}"),
        FDTarget::Other(kind, ino) => format!("{kind}:[{ino}]"),
        FDTarget::Unknown(kind, rest) => format!("{kind}:{rest}"),
    }
}

/// Describes fds while sharing host-wide work between them: the pipe-holder index (every fd
/// of every process, built on first need) and socket tables per network namespace.
#[derive(Debug, Default)]
pub struct FdScanner {
    /// `pipe:[N]` or path -> (pid, fd) of every holder; `None` until first needed.
    holders: Option<HashMap<String, Vec<(u32, i32)>>>,
    comms: HashMap<u32, String>,
    /// Network namespace inode -> its tables.
    sockets: HashMap<u64, SocketTables>,
}

impl FdScanner {
    /// An empty scanner; nothing is read until the first description needs it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything cached, so the next description sees the system as it is now.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Describes fd `fd` of process `pid` (see [`describe_fd`]).
    pub fn describe(&mut self, pid: u32, fd: i32) -> Result<FdDescription, InspectError> {
        self.describe_inner(pid, fd, true)
    }

    /// Every other fd open on the pipe/FIFO whose target text is `target`, except `(pid, fd)`.
    pub fn pipe_holders(&mut self, target: &str, pid: u32, fd: i32) -> Vec<FdHolder> {
        let holders = self.holders.get_or_insert_with(build_holder_index);
        let found: Vec<(u32, i32)> = holders
            .get(target)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&holder| holder != (pid, fd))
                    .collect()
            })
            .unwrap_or_default();
        found
            .into_iter()
            .map(|(hpid, hfd)| FdHolder {
                pid: hpid,
                comm: self.comm(hpid),
                fd: hfd,
                access: read_fdinfo(hpid, hfd)
                    .ok()
                    .flatten()
                    .and_then(|i| i.flags)
                    .and_then(FdAccess::from_flags),
            })
            .collect()
    }

    fn comm(&mut self, pid: u32) -> String {
        self.comms
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .clone()
    }

    fn socket(&mut self, pid: u32, inode: u64) -> Result<Option<SocketInfo>, InspectError> {
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        match netns {
            Ok(netns) => {
                let tables = match self.sockets.entry(netns) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(SocketTables::read(pid)?),
                };
                Ok(tables.find(inode))
            }
            Err(_) => Ok(SocketTables::read(pid)?.find(inode)),
        }
    }

    /// `full`: also find pipe peers and describe epoll targets (briefly, never recursing).
    fn describe_inner(
        &mut self,
        pid: u32,
        fd: i32,
        full: bool,
    ) -> Result<FdDescription, InspectError> {
        let fd_path = format!("/proc/{pid}/fd/{fd}");
        let process = procfs::process::Process::new(pid as i32)
            .map_err(|e| InspectError::procfs(&fd_path, e))?;
        let parsed = process
            .fd_from_fd(fd)
            .map_err(|e| InspectError::procfs(&fd_path, e))?;
        let target = target_string(&parsed.target);
        let info = read_fdinfo(pid, fd)?.unwrap_or_default();
        let access = info.flags.and_then(FdAccess::from_flags);

        let mut d = FdDescription {
            fd,
            fd_type: FdType::Other,
            target: target.clone(),
            access,
            socket: None,
            pipe_peers: Vec::new(),
            epoll_targets: Vec::new(),
            eventfd_count: None,
            timer: None,
            description: target.clone(),
        };
        match &parsed.target {
            FDTarget::Socket(inode) => {
                d.fd_type = FdType::Socket;
                d.socket = self.socket(pid, *inode)?;
                d.description = match &d.socket {
                    Some(s) => s.summary(),
                    None => format!("{target} (not TCP, UDP or unix)"),
                };
            }
            FDTarget::Pipe(_) => {
                d.fd_type = FdType::Pipe;
                if full {
                    d.pipe_peers = self.pipe_holders(&target, pid, fd);
                    d.description = pipe_summary(&target, access, &d.pipe_peers);
                }
            }
            FDTarget::Path(_) => {
                let is_fifo = std::fs::metadata(&fd_path)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
                    .unwrap_or(false);
                if is_fifo {
                    d.fd_type = FdType::Fifo;
                    let name = format!("fifo {target}");
                    d.description = name.clone();
                    if full {
                        d.pipe_peers = self.pipe_holders(&target, pid, fd);
                        d.description = pipe_summary(&name, access, &d.pipe_peers);
                    }
                } else {
                    d.fd_type = FdType::File;
                }
            }
            FDTarget::AnonInode(name) => match name.trim_start_matches('[').trim_end_matches(']') {
                "eventfd" => {
                    d.fd_type = FdType::EventFd;
                    d.eventfd_count = info.eventfd_count;
                    d.description = match info.eventfd_count {
                        Some(count) => format!("eventfd (count {count})"),
                        None => "eventfd".into(),
                    };
                }
                "timerfd" => {
                    d.fd_type = FdType::TimerFd;
                    d.description = match &info.timer {
                        Some(t) => timer_summary(t),
                        None => "timerfd".into(),
                    };
                    d.timer = info.timer.clone();
                }
                "signalfd" => {
                    d.fd_type = FdType::SignalFd;
                    d.description = match info.sigmask {
                        Some(mask) => format!("signalfd for {}", signal_names(mask)),
                        None => "signalfd".into(),
                    };
                }
                "eventpoll" => {
                    d.fd_type = FdType::Epoll;
                    if full {
                        d.epoll_targets = info
                            .epoll
                            .iter()
                            .map(|w| EpollTarget {
                                fd: w.fd,
                                events: w.events,
                                description: self.epoll_target_summary(pid, w),
                            })
                            .collect();
                        d.epoll_targets.sort_by_key(|t| t.fd);
                        d.description = epoll_summary(&d.epoll_targets);
                    } else {
                        d.description = format!("epoll ({} fds)", info.epoll.len());
                    }
                }
                _ => {}
            },
            _ => {}
        }
        Ok(d)
    }

    fn epoll_target_summary(&mut self, pid: u32, watch: &EpollWatch) -> String {
        if let Some(ino) = watch.inode {
            match std::fs::metadata(format!("/proc/{pid}/fd/{}", watch.fd)) {
                Ok(m) if m.ino() != ino => return format!("(fd reused; watched inode {ino})"),
                Ok(_) => {}
                Err(_) => return "(closed)".into(),
            }
        }
        match self.describe_inner(pid, watch.fd, false) {
            Ok(d) => d.description,
            Err(_) => "(closed)".into(),
        }
    }
}

/// Reads every fd of every process once: pipe and path targets -> holders.
fn build_holder_index() -> HashMap<String, Vec<(u32, i32)>> {
    let mut index: HashMap<String, Vec<(u32, i32)>> = HashMap::new();
    for pid in list_pids() {
        let Ok(process) = procfs::process::Process::new(pid as i32) else {
            continue;
        };
        let Ok(fds) = process.fd() else {
            continue;
        };
        for info in fds.filter_map(|i| i.ok()) {
            if matches!(info.target, FDTarget::Pipe(_) | FDTarget::Path(_)) {
                index
                    .entry(target_string(&info.target))
                    .or_default()
                    .push((pid, info.fd));
            }
        }
    }
    index
}

fn pipe_summary(name: &str, own: Option<FdAccess>, peers: &[FdHolder]) -> String {
    let holder_list = |holders: &[&FdHolder]| {
        let mut parts: Vec<String> = holders
            .iter()
            .take(SUMMARY_HOLDERS)
            .map(|h| format!("{} ({}) fd {}", h.pid, h.comm, h.fd))
            .collect();
        if holders.len() > SUMMARY_HOLDERS {
            parts.push(format!("and {} more", holders.len() - SUMMARY_HOLDERS));
        }
        parts.join(", ")
    };
    let with = |pred: fn(FdAccess) -> bool| -> Vec<&FdHolder> {
        peers.iter().filter(|h| h.access.is_none_or(pred)).collect()
    };
    match own {
        Some(FdAccess::Read) => {
            let writers = with(FdAccess::writes);
            if writers.is_empty() {
                format!("{name}, no write end open elsewhere")
            } else {
                format!("{name}, write end held by {}", holder_list(&writers))
            }
        }
        Some(FdAccess::Write) => {
            let readers = with(FdAccess::reads);
            if readers.is_empty() {
                format!("{name}, no read end open elsewhere")
            } else {
                format!("{name}, read end held by {}", holder_list(&readers))
            }
        }
        _ if peers.is_empty() => format!("{name}, held nowhere else"),
        _ => format!(
            "{name}, also held by {}",
            holder_list(&peers.iter().collect::<Vec<_>>())
        ),
    }
}

fn epoll_summary(targets: &[EpollTarget]) -> String {
    if targets.is_empty() {
        return "epoll on nothing".into();
    }
    let parts: Vec<String> = targets
        .iter()
        .map(|t| format!("{}: {}", t.fd, t.description))
        .collect();
    format!("epoll on {}", parts.join(", "))
}

fn timer_summary(t: &TimerFdState) -> String {
    let mut s = format!("timerfd {}", t.clock);
    if t.next_expiry_ns == 0 {
        s.push_str(", disarmed");
    } else {
        s.push_str(&format!(", next in {}", format_secs(t.next_expiry_ns)));
    }
    if t.interval_ns != 0 {
        s.push_str(&format!(", interval {}", format_secs(t.interval_ns)));
    }
    s
}

/// `100_000_000` -> `0.1 s`, `98_929_393` -> `0.099 s`, `12_000_000_000` -> `12 s`.
fn format_secs(ns: u64) -> String {
    let text = format!("{:.3}", ns as f64 / 1e9);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} s")
}

pub(super) fn clock_name(id: i64) -> String {
    match id {
        0 => "CLOCK_REALTIME".into(),
        1 => "CLOCK_MONOTONIC".into(),
        7 => "CLOCK_BOOTTIME".into(),
        8 => "CLOCK_REALTIME_ALARM".into(),
        9 => "CLOCK_BOOTTIME_ALARM".into(),
        other => format!("clock {other}"),
    }
}

fn signal_names(mask: u64) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    let names: Vec<String> = (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match NAMES.get(bit) {
            Some(name) => (*name).to_string(),
            None => format!("signal {}", bit + 1),
        })
        .collect();
    if names.is_empty() {
        "no signals".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
