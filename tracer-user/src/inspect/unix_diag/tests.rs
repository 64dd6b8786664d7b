use std::{
    io::Write,
    os::unix::{
        fs::MetadataExt,
        net::{UnixListener, UnixStream},
    },
};

use super::*;
use crate::inspect::sock_diag::{
    DumpEnd, NLMSG_DONE, SOCK_DIAG_BY_FAMILY, parse_dump, receive_dump, tests::netlink,
};

/// A dump recorded on a development machine by [`record_fixture`]: every unix socket of its
/// network namespace, among them an abstract listener [`FIXTURE_NAME`], one connection it
/// accepted whose client sent 5 bytes the server has not read, and the server's 3 bytes the
/// client has not read.
const RECORDED_DUMP: &[u8] = include_bytes!("../testdata/unix_diag_dump.bin");
const FIXTURE_NAME: &str = "@stallwatch-unix-diag-fixture";

/// The inode of a socket we hold.
fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
    let fd = fd.as_raw_fd();
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .ino()
}

/// The sockets of a whole dump (all its datagrams, concatenated).
fn parse_all(dump: &[u8]) -> (HashMap<u64, UnixSocket>, DumpEnd) {
    let (found, end) = parse_dump(dump, parse_unix_msg);
    (found.into_iter().collect(), end)
}

/// Check on the recorded dump that the connection's two ends name each other, that the
/// server's socket carries the listener's name and 5 unread bytes (the client's request),
/// the client's 3, and that the listener reports no byte count.
#[test]
fn recorded_dump() {
    let (sockets, end) = parse_all(RECORDED_DUMP);
    assert_eq!(end, DumpEnd::Done);
    assert!(sockets.len() > 3, "{} sockets", sockets.len());
    let named = |listening: bool| {
        sockets
            .iter()
            .find(|(_, s)| s.name.as_deref() == Some(FIXTURE_NAME) && s.listening == listening)
            .map(|(inode, s)| (*inode, s.clone()))
            .unwrap_or_else(|| panic!("no {FIXTURE_NAME} socket, listening: {listening}"))
    };
    let (_, listener) = named(true);
    assert_eq!(listener.unread_bytes, None);
    assert_eq!(listener.peer_inode, None);
    let (server_inode, server) = named(false);
    assert_eq!(server.unread_bytes, Some(5));
    assert_eq!(i32::from(server.socket_type), libc::SOCK_STREAM);
    let client_inode = server.peer_inode.expect("the server end's peer");
    let client = &sockets[&client_inode];
    assert_eq!(client.peer_inode, Some(server_inode));
    assert_eq!(client.name, None);
    assert_eq!(client.unread_bytes, Some(3));
}

/// One `unix_diag_msg` of `socket_type` in `state` with the given attributes.
fn message(inode: u32, socket_type: i32, state: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut payload = vec![libc::AF_UNIX as u8, socket_type as u8, state, 0];
    payload.extend_from_slice(&inode.to_ne_bytes());
    payload.extend_from_slice(&[0; 8]);
    for (kind, value) in attrs {
        payload.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&kind.to_ne_bytes());
        payload.extend_from_slice(value);
        payload.resize(crate::inspect::sock_diag::align4(payload.len()), 0);
    }
    netlink(SOCK_DIAG_BY_FAMILY, &payload)
}

fn rqlen(rqueue: u32, wqueue: u32) -> Vec<u8> {
    [rqueue.to_ne_bytes(), wqueue.to_ne_bytes()].concat()
}

/// Check names (path with its NUL, abstract with NULs inside), a peer not yet accepted
/// (inode 0), a listener's queue (connections, not bytes), a datagram socket, and that a
/// message cut short is skipped.
#[test]
fn edge_cases() {
    const ESTABLISHED: u8 = 1;
    let mut dump = message(
        10,
        libc::SOCK_STREAM,
        TCP_LISTEN,
        &[
            (UNIX_DIAG_NAME, b"/run/x.sock\0"),
            (UNIX_DIAG_RQLEN, &rqlen(2, 128)),
        ],
    );
    dump.extend(message(
        11,
        libc::SOCK_STREAM,
        ESTABLISHED,
        &[
            (UNIX_DIAG_PEER, &0u32.to_ne_bytes()),
            (UNIX_DIAG_RQLEN, &rqlen(0, 0)),
        ],
    ));
    dump.extend(message(
        12,
        libc::SOCK_DGRAM,
        ESTABLISHED,
        &[
            (UNIX_DIAG_NAME, b"\0dbus\0x"),
            (UNIX_DIAG_PEER, &13u32.to_ne_bytes()),
            (UNIX_DIAG_RQLEN, &rqlen(40, 0)),
        ],
    ));
    dump.extend(netlink(NLMSG_DONE, &[0; 4]));
    let (sockets, end) = parse_all(&dump);
    assert_eq!(end, DumpEnd::Done);
    assert_eq!(
        sockets[&10],
        UnixSocket {
            socket_type: libc::SOCK_STREAM as u8,
            listening: true,
            name: Some("/run/x.sock".into()),
            peer_inode: None,
            unread_bytes: None,
        }
    );
    assert_eq!(sockets[&11].peer_inode, None);
    assert_eq!(sockets[&11].unread_bytes, Some(0));
    let dgram = &sockets[&12];
    assert_eq!(dgram.name.as_deref(), Some("@dbus@x"));
    assert_eq!(dgram.peer_inode, Some(13));
    assert_eq!(dgram.unread_bytes, Some(40));
    assert_eq!(i32::from(dgram.socket_type), libc::SOCK_DGRAM);

    let whole = message(14, libc::SOCK_STREAM, ESTABLISHED, &[]);
    assert_eq!(parse_unix_msg(&whole[16..whole.len() - 4]), None);
    assert_eq!(parse_all(&whole[..20]).0.len(), 0);
}

/// Check on a live socket pair that the dump pairs the two ends by inode and counts the
/// bytes one end wrote and the other has not read.
#[test]
fn live_socket_pair() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(b"ping").unwrap();
    let sockets = unix_sockets().unwrap();
    let (a_inode, b_inode) = (inode_of(&a), inode_of(&b));
    assert_eq!(sockets[&a_inode].peer_inode, Some(b_inode));
    assert_eq!(sockets[&b_inode].peer_inode, Some(a_inode));
    assert_eq!(sockets[&b_inode].unread_bytes, Some(4));
    assert_eq!(sockets[&a_inode].unread_bytes, Some(0));
}

/// Records [`RECORDED_DUMP`] (run by hand: `cargo test -p tracer-user record_fixture --
/// --ignored`): the raw datagrams of one dump, concatenated, taken while the fixture's
/// sockets exist.
#[test]
#[ignore = "rewrites the recorded fixture"]
fn record_fixture() {
    use std::os::{linux::net::SocketAddrExt, unix::net::SocketAddr};
    let addr = SocketAddr::from_abstract_name(&FIXTURE_NAME.as_bytes()[1..]).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let mut client = UnixStream::connect_addr(&addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    server.write_all(b"hi!").unwrap();
    let mut recorded = Vec::new();
    receive_dump(&dump_request(), |datagram| {
        recorded.extend_from_slice(datagram);
        parse_dump(datagram, |_| Some(())).1
    })
    .unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/inspect/testdata/unix_diag_dump.bin"
    );
    std::fs::write(path, recorded).unwrap();
}
