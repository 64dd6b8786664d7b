//! What a file descriptor is, and who else holds the other end.
//!
//! A thread blocked in `read(5)` waits on whatever fd 5 is: a pipe whose writer is stuck too,
//! a TCP peer, a timer, an epoll set of those. [`FdScanner::describe`] turns an fd into an
//! [`FdDescription`]: its [`FdType`], the `readlink` target, socket details (via
//! [`super::sockets`]; for a loopback TCP connection or a connected unix socket, the socket
//! at the other end, the process holding it and what it has not read), for pipes and FIFOs
//! the other holders of the same pipe in *any* process with their access mode, for epoll the watched fds (from `fdinfo`'s `tfd:` lines,
//! each briefly described), eventfd counts and timerfd expiries. The one-line summaries of
//! reports are made from these in `report::describe::fd`.
//!
//! Finding a pipe's other holders means reading every fd of every process. [`FdScanner`]
//! builds that index once and reuses it (and the socket tables of each network namespace)
//! for all fds described in one round; call [`FdScanner::clear`] to start the next round.
//! The index is per process, so threads that unshared
//! their fd table (`clone` without `CLONE_FILES`) are seen through their process only.
//!
//! fd targets come from `procfs`; `fdinfo` (flags, `eventfd-count`, timerfd and epoll
//! lines) is parsed by [`super::fdinfo`].

use std::{
    collections::{HashMap, hash_map::Entry},
    os::unix::fs::MetadataExt,
};

use procfs::process::FDTarget;

pub(crate) use super::fdinfo::EpollWatch;
use super::{
    InspectError,
    fdinfo::read_fdinfo,
    list_pids, read_text_optional, sock_diag,
    sockets::{SocketInfo, SocketProtocol, SocketTables},
    threads,
    unix_diag::{self, UnixSocket},
};
use crate::model::{
    Detail, EpollTarget, FdAccess, FdDescription, FdHolder, FdType, HolderThread, LocalPeer,
    SyscallCall, TcpTiming, ThreadState, WatchedFd,
};

