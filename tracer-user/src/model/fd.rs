//! What a file descriptor is, as `/proc` shows it: its type, the socket behind it, the other
//! holders of a pipe, an epoll instance's interest list, a timer's settings. Filled in by
//! `inspect::fds`; put into words only by `report` (`report::describe::fd`).

use serde::{Deserialize, Serialize};

use super::{SyscallCall, ThreadState};

/// Kind of object behind an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FdType {
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
    pub(crate) fn name(self) -> &'static str {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FdAccess {
    /// `O_RDONLY`.
    Read,
    /// `O_WRONLY`.
    Write,
    /// `O_RDWR`.
    ReadWrite,
}

impl FdAccess {
    /// From the octal `flags:` value of `fdinfo`.
    pub(crate) fn from_flags(flags: u32) -> Option<Self> {
        match flags & libc::O_ACCMODE as u32 {
            0 => Some(FdAccess::Read),
            1 => Some(FdAccess::Write),
            2 => Some(FdAccess::ReadWrite),
            _ => None,
        }
    }

    /// Reads (read-only or read-write).
    pub(crate) fn reads(self) -> bool {
        matches!(self, FdAccess::Read | FdAccess::ReadWrite)
    }

    /// Writes (write-only or read-write).
    pub(crate) fn writes(self) -> bool {
        matches!(self, FdAccess::Write | FdAccess::ReadWrite)
    }
}

/// Another fd open on the same pipe or FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FdHolder {
    /// Process holding it.
    pub pid: u32,
    /// That process's name, if it could be read.
    pub comm: Option<String>,
    /// The fd number in that process.
    pub fd: i32,
    /// Read/write end; `None` if its `fdinfo` was unreadable.
    pub access: Option<FdAccess>,
    /// For a write end seen from a reader: what each thread of the holding process was doing
    /// at the scan (is the writer alive, asleep, polling, stuck?). Empty when not read (other
    /// holders, unreadable processes, recordings made before this field existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<HolderThread>,
}

/// One thread of a process holding a pipe's write end, as `/proc` showed it at the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HolderThread {
    /// Thread id.
    pub tid: u32,
    /// Its scheduler state.
    pub state: ThreadState,
    /// The syscall it was in, if one stallwatch follows.
    pub call: Option<SyscallCall>,
}

/// What an epoll instance's watched fd is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WatchedFd {
    /// Described briefly (no pipe holders, no nested interest list).
    Described(Box<FdDescription>),
    /// The fd number now names another file than the one registered (its inode).
    Reused {
        /// The inode registered with epoll.
        watched_inode: u64,
    },
    /// The fd is closed, or could not be read.
    Closed,
    /// Not looked at (the epoll fd itself was only described briefly).
    NotDescribed,
}

/// One fd watched by an epoll instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpollTarget {
    /// The watched fd number (as registered, in the epoll owner's fd table).
    pub fd: i32,
    /// Requested `EPOLL*` event mask.
    pub events: u32,
    /// What that fd is.
    pub watched: WatchedFd,
}

/// A timerfd's settings, from its `fdinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimerFdState {
    /// Clock id (`CLOCK_MONOTONIC` is 1).
    pub clock_id: i64,
    /// Time until the next expiry, ns; 0 = disarmed.
    pub next_expiry_ns: u64,
    /// Reload interval, ns; 0 = one-shot.
    pub interval_ns: u64,
    /// Expirations not yet read.
    pub ticks: u64,
}

/// Socket family and protocol as named by the `/proc/net` table it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SocketProtocol {
    /// TCP over IPv4.
    Tcp,
    /// TCP over IPv6 (including v4-mapped peers).
    Tcp6,
    /// UDP over IPv4.
    Udp,
    /// UDP over IPv6.
    Udp6,
    /// Unix domain socket.
    Unix,
}

/// What one socket is connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SocketInfo {
    /// Which table it was in.
    pub protocol: SocketProtocol,
    /// Socket inode (the number in `socket:[N]`).
    pub inode: u64,
    /// Local address: `a.b.c.d:port`, `[v6]:port`, or a unix path (`@name` for abstract
    /// sockets, empty when unnamed).
    pub local: String,
    /// Remote address; `None` for unconnected/listening sockets. For a unix socket, the bound
    /// name of its peer (a client's peer is named after the server's path, `@name` for an
    /// abstract one), `None` when the peer is unnamed or unknown.
    pub peer: Option<String>,
    /// TCP state as the kernel names it (`ESTABLISHED`, `LISTEN`, ...); TCP only.
    pub tcp_state: Option<String>,
    /// For unix sockets: `stream`, `dgram` or `seqpacket`, and the state (`CONNECTED`, ...).
    pub unix_kind: Option<(String, String)>,
    /// For TCP sockets in `watch`'s own network namespace: the socket's `tcp_info` timing
    /// at the scan (`None` elsewhere, and in recordings made before it was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_timing: Option<TcpTiming>,
    /// For a TCP connection whose other end is a socket of the same network namespace
    /// (loopback), or a connected unix socket whose peer is in `watch`'s network namespace:
    /// that socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_peer: Option<LocalPeer>,
}

