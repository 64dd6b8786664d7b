//! TCP clients in `recv`: an unanswered request, or a stream waiting for its next message?
//!
//! A thread blocked receiving on a TCP connection is a stall when it sent something and
//! nothing came back since (the request the peer never answered), and idle when the last
//! thing on the connection was a message received: a pub/sub subscriber, a blocking queue
//! pop, a keep-alive connection waiting for the next. The socket's own `tcp_info`
//! (`model::TcpTiming`, read with the fd) says which came last. Where it was not read (another
//! network namespace, an old recording, a kernel without segment counts) or nothing went
//! either way yet, the ordinary rule stands.
//!
//! Unix sockets keep no such timing, but the socket at the other end of a unix stream
//! connection is known with its receive queue (`model::LocalPeer`, from `sock_diag`): bytes
//! still there are what this thread sent and the peer has not read (a request it has not
//! even looked at: a stall naming that process), and an empty queue means the peer read
//! everything sent (it is working on the answer, or this is a stream of messages from it:
//! idle). Datagram sockets are left to the ordinary rule: the peer's queue holds every
//! sender's datagrams and the kernel reports the first one's length only.
//!
//! Limitation: an answer that stops half-way looks like a received message; a unix peer that
//! read the request and then got stuck is idle here (its own threads are judged on their own).

use crate::model::{BlockedThread, FdType, Reason, SocketInfo, SocketProtocol, Verdict, WaitKind};

/// The verdict of a thread receiving on a TCP socket whose timing is known, or on a unix
/// stream socket whose peer is known; `None` otherwise.
pub(crate) fn socket_recv_verdict(thread: &BlockedThread) -> Option<(Verdict, Reason)> {
    let call = thread.call?;
    let fd = thread.fd.as_ref()?;
    if !matches!(call.kind, WaitKind::Read | WaitKind::Recv) || fd.fd_type != FdType::Socket {
        return None;
    }
    let socket = fd.socket.as_ref()?;
    if socket.protocol == SocketProtocol::Unix {
        return unix_recv_verdict(socket);
    }
    let timing = socket.tcp_timing?;
    let (segs_in, segs_out) = (timing.data_segs_in?, timing.data_segs_out?);
    let received_last = segs_out == 0 || timing.last_data_recv_ms <= timing.last_data_sent_ms;
    if segs_in > 0 && received_last {
        Some((
            Verdict::Idle,
            Reason::LastMessageReceived {
                received_ms_ago: timing.last_data_recv_ms,
            },
        ))
    } else if segs_out > 0 {
        Some((
            Verdict::Stall,
            Reason::RequestUnanswered {
                sent_ms_ago: timing.last_data_sent_ms,
            },
        ))
    } else {
        None
    }
}

/// A unix stream or seqpacket connection with a known peer: a stall while the peer has not
/// read what was sent, idle once it has.
fn unix_recv_verdict(socket: &SocketInfo) -> Option<(Verdict, Reason)> {
    let is_connection = socket
        .unix_kind
        .as_ref()
        .is_some_and(|(kind, _)| kind == "stream" || kind == "seqpacket");
    let peer = socket.local_peer.filter(|_| is_connection)?;
    Some(match peer.unread_bytes {
        0 => (Verdict::Idle, Reason::PeerReadEverything),
        unread_bytes => (Verdict::Stall, Reason::RequestUnread { unread_bytes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{LocalPeer, SyscallCall, TcpTiming},
        stall::fixtures,
    };

    fn client(timing: Option<TcpTiming>) -> BlockedThread {
        let mut t = fixtures::futex_thread(1, 2, "client", 9_000_000_000);
        t.call = Some(SyscallCall {
            nr: 45,
            kind: WaitKind::Recv,
            resource: 5,
            detail: 0,
            timeout: 0,
        });
        let mut fd = fixtures::tcp_socket(5, "127.0.0.1:41234", "127.0.0.1:5432");
        if let Some(s) = fd.socket.as_mut() {
            s.tcp_timing = timing;
        }
        t.fd = Some(fd);
        t
    }

    fn timing(sent: u32, recv: u32, segs_in: u32, segs_out: u32) -> Option<TcpTiming> {
        Some(TcpTiming {
            last_data_sent_ms: sent,
            last_data_recv_ms: recv,
            data_segs_in: Some(segs_in),
            data_segs_out: Some(segs_out),
        })
    }

    /// Check that a request sent after the last message received is an unanswered request
    /// (stall), and a message received after the last request sent (or with nothing ever
    /// sent) is idle.
    #[test]
    fn last_direction_decides() {
        assert_eq!(
            socket_recv_verdict(&client(timing(9_000, 30_000, 4, 5))),
            Some((
                Verdict::Stall,
                Reason::RequestUnanswered { sent_ms_ago: 9_000 }
            ))
        );
        assert_eq!(
            socket_recv_verdict(&client(timing(9_000, 0, 0, 1))),
            Some((
                Verdict::Stall,
                Reason::RequestUnanswered { sent_ms_ago: 9_000 }
            ))
        );
        assert_eq!(
            socket_recv_verdict(&client(timing(30_000, 8_000, 6, 1))),
            Some((
                Verdict::Idle,
                Reason::LastMessageReceived {
                    received_ms_ago: 8_000
                }
            ))
        );
        // A subscriber that never sent anything (tcpi_last_data_sent counts from boot).
        let verdict = socket_recv_verdict(&client(timing(u32::MAX, 8_000, 1, 0)));
        assert_eq!(verdict.map(|v| v.0), Some(Verdict::Idle));
    }

    /// Check that without timing, segment counts, or any data either way, the ordinary rule
    /// stands.
    #[test]
    fn unknown_timing_keeps_the_ordinary_rule() {
        assert_eq!(socket_recv_verdict(&client(None)), None);
        assert_eq!(socket_recv_verdict(&client(timing(5, 5, 0, 0))), None);
        let old_kernel = TcpTiming {
            data_segs_in: None,
            data_segs_out: None,
            ..timing(9_000, 1, 0, 0).unwrap()
        };
        assert_eq!(socket_recv_verdict(&client(Some(old_kernel))), None);
    }

    /// A client blocked in recv on a unix socket of `kind` whose peer has `unread` bytes
    /// unread (no peer known for `None`).
    fn unix_client(kind: &str, unread: Option<u32>) -> BlockedThread {
        let mut t = client(None);
        if let Some(s) = t.fd.as_mut().and_then(|fd| fd.socket.as_mut()) {
            s.protocol = SocketProtocol::Unix;
            s.local = String::new();
            s.peer = Some("/run/server.sock".into());
            s.tcp_state = None;
            s.unix_kind = Some((kind.into(), "CONNECTED".into()));
            s.local_peer = unread.map(|unread_bytes| LocalPeer {
                inode: 7,
                pid: Some(4711),
                unread_bytes,
            });
        }
        t
    }

    /// Check that a unix stream client whose request sits unread in the peer's queue is a
    /// stall, one whose peer read everything is idle, and that a datagram socket or an
    /// unknown peer keeps the ordinary rule.
    #[test]
    fn unix_peer_queue_decides() {
        assert_eq!(
            socket_recv_verdict(&unix_client("stream", Some(12))),
            Some((Verdict::Stall, Reason::RequestUnread { unread_bytes: 12 }))
        );
        assert_eq!(
            socket_recv_verdict(&unix_client("seqpacket", Some(0))),
            Some((Verdict::Idle, Reason::PeerReadEverything))
        );
        assert_eq!(socket_recv_verdict(&unix_client("dgram", Some(40))), None);
        assert_eq!(socket_recv_verdict(&unix_client("stream", None)), None);
    }
}