/// Describes fd `fd` of process `pid` with a scanner of its own (tests).
#[cfg(test)]
pub(crate) fn describe_fd(pid: u32, fd: i32) -> Result<FdDescription, InspectError> {
    FdScanner::new().describe(pid, fd)
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
pub(crate) struct FdScanner {
    /// `pipe:[N]`, `socket:[N]` or path -> (pid, fd) of every holder; `None` until first
    /// needed.
    holders: Option<HashMap<String, Vec<(u32, i32)>>>,
    comms: HashMap<u32, Option<String>>,
    /// pid -> its threads, for the processes holding a pipe's write end.
    threads: HashMap<u32, Vec<HolderThread>>,
    /// Network namespace inode -> its tables.
    sockets: HashMap<u64, SocketTables>,
    /// TCP socket inode -> its timing, for `watch`'s own network namespace; `None` until
    /// first needed.
    tcp_timings: Option<HashMap<u64, TcpTiming>>,
    /// Unix socket inode -> its peer, name and unread bytes, for `watch`'s own network
    /// namespace; `None` until first needed.
    unix_sockets: Option<HashMap<u64, UnixSocket>>,
}

impl FdScanner {
    /// An empty scanner; nothing is read until the first description needs it.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Forgets everything cached, so the next description sees the system as it is now.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Describes fd `fd` of process `pid`. Scans all processes (once per scanner) when the fd
    /// is a pipe or FIFO.
    pub(crate) fn describe(&mut self, pid: u32, fd: i32) -> Result<FdDescription, InspectError> {
        self.describe_inner(pid, fd, true)
    }

    /// Every other fd open on the pipe/FIFO whose target text is `target`, except `(pid, fd)`.
    pub(crate) fn pipe_holders(&mut self, target: &str, pid: u32, fd: i32) -> Vec<FdHolder> {
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
                threads: Vec::new(),
            })
            .collect()
    }

    /// What the threads of process `pid` are doing now (state and syscall), read once per
    /// scanner: whether a pipe's writer is alive, asleep, polling or stuck.
    fn holder_threads(&mut self, pid: u32) -> Vec<HolderThread> {
        self.threads
            .entry(pid)
            .or_insert_with(|| read_holder_threads(pid))
            .clone()
    }

    /// Adds the threads of each process holding a write end (or an end of unknown access) to
    /// `peers`, the other holders of a pipe read through fd `own`.
    fn add_writer_threads(&mut self, own: Option<FdAccess>, peers: &mut [FdHolder]) {
        if !own.is_some_and(FdAccess::reads) {
            return;
        }
        for holder in peers.iter_mut() {
            if holder.access.is_none_or(FdAccess::writes) {
                holder.threads = self.holder_threads(holder.pid);
            }
        }
    }

    fn comm(&mut self, pid: u32) -> Option<String> {
        self.comms
            .entry(pid)
            .or_insert_with(|| crate::procs::read_comm(pid))
            .clone()
    }

    /// Socket `inode` of process `pid`; `full`: also a unix socket's peer (which needs the
    /// host-wide holder index: not for the brief descriptions of an epoll set's members).
    fn socket(
        &mut self,
        pid: u32,
        inode: u64,
        full: bool,
    ) -> Result<Option<SocketInfo>, InspectError> {
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        let Ok(netns) = netns else {
            return Ok(SocketTables::read(pid)?.find(inode));
        };
        let tables = match self.sockets.entry(netns) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(SocketTables::read(pid)?),
        };
        let mut info = tables.find(inode);
        let tcp_peer = tables.tcp_peer(inode);
        let Some(socket) = info.as_mut() else {
            return Ok(None);
        };
        match socket.protocol {
            SocketProtocol::Tcp | SocketProtocol::Tcp6 => {
                socket.tcp_timing = self.tcp_timing(netns, inode);
                socket.local_peer = tcp_peer.map(|(peer_inode, unread_bytes)| LocalPeer {
                    inode: peer_inode,
                    pid: self.socket_holder(peer_inode, pid),
                    unread_bytes,
                });
            }
            SocketProtocol::Unix if full => self.add_unix_peer(netns, pid, socket),
            SocketProtocol::Unix => {}
            SocketProtocol::Udp | SocketProtocol::Udp6 => {}
        }
        Ok(info)
    }

    /// For a connected unix socket of process `pid` in `watch`'s own network namespace: the
    /// peer's name (the server's path, for a client) as [`SocketInfo::peer`], and the peer
    /// socket with its holder and unread bytes as [`SocketInfo::local_peer`].
    fn add_unix_peer(&mut self, netns: u64, pid: u32, socket: &mut SocketInfo) {
        if !is_own_netns(netns) {
            return;
        }
        let sockets = self
            .unix_sockets
            .get_or_insert_with(|| unix_diag::unix_sockets().unwrap_or_default());
        let Some(peer_inode) = sockets.get(&socket.inode).and_then(|s| s.peer_inode) else {
            return;
        };
        let Some(peer) = sockets.get(&peer_inode) else {
            return;
        };
        socket.peer = peer.name.clone();
        let unread_bytes = peer.unread_bytes;
        if let Some(unread_bytes) = unread_bytes {
            socket.local_peer = Some(LocalPeer {
                inode: peer_inode,
                pid: self.socket_holder(peer_inode, pid),
                unread_bytes,
            });
        }
    }

    /// The process holding socket `inode`, from the holder index: the lowest pid other than
    /// `own` (the process asking, which may hold both ends of a socket pair it shared with a
    /// child before forking: the other end is then the child's); `own` itself when it is
    /// the only holder (the peer is another thread of the same process).
    fn socket_holder(&mut self, inode: u64, own: u32) -> Option<u32> {
        let holders = self.holders.get_or_insert_with(build_holder_index);
        let pids = holders
            .get(&format!("socket:[{inode}]"))
            .map(|v| v.iter().map(|&(pid, _)| pid))?;
        preferred_holder(pids, own)
    }

    /// The `tcp_info` timing of TCP socket `inode` in network namespace `netns`: only for
    /// `watch`'s own namespace (`sock_diag` answers for the caller's), dumped once per
    /// scanner. `None` when unreadable.
    fn tcp_timing(&mut self, netns: u64, inode: u64) -> Option<TcpTiming> {
        if !is_own_netns(netns) {
            return None;
        }
        self.tcp_timings
            .get_or_insert_with(|| sock_diag::tcp_timings().unwrap_or_default())
            .get(&inode)
            .copied()
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
            access,
            detail: if full { Detail::Full } else { Detail::Brief },
            ..FdDescription::new(fd, FdType::Other, target.clone())
        };
        match &parsed.target {
            FDTarget::Socket(inode) => {
                d.fd_type = FdType::Socket;
                d.socket = self.socket(pid, *inode, full)?;
            }
            FDTarget::Pipe(_) => {
                d.fd_type = FdType::Pipe;
                if full {
                    d.pipe_peers = self.pipe_holders(&target, pid, fd);
                    self.add_writer_threads(access, &mut d.pipe_peers);
                }
            }
            FDTarget::Path(_) => {
                let is_fifo = std::fs::metadata(&fd_path)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
                    .unwrap_or(false);
                if is_fifo {
                    d.fd_type = FdType::Fifo;
                    if full {
                        d.pipe_peers = self.pipe_holders(&target, pid, fd);
                        self.add_writer_threads(access, &mut d.pipe_peers);
                    }
                } else {
                    d.fd_type = FdType::File;
                }
            }
            FDTarget::AnonInode(name) => match name.trim_start_matches('[').trim_end_matches(']') {
                "eventfd" => {
                    d.fd_type = FdType::EventFd;
                    d.eventfd_count = info.eventfd_count;
                }
                "timerfd" => {
                    d.fd_type = FdType::TimerFd;
                    d.timer = info.timer.clone();
                }
                "signalfd" => {
                    d.fd_type = FdType::SignalFd;
                    d.sigmask = info.sigmask;
                }
                "eventpoll" => {
                    d.fd_type = FdType::Epoll;
                    d.epoll_targets = info
                        .epoll
                        .iter()
                        .map(|w| EpollTarget {
                            fd: w.fd,
                            events: w.events,
                            watched: if full {
                                self.watched_fd(pid, w)
                            } else {
                                WatchedFd::NotDescribed
                            },
                        })
                        .collect();
                    d.epoll_targets.sort_by_key(|t| t.fd);
                }
                _ => {}
            },
            _ => {}
        }
        Ok(d)
    }

    /// What an epoll instance's watched fd is now, briefly.
    fn watched_fd(&mut self, pid: u32, watch: &EpollWatch) -> WatchedFd {
        if let Some(ino) = watch.inode {
            match std::fs::metadata(format!("/proc/{pid}/fd/{}", watch.fd)) {
                Ok(m) if m.ino() != ino => {
                    return WatchedFd::Reused { watched_inode: ino };
                }
                Ok(_) => {}
                Err(_) => return WatchedFd::Closed,
            }
        }
        match self.describe_inner(pid, watch.fd, false) {
            Ok(d) => WatchedFd::Described(Box::new(d)),
            Err(_) => WatchedFd::Closed,
        }
    }
}
/// Of the processes holding the other end of a socket of process `own`: the lowest pid other
/// than `own`, else `own` (see [`FdScanner::socket_holder`]).
fn preferred_holder(pids: impl Iterator<Item = u32>, own: u32) -> Option<u32> {
    pids.min_by_key(|&pid| (pid == own, pid))
}

