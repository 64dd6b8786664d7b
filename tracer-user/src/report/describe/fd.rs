//! File descriptors in words: `TCP 127.0.0.1:41234 -> 127.0.0.1:5432 (ESTABLISHED)`,
//! `pipe:[1234], write end held by 4711 (writer) fd 5`, `epoll on 3: eventfd (count 0)`,
//! `timerfd CLOCK_MONOTONIC, next in 0.1 s`.

use crate::model::{
    Detail, EpollTarget, FdAccess, FdDescription, FdHolder, FdType, LocalPeer, PeerRef, PipeWriter,
    SocketInfo, SocketProtocol, TimerFdState, Verdict, WatchedFd,
};

/// Why a pipe read with no visible write end is not called a stall.
pub(crate) const WRITER_NOT_VISIBLE: &str = "no write end is visible in /proc (held in another \
     PID namespace, or an fd in flight in a unix socket message); with none at all the read \
     would have returned end-of-file, so the writer exists but cannot be seen";

/// Why reading a pipe only one's own single thread could write is a stall.
pub(crate) const READS_OWN_PIPE: &str = "the only write end is held by this process, which has \
     no other thread to write to it: nothing can ever write (the write end was not closed)";

/// The writer of a pipe: `pid 4711 (tail)`.
pub(crate) fn writer_phrase(w: &PipeWriter) -> String {
    match &w.comm {
        Some(comm) => format!("pid {} ({comm})", w.pid),
        None => format!("pid {}", w.pid),
    }
}

/// Why a pipe reader is stuck behind its writer.
pub(crate) fn writer_blocked_phrase(w: &PipeWriter) -> String {
    format!(
        "its writer {} has every thread stuck (indefinite futex waits or uninterruptible \
         sleep), so no input will come",
        writer_phrase(w)
    )
}

/// An unanswered request: `request sent 9.1 s ago to 127.0.0.1:5432, nothing received
/// since`.
pub(crate) fn request_unanswered_phrase(sent_ms_ago: u32, socket: Option<&SocketInfo>) -> String {
    let to = to_peer(socket);
    let mut out = format!(
        "request sent {:.1} s ago{to}, nothing received since",
        f64::from(sent_ms_ago) / 1e3
    );
    if let Some(peer) = socket.and_then(|s| s.local_peer) {
        out.push_str(&match peer.unread_bytes {
            0 => format!(
                "; {} read everything sent and has not answered",
                local_peer_name(peer)
            ),
            n => format!("; {}", not_read_phrase(peer, n)),
        });
    }
    out
}

/// `pid 4711`, or `the local peer` when no process holds it visibly.
fn local_peer_name(peer: LocalPeer) -> String {
    peer.pid
        .map_or_else(|| "the local peer".to_owned(), |pid| format!("pid {pid}"))
}

/// `pid 4711 has not read it (12 bytes unread in its receive queue)`.
fn not_read_phrase(peer: LocalPeer, unread_bytes: u32) -> String {
    format!(
        "{} has not read it ({unread_bytes} bytes unread in its receive queue)",
        local_peer_name(peer)
    )
}

/// ` to /run/x.sock`, or nothing when the peer has no name.
fn to_peer(socket: Option<&SocketInfo>) -> String {
    socket
        .and_then(|s| s.peer.as_deref())
        .map(|p| format!(" to {p}"))
        .unwrap_or_default()
}

/// A unix request its local peer has not read: `request sent to /run/x.sock, nothing
/// received since; pid 4711 has not read it (12 bytes unread in its receive queue)`.
pub(crate) fn request_unread_phrase(unread_bytes: u32, socket: Option<&SocketInfo>) -> String {
    let peer = socket.and_then(|s| s.local_peer).unwrap_or(LocalPeer {
        inode: 0,
        pid: None,
        unread_bytes,
    });
    format!(
        "request sent{}, nothing received since; {}",
        to_peer(socket),
        not_read_phrase(peer, unread_bytes)
    )
}

/// A unix connection whose local peer read everything sent on it.
pub(crate) fn peer_read_everything_phrase(socket: Option<&SocketInfo>) -> String {
    let server = socket
        .and_then(|s| s.local_peer)
        .map_or_else(|| "the local peer".to_owned(), local_peer_name);
    format!(
        "{server} read everything sent on this connection{}: waiting for it to send (an answer \
         it is working on, or the next message)",
        to_peer(socket)
    )
}

/// The process at the other end: `pid 4711`, `pid 4711 (thread 4712)`.
fn peer_phrase(peer: &PeerRef) -> String {
    match peer.tid {
        Some(tid) if tid != peer.pid => format!("pid {} (thread {tid})", peer.pid),
        _ => format!("pid {}", peer.pid),
    }
}

