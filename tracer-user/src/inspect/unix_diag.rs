//! The other end of a unix socket, and what it has not read, from `sock_diag` netlink.
//!
//! A thread blocked in `recv` on a unix stream socket waits for the process at the other end.
//! `/proc/net/unix` says nothing about that end: no peer, no queue lengths. The kernel's
//! `sock_diag` interface does: one `SOCK_DIAG_BY_FAMILY` dump for `AF_UNIX`
//! (`struct unix_diag_req`, `include/uapi/linux/unix_diag.h`) asking
//! `UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN` gives, for every unix socket of the
//! caller's network namespace, its bound name, the inode of its peer and its queue lengths.
//! The peer's inode leads to the process holding it (the fd holder index of
//! [`super::fds`]); the peer's receive queue says whether what this thread sent (its request)
//! is still unread there.
//!
//! What `UNIX_DIAG_RQLEN` (`struct unix_diag_rqlen { udiag_rqueue, udiag_wqueue }`) holds,
//! from `sk_diag_show_rqlen` in `net/unix/diag.c` and `unix_inq_len` / `unix_outq_len` in
//! `net/unix/af_unix.c`:
//!
//! - a listening socket: `udiag_rqueue` is the number of connections waiting to be accepted
//!   and `udiag_wqueue` the backlog limit; no bytes at all;
//! - a connected stream or seqpacket socket: `udiag_rqueue` is the bytes in its receive
//!   queue not yet read by its owner (what the peer sent and nobody read), `udiag_wqueue`
//!   the memory (`sk_wmem_alloc`, buffer overhead included, so not bytes of data) of what it
//!   sent that its peer has not read yet;
//! - a datagram socket: `udiag_rqueue` is the length of the *first* datagram queued only
//!   (from any sender), not the queue's total.
//!
//! So [`UnixSocket::unread_bytes`] is kept for listeners as `None`, and is exact for stream
//! and seqpacket sockets only; callers judge datagram sockets by the socket type.
//!
//! An accepted socket carries the name of the listener it came from (`unix_stream_connect`
//! copies the address), so the peer of a client connected to `/run/x.sock` is named
//! `/run/x.sock`: the server's path.
//!
//! Like the TCP timing of [`super::sock_diag`], the dump sees `watch`'s own network namespace
//! only. A peer in another namespace (a path-bound socket connected across namespaces) is
//! named by inode, but its queue is not in the dump.
//!
//! The dump is parsed by [`parse_unix_msg`], a pure function over one message's bytes.

use std::{collections::HashMap, io};

use super::sock_diag::{attributes, dump_request_message, run_dump, u32_at};

/// `UDIAG_SHOW_NAME`, `UDIAG_SHOW_PEER`, `UDIAG_SHOW_RQLEN`.
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
/// Attribute types (`enum` in `unix_diag.h`: `UNIX_DIAG_NAME` is 0).
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `sizeof(struct unix_diag_msg)`: family, type, state, pad, `udiag_ino` at 4, cookie.
const UNIX_DIAG_MSG_LEN: usize = 16;
const TYPE_OFFSET: usize = 1;
const STATE_OFFSET: usize = 2;
const INODE_OFFSET: usize = 4;
/// `TCP_LISTEN`: unix sockets use the TCP state numbers.
const TCP_LISTEN: u8 = 10;

/// What `sock_diag` says about one unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixSocket {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub(crate) socket_type: u8,
    /// Listening for connections.
    pub(crate) listening: bool,
    /// Its bound name: a path, `@name` for an abstract name; `None` when unbound. An accepted
    /// socket has its listener's name.
    pub(crate) name: Option<String>,
    /// The inode of the socket it is connected to, if any.
    pub(crate) peer_inode: Option<u64>,
    /// Bytes in its receive queue not yet read (see the module docs: for a datagram socket
    /// the first datagram's length); `None` for a listener or when not reported.
    pub(crate) unread_bytes: Option<u32>,
}

/// Every unix socket of the caller's network namespace, by inode.
pub(crate) fn unix_sockets() -> io::Result<HashMap<u64, UnixSocket>> {
    Ok(run_dump(&dump_request(), parse_unix_msg)?
        .into_iter()
        .collect())
}

/// `nlmsghdr` + `unix_diag_req` for unix sockets in every state, with name, peer and queue
/// lengths.
fn dump_request() -> Vec<u8> {
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0]; // family, protocol, pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    req.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino: any (a dump)
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // udiag_cookie: none (INET_DIAG_NOCOOKIE)
    dump_request_message(&req)
}

/// One `unix_diag_msg` with its attributes: the socket's inode and what is known about it.
/// `None` for a message cut short.
pub(crate) fn parse_unix_msg(payload: &[u8]) -> Option<(u64, UnixSocket)> {
    let inode = u64::from(u32_at(payload, INODE_OFFSET)?);
    let socket_type = *payload.get(TYPE_OFFSET)?;
    let listening = *payload.get(STATE_OFFSET)? == TCP_LISTEN;
    let mut socket = UnixSocket {
        socket_type,
        listening,
        name: None,
        peer_inode: None,
        unread_bytes: None,
    };
    for (kind, value) in attributes(payload.get(UNIX_DIAG_MSG_LEN..)?) {
        match kind {
            UNIX_DIAG_NAME => socket.name = Some(name_text(value)),
            // A peer not yet accepted (still in its listener's queue) has no inode: 0.
            UNIX_DIAG_PEER => {
                socket.peer_inode = u32_at(value, 0).filter(|&i| i != 0).map(u64::from);
            }
            UNIX_DIAG_RQLEN if !listening => socket.unread_bytes = u32_at(value, 0),
            _ => {}
        }
    }
    Some((inode, socket))
}

/// A `sun_path` as `/proc/net/unix` shows it: a path without its terminating NUL, or an
/// abstract name (leading NUL) as `@name`, NULs inside it as `@`.
fn name_text(sun_path: &[u8]) -> String {
    match sun_path.split_first() {
        Some((0, rest)) => {
            let shown: Vec<u8> = rest
                .iter()
                .map(|&b| if b == 0 { b'@' } else { b })
                .collect();
            format!("@{}", String::from_utf8_lossy(&shown))
        }
        _ => {
            let end = sun_path
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(sun_path.len());
            String::from_utf8_lossy(&sun_path[..end]).into_owned()
        }
    }
}

#[cfg(test)]
mod tests;
