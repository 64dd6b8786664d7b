//! A TCP socket's own timing, from the kernel's `sock_diag` netlink interface.
//!
//! A client blocked in `recv` is either waiting for the answer to a request it sent (a
//! stall when none comes) or waiting for the next message of a stream whose last event was a
//! message received (a pub/sub subscriber, a blocking queue pop, a keep-alive connection:
//! idle). `/proc/net/tcp` cannot tell these apart; the socket's `tcp_info` can: how long ago
//! data was last sent and received, and how many data segments went each way. It is read
//! with one `SOCK_DIAG_BY_FAMILY` dump per address family asking for `INET_DIAG_INFO`
//! (`include/uapi/linux/inet_diag.h`), in the network namespace of the caller only: other
//! namespaces keep no timing (entering them would mean `setns`).
//!
//! The dump is parsed by [`parse_dump`], a pure function over the netlink bytes. The
//! netlink plumbing ([`run_dump`], [`parse_dump`], [`attributes`]) is shared with
//! [`super::unix_diag`], which asks the same interface about unix sockets.

use std::{collections::HashMap, io, mem::size_of};

use crate::model::TcpTiming;

/// `SOCK_DIAG_BY_FAMILY` (`include/uapi/linux/sock_diag.h`).
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`, `NLMSG_DONE` (`include/uapi/linux/netlink.h`).
const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_REQUEST_FLAGS: u16 = 0x1 | 0x300;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HEADER_LEN: usize = 16;
/// `sizeof(struct inet_diag_msg)`; `idiag_inode` is at 68.
const INET_DIAG_MSG_LEN: usize = 72;
const INODE_OFFSET: usize = 68;
/// Offsets in `struct tcp_info` (`include/uapi/linux/tcp.h`, checked with `offsetof`):
/// `tcpi_last_data_sent`, `tcpi_last_data_recv` (ms ago), `tcpi_data_segs_in`,
/// `tcpi_data_segs_out` (since Linux 4.6; shorter structs leave them out).
const LAST_DATA_SENT_OFFSET: usize = 44;
const LAST_DATA_RECV_OFFSET: usize = 52;
const DATA_SEGS_IN_OFFSET: usize = 152;
const DATA_SEGS_OUT_OFFSET: usize = 156;

/// `tcp_info` timing of every TCP socket (IPv4 and IPv6) of the caller's network namespace,
/// by inode.
pub(crate) fn tcp_timings() -> io::Result<HashMap<u64, TcpTiming>> {
    let mut timings = HashMap::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        timings.extend(dump_family(family as u8)?);
    }
    Ok(timings)
}

/// The dump request: `nlmsghdr` + `inet_diag_req_v2` for TCP sockets of `family` in every
/// state, with `INET_DIAG_INFO`.
fn dump_request(family: u8) -> Vec<u8> {
    let mut req = vec![
        family,
        libc::IPPROTO_TCP as u8,
        1 << (INET_DIAG_INFO - 1),
        0,
    ];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    req.resize(56, 0); // inet_diag_sockid: zero, ignored by a dump
    dump_request_message(&req)
}

fn dump_family(family: u8) -> io::Result<Vec<(u64, TcpTiming)>> {
    run_dump(&dump_request(family), parse_diag_msg)
}

/// A `SOCK_DIAG_BY_FAMILY` dump request: the netlink header before `request` (an
/// `inet_diag_req_v2`, a `unix_diag_req`...).
pub(crate) fn dump_request_message(request: &[u8]) -> Vec<u8> {
    let len = NLMSG_HEADER_LEN + request.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&DUMP_REQUEST_FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(request);
    msg
}

/// Sends the dump request `request` on a fresh `NETLINK_SOCK_DIAG` socket and parses every
/// answering message's payload with `parse_msg` (see [`parse_dump`]).
pub(crate) fn run_dump<T>(
    request: &[u8],
    parse_msg: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<Vec<T>> {
    let mut found = Vec::new();
    receive_dump(request, |datagram| {
        let (items, end) = parse_dump(datagram, &parse_msg);
        found.extend(items);
        end
    })?;
    Ok(found)
}

/// Sends `request` and hands each datagram of the answer to `datagram`, which says whether
/// the dump goes on; an `NLMSG_ERROR` becomes the error.
pub(crate) fn receive_dump(
    request: &[u8],
    mut datagram: impl FnMut(&[u8]) -> DumpEnd,
) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: the buffer is valid for its length; a NULL address sends to the kernel.
    let sent = unsafe { libc::send(raw, request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        match datagram(&buf[..n as usize]) {
            DumpEnd::More => {}
            DumpEnd::Done => return Ok(()),
            DumpEnd::Error(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Whether a dump continues after a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DumpEnd {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` was seen.
    Done,
    /// `NLMSG_ERROR` with this errno (positive).
    Error(i32),
}

/// The sockets in one datagram of a `SOCK_DIAG_BY_FAMILY` dump (several netlink messages),
/// each message's payload parsed by `parse_msg`, and whether the dump ended. Messages cut
/// short are skipped, never read past.
pub(crate) fn parse_dump<T>(
    datagram: &[u8],
    parse_msg: impl Fn(&[u8]) -> Option<T>,
) -> (Vec<T>, DumpEnd) {
    let mut found = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HEADER_LEN {
        let len = u32_at(rest, 0).unwrap_or(0) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HEADER_LEN || len > rest.len() {
            break;
        }
        let payload = &rest[NLMSG_HEADER_LEN..len];
        match kind {
            NLMSG_DONE => return (found, DumpEnd::Done),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).map_or(0, |e| e as i32);
                return (found, DumpEnd::Error(errno.saturating_neg()));
            }
            SOCK_DIAG_BY_FAMILY => found.extend(parse_msg(payload)),
            _ => {}
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    (found, DumpEnd::More)
}