/// Why a wait on another process is stuck behind it: `pid 4711 at the other end is blocked
/// itself (deadlock)`.
pub(crate) fn peer_blocked_phrase(peer: &PeerRef, verdict: Verdict) -> String {
    format!(
        "{} at the other end is blocked itself ({}), so no answer or input will come from it",
        peer_phrase(peer),
        verdict.name()
    )
}

/// A request the peer read and holds: `the request (sent 3.0 s ago) was read by pid 4711,
/// which has no blocked thread: ...`.
pub(crate) fn request_held_phrase(peer: &PeerRef, sent_ms_ago: Option<u32>) -> String {
    let request = match sent_ms_ago {
        Some(ms) => format!("the request (sent {:.1} s ago)", f64::from(ms) / 1e3),
        None => "everything sent".to_owned(),
    };
    format!(
        "{request} was read by {}, which has no blocked problem thread: it holds it, as a \
         blocking queue pop or a long poll does, and answers when it has something",
        peer_phrase(peer)
    )
}

/// A connection whose last event was a message received.
pub(crate) fn last_message_phrase(received_ms_ago: u32) -> String {
    format!(
        "the last thing on this connection was a message received {:.1} s ago: waiting for \
         the next (a subscriber, a blocking queue pop, a keep-alive connection)",
        f64::from(received_ms_ago) / 1e3
    )
}

/// Holders listed by name in a summary before "and N more".
const SUMMARY_HOLDERS: usize = 4;

/// One line saying what an fd is.
pub(crate) fn fd_phrase(d: &FdDescription) -> String {
    let full = d.detail == Detail::Full;
    match d.fd_type {
        FdType::Socket => match &d.socket {
            Some(s) => socket_phrase(s),
            None => format!("{} (not TCP, UDP or unix)", d.target),
        },
        FdType::Pipe if full => pipe_phrase(&d.target, d.access, &d.pipe_peers),
        FdType::Fifo if full => pipe_phrase(&format!("fifo {}", d.target), d.access, &d.pipe_peers),
        FdType::Fifo => format!("fifo {}", d.target),
        FdType::EventFd => match d.eventfd_count {
            Some(count) => format!("eventfd (count {count})"),
            None => "eventfd".into(),
        },
        FdType::TimerFd => match &d.timer {
            Some(t) => timer_phrase(t),
            None => "timerfd".into(),
        },
        FdType::SignalFd => match d.sigmask {
            Some(mask) => format!("signalfd for {}", signal_names(mask)),
            None => "signalfd".into(),
        },
        FdType::Epoll if full => epoll_phrase(&d.epoll_targets),
        FdType::Epoll => format!("epoll ({} fds)", d.epoll_targets.len()),
        FdType::Pipe | FdType::File | FdType::Other => d.target.clone(),
    }
}

/// `TCP 127.0.0.1:41234 -> 127.0.0.1:5432 (ESTABLISHED)`, `UDP 0.0.0.0:53`,
/// `unix stream /run/x.sock (CONNECTED)`, `unix stream (unnamed) -> /run/x.sock (CONNECTED)`.
pub(crate) fn socket_phrase(s: &SocketInfo) -> String {
    let name = match s.protocol {
        SocketProtocol::Tcp | SocketProtocol::Tcp6 => "TCP",
        SocketProtocol::Udp | SocketProtocol::Udp6 => "UDP",
        SocketProtocol::Unix => "unix",
    };
    if let Some((kind, state)) = &s.unix_kind {
        let local = if s.local.is_empty() {
            "(unnamed)"
        } else {
            &s.local
        };
        let to = s
            .peer
            .as_ref()
            .map(|p| format!(" -> {p}"))
            .unwrap_or_default();
        return format!("{name} {kind} {local}{to} ({state})");
    }
    let mut out = format!("{name} {}", s.local);
    if let Some(peer) = &s.peer {
        out.push_str(" -> ");
        out.push_str(peer);
    }
    if let Some(state) = &s.tcp_state {
        out.push_str(&format!(" ({state})"));
    }
    out
}

