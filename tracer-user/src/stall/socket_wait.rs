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
//! Limitation: an answer that stops half-way looks like a received message.

use crate::model::{BlockedThread, FdType, Reason, Verdict, WaitKind};

/// The verdict of a thread receiving on a TCP socket whose timing is known, or `None`.
pub(crate) fn socket_recv_verdict(thread: &BlockedThread) -> Option<(Verdict, Reason)> {
    let call = thread.call?;
    let fd = thread.fd.as_ref()?;
    if !matches!(call.kind, WaitKind::Read | WaitKind::Recv) || fd.fd_type != FdType::Socket {
        return None;
    }
    let timing = fd.socket.as_ref()?.tcp_timing?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{SyscallCall, TcpTiming},
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
}