/// The other end of a connection inside the same host and network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalPeer {
    /// Its socket inode.
    pub inode: u64,
    /// The process holding it: the lowest pid other than this socket's own process, or that
    /// process when no other holds it (`None` if none is visible).
    pub pid: Option<u32>,
    /// Bytes in its receive queue, not yet read by its owner (`rx_queue` of `/proc/net/tcp`;
    /// for unix sockets `sock_diag`'s `UNIX_DIAG_RQLEN`, which for a datagram socket is the
    /// length of the first datagram queued, from any sender).
    pub unread_bytes: u32,
}

/// When data last went each way on a TCP connection, from its `tcp_info` (`sock_diag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TcpTiming {
    /// Time since data was last sent, ms (`tcpi_last_data_sent`).
    pub last_data_sent_ms: u32,
    /// Time since data was last received, ms (`tcpi_last_data_recv`).
    pub last_data_recv_ms: u32,
    /// Data segments received (`tcpi_data_segs_in`); `None` before Linux 4.6.
    pub data_segs_in: Option<u32>,
    /// Data segments sent (`tcpi_data_segs_out`); `None` before Linux 4.6.
    pub data_segs_out: Option<u32>,
}

/// How much was read about an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Detail {
    /// Everything: a pipe's other holders, an epoll instance's watched fds.
    Full,
    /// The fd alone (an epoll instance's watched fds are described so).
    Brief,
}

/// Everything known about one fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FdDescription {
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
    /// For signalfd: the signal mask.
    pub sigmask: Option<u64>,
    /// How much was read.
    pub detail: Detail,
}

impl FdDescription {
    /// An fd of this type and `readlink` target with nothing else known about it yet.
    pub(crate) fn new(fd: i32, fd_type: FdType, target: String) -> Self {
        Self {
            fd,
            fd_type,
            target,
            access: None,
            socket: None,
            pipe_peers: Vec::new(),
            epoll_targets: Vec::new(),
            eventfd_count: None,
            timer: None,
            sigmask: None,
            detail: Detail::Full,
        }
    }

    /// The socket's local address.
    pub(crate) fn local(&self) -> Option<&str> {
        self.socket.as_ref().map(|s| s.local.as_str())
    }

    /// The socket's peer address.
    pub(crate) fn peer(&self) -> Option<&str> {
        self.socket.as_ref().and_then(|s| s.peer.as_deref())
    }

    /// A terminal: reading it waits for a person to type.
    pub(crate) fn is_terminal(&self) -> bool {
        let t = &self.target;
        self.fd_type == FdType::File
            && (t.starts_with("/dev/pts/") || t.starts_with("/dev/tty") || t == "/dev/console")
    }

    /// The other processes at the other end: of a local socket, the holder of the socket at
    /// the other end; of a pipe or FIFO, the holders of the opposite end (the writers of a
    /// read end, the readers of a write end; holders of unknown access count). Lowest pid
    /// first, each once; empty when none is known.
    pub(crate) fn other_end_pids(&self, own_pid: u32) -> Vec<u32> {
        let mut pids: Vec<u32> = match (&self.socket, self.access) {
            (Some(socket), _) => socket.local_peer.and_then(|p| p.pid).into_iter().collect(),
            (None, Some(own)) => self
                .pipe_peers
                .iter()
                .filter(|h| {
                    h.access
                        .is_none_or(|a| (own.reads() && a.writes()) || (own.writes() && a.reads()))
                })
                .map(|h| h.pid)
                .collect(),
            (None, None) => Vec::new(),
        };
        pids.retain(|&p| p != own_pid);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether something outside the process could make it ready: always for a plain fd; for
    /// an epoll fd, whether it watches anything at all.
    pub(crate) fn reachable_from_outside(&self) -> bool {
        self.fd_type != FdType::Epoll || !self.epoll_targets.is_empty()
    }
}