/// One `inet_diag_msg` with its attributes: the socket's inode and `tcp_info` timing.
fn parse_diag_msg(payload: &[u8]) -> Option<(u64, TcpTiming)> {
    let inode = u32_at(payload, INODE_OFFSET)?;
    let (_, info) =
        attributes(payload.get(INET_DIAG_MSG_LEN..)?).find(|&(kind, _)| kind == INET_DIAG_INFO)?;
    Some((u64::from(inode), parse_tcp_info(info)?))
}

/// The netlink attributes (`struct nlattr`: length, type, value) in `bytes`, as (type,
/// value); stops at the first one cut short.
pub(crate) fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]);
        if len < 4 || len > bytes.len() {
            return None;
        }
        let value = &bytes[4..len];
        bytes = &bytes[align4(len).min(bytes.len())..];
        Some((kind, value))
    })
}

/// The timing fields of a `struct tcp_info`; segment counts are `None` on kernels whose
/// struct ends before them.
fn parse_tcp_info(info: &[u8]) -> Option<TcpTiming> {
    Some(TcpTiming {
        last_data_sent_ms: u32_at(info, LAST_DATA_SENT_OFFSET)?,
        last_data_recv_ms: u32_at(info, LAST_DATA_RECV_OFFSET)?,
        data_segs_in: u32_at(info, DATA_SEGS_IN_OFFSET),
        data_segs_out: u32_at(info, DATA_SEGS_OUT_OFFSET),
    })
}

/// The native-endian `u32` at `offset`, if `bytes` reaches that far.
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset + size_of::<u32>())?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

/// Netlink messages and attributes are padded to 4 bytes.
pub(crate) fn align4(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
pub(super) mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        os::unix::fs::MetadataExt,
    };

    use super::*;

    /// A `SOCK_DIAG_BY_FAMILY` message for `inode` with a `tcp_info` attribute of
    /// `info_len` bytes holding the given fields.
    fn diag_message(
        inode: u32,
        info_len: usize,
        sent: u32,
        recv: u32,
        segs: (u32, u32),
    ) -> Vec<u8> {
        let mut info = vec![0u8; info_len];
        for (offset, value) in [
            (LAST_DATA_SENT_OFFSET, sent),
            (LAST_DATA_RECV_OFFSET, recv),
            (DATA_SEGS_IN_OFFSET, segs.0),
            (DATA_SEGS_OUT_OFFSET, segs.1),
        ] {
            if offset + 4 <= info_len {
                info[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
            }
        }
        let mut payload = vec![0u8; INET_DIAG_MSG_LEN];
        payload[INODE_OFFSET..INODE_OFFSET + 4].copy_from_slice(&inode.to_ne_bytes());
        payload.extend_from_slice(&((4 + info_len) as u16).to_ne_bytes());
        payload.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        payload.extend_from_slice(&info);
        payload.resize(align4(payload.len()), 0);
        netlink(SOCK_DIAG_BY_FAMILY, &payload)
    }

    /// A netlink message of type `kind` around `payload`.
    pub(crate) fn netlink(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HEADER_LEN + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(payload);
        msg
    }

    /// Check that a datagram of two sockets and DONE gives both timings, that a short
    /// (pre-4.6) `tcp_info` has no segment counts, and that errors and truncation are safe.
    #[test]
    fn dump_bytes() {
        let mut datagram = diag_message(81234, 232, 1500, 20, (3, 1));
        datagram.extend(diag_message(81235, 104, 7, 9, (0, 0)));
        datagram.extend(netlink(NLMSG_DONE, &[0; 4]));
        let (found, end) = parse_dump(&datagram, parse_diag_msg);
        assert_eq!(end, DumpEnd::Done);
        assert_eq!(
            found,
            vec![
                (
                    81234,
                    TcpTiming {
                        last_data_sent_ms: 1500,
                        last_data_recv_ms: 20,
                        data_segs_in: Some(3),
                        data_segs_out: Some(1),
                    }
                ),
                (
                    81235,
                    TcpTiming {
                        last_data_sent_ms: 7,
                        last_data_recv_ms: 9,
                        data_segs_in: None,
                        data_segs_out: None,
                    }
                ),
            ]
        );
        let error = netlink(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_dump(&error, parse_diag_msg).1,
            DumpEnd::Error(libc::EPERM)
        );
        let cut = &diag_message(1, 232, 1, 2, (0, 0))[..100];
        assert_eq!(parse_dump(cut, parse_diag_msg), (Vec::new(), DumpEnd::More));
    }

    /// Check on a live loopback connection that the dump finds our socket by inode and that
    /// its timing follows the traffic: after a request sent and an answer received, data
    /// went both ways.
    #[test]
    fn live_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let timings = tcp_timings().unwrap();
        let timing = timings.get(&inode).expect("our socket in the dump");
        assert!(timing.data_segs_in.is_none_or(|n| n >= 1), "{timing:?}");
        assert!(timing.data_segs_out.is_none_or(|n| n >= 1), "{timing:?}");
        assert!(timing.last_data_recv_ms < 60_000, "{timing:?}");
    }
}