/// Whether network namespace `netns` is `watch`'s own, the one `sock_diag` answers for.
fn is_own_netns(netns: u64) -> bool {
    std::fs::metadata("/proc/self/ns/net").is_ok_and(|m| m.ino() == netns)
}

/// At most this many threads of a pipe writer are read: enough to see whether any of them
/// is alive, without reading every thread of a JVM that happens to hold a pipe.
const MAX_HOLDER_THREADS: usize = 256;

/// The state and syscall of each thread of `pid` (empty if it is gone or unreadable).
fn read_holder_threads(pid: u32) -> Vec<HolderThread> {
    let Ok(tids) = threads::list_tids(pid) else {
        return Vec::new();
    };
    tids.into_iter()
        .take(MAX_HOLDER_THREADS)
        .filter_map(|tid| {
            let state = threads::read_state(pid, tid)?;
            let dir = format!("/proc/{pid}/task/{tid}");
            let call = match read_text_optional(&format!("{dir}/syscall"), &dir)
                .ok()
                .flatten()
                .map(|text| threads::parse_syscall(&text))
            {
                Some(threads::ProcSyscall::InSyscall { nr, args, .. }) => {
                    SyscallCall::from_args(nr, &args)
                }
                _ => None,
            };
            Some(HolderThread {
                tid,
                state: ThreadState::from_letter(state),
                call,
            })
        })
        .collect()
}

/// Reads every fd of every process once: pipe, path and socket targets -> holders.
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
            if matches!(
                info.target,
                FDTarget::Pipe(_) | FDTarget::Path(_) | FDTarget::Socket(_)
            ) {
                index
                    .entry(target_string(&info.target))
                    .or_default()
                    .push((pid, info.fd));
            }
        }
    }
    index
}

#[cfg(test)]
mod tests;