/// A pipe or FIFO with who holds its other end.
fn pipe_phrase(name: &str, own: Option<FdAccess>, peers: &[FdHolder]) -> String {
    let holder_list = |holders: &[&FdHolder]| {
        let mut parts: Vec<String> = holders
            .iter()
            .take(SUMMARY_HOLDERS)
            .map(|h| match &h.comm {
                Some(comm) => format!("{} ({comm}) fd {}", h.pid, h.fd),
                None => format!("{} fd {}", h.pid, h.fd),
            })
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

fn epoll_phrase(targets: &[EpollTarget]) -> String {
    if targets.is_empty() {
        return "epoll on nothing".into();
    }
    let parts: Vec<String> = targets
        .iter()
        .map(|t| format!("{}: {}", t.fd, watched_phrase(&t.watched)))
        .collect();
    format!("epoll on {}", parts.join(", "))
}

fn watched_phrase(w: &WatchedFd) -> String {
    match w {
        WatchedFd::Described(d) => fd_phrase(d),
        WatchedFd::Reused { watched_inode } => {
            format!("(fd reused; watched inode {watched_inode})")
        }
        WatchedFd::Closed | WatchedFd::NotDescribed => "(closed)".into(),
    }
}

fn timer_phrase(t: &TimerFdState) -> String {
    let mut s = format!("timerfd {}", clock_name(t.clock_id));
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

/// The name of a POSIX clock id.
pub(crate) fn clock_name(id: i64) -> String {
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
mod tests {
    use super::*;

    fn socket(protocol: SocketProtocol, peer: Option<&str>) -> SocketInfo {
        SocketInfo {
            protocol,
            inode: 1,
            local: "127.0.0.1:41234".into(),
            peer: peer.map(str::to_owned),
            tcp_state: Some("ESTABLISHED".into()),
            unix_kind: None,
            tcp_timing: None,
            local_peer: None,
        }
    }

    /// Check that sockets are summarized as protocol, addresses and state.
    #[test]
    fn summaries() {
        let tcp = socket(SocketProtocol::Tcp, Some("127.0.0.1:5432"));
        assert_eq!(
            socket_phrase(&tcp),
            "TCP 127.0.0.1:41234 -> 127.0.0.1:5432 (ESTABLISHED)"
        );
        let unix = SocketInfo {
            protocol: SocketProtocol::Unix,
            inode: 2,
            local: String::new(),
            peer: None,
            tcp_state: None,
            unix_kind: Some(("stream".into(), "CONNECTED".into())),
            tcp_timing: None,
            local_peer: None,
        };
        assert_eq!(socket_phrase(&unix), "unix stream (unnamed) (CONNECTED)");
        let client = SocketInfo {
            peer: Some("/run/x.sock".into()),
            ..unix
        };
        assert_eq!(
            socket_phrase(&client),
            "unix stream (unnamed) -> /run/x.sock (CONNECTED)"
        );
    }

    /// Check that an unanswered request names the peer address and, for a loopback peer,
    /// whether its process has read the request.
    #[test]
    fn unanswered_request() {
        let mut s = socket(SocketProtocol::Tcp, Some("127.0.0.1:5432"));
        assert_eq!(
            request_unanswered_phrase(9_100, Some(&s)),
            "request sent 9.1 s ago to 127.0.0.1:5432, nothing received since"
        );
        s.local_peer = Some(LocalPeer {
            inode: 7,
            pid: Some(4711),
            unread_bytes: 12,
        });
        assert_eq!(
            request_unanswered_phrase(9_100, Some(&s)),
            "request sent 9.1 s ago to 127.0.0.1:5432, nothing received since; pid 4711 has \
             not read it (12 bytes unread in its receive queue)"
        );
        s.local_peer = Some(LocalPeer {
            inode: 7,
            pid: None,
            unread_bytes: 0,
        });
        assert!(
            request_unanswered_phrase(9_100, Some(&s))
                .ends_with("; the local peer read everything sent and has not answered")
        );
    }

    /// Check that a unix request names the server's path and process, and says whether it
    /// read the request.
    #[test]
    fn unix_request() {
        let mut s = socket(SocketProtocol::Unix, Some("/run/x.sock"));
        s.local_peer = Some(LocalPeer {
            inode: 7,
            pid: Some(4711),
            unread_bytes: 12,
        });
        assert_eq!(
            request_unread_phrase(12, Some(&s)),
            "request sent to /run/x.sock, nothing received since; pid 4711 has not read it (12 \
             bytes unread in its receive queue)"
        );
        assert_eq!(
            peer_read_everything_phrase(Some(&s)),
            "pid 4711 read everything sent on this connection to /run/x.sock: waiting for it to \
             send (an answer it is working on, or the next message)"
        );
    }

    /// Check that pipe holders whose name could not be read are listed without one.
    #[test]
    fn pipe_holders_without_names() {
        let holder = |pid: u32, comm: Option<&str>| FdHolder {
            pid,
            comm: comm.map(str::to_owned),
            fd: 5,
            access: Some(FdAccess::Write),
            threads: Vec::new(),
        };
        assert_eq!(
            pipe_phrase(
                "pipe:[9]",
                Some(FdAccess::Read),
                &[holder(4711, Some("writer")), holder(4712, None)]
            ),
            "pipe:[9], write end held by 4711 (writer) fd 5, 4712 fd 5"
        );
    }

    /// Check durations and signal masks in words.
    #[test]
    fn secs_and_signals() {
        assert_eq!(format_secs(100_000_000), "0.1 s");
        assert_eq!(format_secs(98_929_393), "0.099 s");
        assert_eq!(format_secs(12_000_000_000), "12 s");
        assert_eq!(signal_names(1 << 1 | 1 << 14), "SIGINT, SIGTERM");
        assert_eq!(signal_names(0), "no signals");
        assert_eq!(clock_name(1), "CLOCK_MONOTONIC");
    }
}
