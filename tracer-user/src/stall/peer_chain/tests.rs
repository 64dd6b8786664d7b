//! Chains across processes over hand-built threads, through `analyze`: clients of a server
//! whose handlers wait behind a deadlock, a server holding a request while idle, a request
//! never read, a peer not inspected, a proxy in between.

use super::*;
use crate::{
    model::{Analysis, SyscallCall, WaitKind, WaitingCode},
    stall::{
        analyze::analyze,
        fixtures::{self, loopback_client as client, mutex_waiter as locker},
    },
};

const CLIENT: u32 = 100;
const SERVER: u32 = 500;
const BACKEND: u32 = 700;

/// The server: handlers 502 and 503 wait for mutex M held by worker 510, which waits for M2
/// held by worker 511, which waits for M (ABBA).
fn deadlocked_server() -> Vec<BlockedThread> {
    vec![
        locker(SERVER, 502, 0xa0, 510),
        locker(SERVER, 503, 0xa0, 510),
        locker(SERVER, 510, 0xb0, 511),
        locker(SERVER, 511, 0xa0, 510),
    ]
}

/// A server thread in `select` without timeout (its idle loop).
fn selecting(pid: u32, tid: u32) -> BlockedThread {
    let mut t = fixtures::futex_thread(pid, tid, "loop", 4_000_000_000);
    t.call = Some(SyscallCall {
        nr: 23,
        kind: WaitKind::Select,
        resource: 0,
        detail: 0,
        timeout: u64::MAX,
    });
    t
}

fn processes(list: &[(u32, &[u32], bool)]) -> BTreeMap<u32, ProcessView> {
    list.iter()
        .map(|&(pid, tids, peer)| {
            let mut p = fixtures::process(pid, tids);
            p.peer = peer;
            (pid, p)
        })
        .collect()
}

fn finding(analysis: &Analysis, tid: u32) -> &Finding {
    analysis
        .findings
        .iter()
        .find(|f| f.thread.tid == tid)
        .unwrap_or_else(|| panic!("no finding for {tid}: {analysis:#?}"))
}

/// Check that two clients waiting for replies from a server whose handlers wait behind a
/// deadlock are stalls behind that server, whose chain goes handler -> worker-1 -> worker-2
/// and closes the cycle.
#[test]
fn clients_of_a_deadlocked_server_are_behind_it() {
    let mut threads = vec![
        client(CLIENT, 101, 11, (SERVER, 21), 0),
        client(CLIENT, 102, 12, (SERVER, 22), 0),
    ];
    threads.extend(deadlocked_server());
    let all = processes(&[
        (CLIENT, &[CLIENT, 101, 102], false),
        (SERVER, &[SERVER, 502, 503, 510, 511], true),
    ]);
    let analysis = analyze(&threads, &all);
    for tid in [101, 102] {
        let f = finding(&analysis, tid);
        assert_eq!(f.verdict, Verdict::Stall);
        // Several server threads, none blocked on the connection itself: no peer thread.
        let peer = PeerRef {
            pid: SERVER,
            tid: None,
        };
        assert_eq!(f.peer, Some(peer));
        let Reason::PeerBlocked {
            peer: named,
            peer_verdict,
            own,
        } = &f.reason
        else {
            panic!("not behind the server: {f:#?}");
        };
        assert_eq!((*named, *peer_verdict), (peer, Verdict::BlockedByDeadlock));
        assert!(matches!(
            **own,
            Reason::RequestUnanswered { sent_ms_ago: 3_000 }
        ));
        let links: Vec<(u32, Hop, usize, bool)> = chain(&analysis.findings, f)
            .iter()
            .map(|l| (l.finding.thread.tid, l.hop, l.alike, l.closes_cycle))
            .collect();
        assert_eq!(
            links,
            [
                (502, Hop::Peer, 1, false),
                (510, Hop::Holder, 0, false),
                (511, Hop::Holder, 0, false),
                (510, Hop::Holder, 0, true),
            ]
        );
    }
    assert_eq!(finding(&analysis, 510).verdict, Verdict::Deadlock);
}

/// Check that a request the local server read, while the server's only thread sits idle in
/// `select`, is idle (held by the server, whose thread is known: its only one); that the
/// same request still unread stays a stall; and that a peer that was not inspected leaves
/// the stall as it was.
#[test]
fn a_request_held_by_an_idle_server_is_idle() {
    let all = processes(&[(CLIENT, &[101], false), (SERVER, &[SERVER], true)]);
    let held = vec![
        client(CLIENT, 101, 11, (SERVER, 21), 0),
        selecting(SERVER, SERVER),
    ];
    let analysis = analyze(&held, &all);
    let f = finding(&analysis, 101);
    assert_eq!(f.verdict, Verdict::Idle);
    let peer = PeerRef {
        pid: SERVER,
        tid: Some(SERVER),
    };
    assert_eq!(
        f.reason,
        Reason::RequestHeldByPeer {
            peer,
            sent_ms_ago: Some(3_000)
        }
    );
    // A server running (no blocked thread at all) holds it the same way.
    let analysis = analyze(&held[..1], &all);
    assert_eq!(finding(&analysis, 101).verdict, Verdict::Idle);

    let unread = vec![
        client(CLIENT, 101, 11, (SERVER, 21), 12),
        selecting(SERVER, SERVER),
    ];
    let analysis = analyze(&unread, &all);
    let f = finding(&analysis, 101);
    assert_eq!(f.verdict, Verdict::Stall);
    assert!(
        matches!(f.reason, Reason::RequestUnanswered { .. }),
        "{f:#?}"
    );

    let not_inspected = processes(&[(CLIENT, &[101], false)]);
    let analysis = analyze(&held[..1], &not_inspected);
    let f = finding(&analysis, 101);
    assert_eq!(f.verdict, Verdict::Stall);
    assert!(
        matches!(f.reason, Reason::RequestUnanswered { .. }),
        "{f:#?}"
    );
}

/// Check that a chain of three processes resolves: a client of a proxy whose thread waits
/// for a reply from a deadlocked backend is behind the proxy, which is behind the backend;
/// the proxy thread is known as the one blocked on the client's connection's other end.
#[test]
fn chains_through_a_proxy() {
    let mut proxy = client(SERVER, 520, 31, (BACKEND, 41), 0);
    proxy.comm = "proxy".into();
    let mut threads = vec![client(CLIENT, 101, 11, (SERVER, 520), 0), proxy];
    // The proxy's thread 520 is blocked on socket 520 (the other end of the client's).
    if let Some(s) = threads[1].fd.as_mut().and_then(|d| d.socket.as_mut()) {
        s.inode = 520;
    }
    threads.push(locker(BACKEND, 701, 0xc0, 702));
    threads.push(locker(BACKEND, 702, 0xd0, 701));
    let all = processes(&[
        (CLIENT, &[101], false),
        (SERVER, &[SERVER, 520], true),
        (BACKEND, &[BACKEND, 701, 702], true),
    ]);
    let analysis = analyze(&threads, &all);
    let proxy = finding(&analysis, 520);
    assert!(
        matches!(
            proxy.reason,
            Reason::PeerBlocked {
                peer_verdict: Verdict::Deadlock,
                ..
            }
        ),
        "{proxy:#?}"
    );
    let client = finding(&analysis, 101);
    assert_eq!(
        client.peer,
        Some(PeerRef {
            pid: SERVER,
            tid: Some(520)
        })
    );
    assert!(
        matches!(
            client.reason,
            Reason::PeerBlocked {
                peer_verdict: Verdict::Stall,
                ..
            }
        ),
        "{client:#?}"
    );
    let tids: Vec<u32> = chain(&analysis.findings, client)
        .iter()
        .map(|l| l.finding.thread.tid)
        .collect();
    assert_eq!(tids, [520, 701, 702, 701]);
}

/// Check that a wait on one's own process, and verdicts other than a stall on a pipe or
/// socket, are left alone: a client whose server is a thread of its own process with a
/// problem stays an unanswered request.
#[test]
fn own_process_and_other_verdicts_are_left_alone() {
    let mut threads = vec![client(CLIENT, 101, 11, (CLIENT, 21), 0)];
    threads.push(locker(CLIENT, 110, 0xa0, 111));
    threads.push(locker(CLIENT, 111, 0xb0, 110));
    let all = processes(&[(CLIENT, &[CLIENT, 101, 110, 111], false)]);
    let analysis = analyze(&threads, &all);
    let f = finding(&analysis, 101);
    assert_eq!(f.peer, None);
    assert!(
        matches!(f.reason, Reason::RequestUnanswered { .. }),
        "{f:#?}"
    );
    // A deadlock member has no peer hop, only its cycle.
    let member = finding(&analysis, 110);
    assert_eq!(member.code, WaitingCode::Lock { glibc_mutex: true });
    assert_eq!(chain(&analysis.findings, member).len(), 2);
}

/// Check that unix clients follow the peer too: one whose request the server read (no timing
/// on unix sockets, `PeerReadEverything`) and one whose request sits unread, both on a server
/// whose handlers wait behind a deadlock, are stalls behind it; with the server idle instead,
/// the first stays idle and the second a stall.
#[test]
fn unix_clients_follow_the_peer() {
    let unix = |tid: u32, unread: u32| {
        let mut t = client(
            CLIENT,
            tid,
            u64::from(tid),
            (SERVER, u64::from(tid) + 10),
            unread,
        );
        let socket =
            t.fd.as_mut()
                .and_then(|d| d.socket.as_mut())
                .expect("a socket");
        socket.protocol = crate::model::SocketProtocol::Unix;
        socket.tcp_timing = None;
        socket.tcp_state = None;
        socket.unix_kind = Some(("stream".into(), "CONNECTED".into()));
        t
    };
    let clients = vec![unix(101, 0), unix(102, 12)];
    let mut threads = clients.clone();
    threads.extend(deadlocked_server());
    let all = processes(&[
        (CLIENT, &[CLIENT, 101, 102], false),
        (SERVER, &[SERVER, 502, 503, 510, 511], true),
    ]);
    let analysis = analyze(&threads, &all);
    for (tid, own) in [(101, "PeerReadEverything"), (102, "RequestUnread")] {
        let f = finding(&analysis, tid);
        assert_eq!(f.verdict, Verdict::Stall, "{f:#?}");
        let Reason::PeerBlocked { own: reason, .. } = &f.reason else {
            panic!("not behind the server: {f:#?}");
        };
        assert!(format!("{reason:?}").starts_with(own), "{f:#?}");
    }
    let mut threads = clients;
    threads.push(selecting(SERVER, SERVER));
    let all = processes(&[
        (CLIENT, &[CLIENT, 101, 102], false),
        (SERVER, &[SERVER], true),
    ]);
    let analysis = analyze(&threads, &all);
    let f = finding(&analysis, 101);
    assert_eq!(
        (f.verdict, &f.reason),
        (Verdict::Idle, &Reason::PeerReadEverything)
    );
    let f = finding(&analysis, 102);
    assert_eq!(f.verdict, Verdict::Stall, "{f:#?}");
    assert!(matches!(
        f.reason,
        Reason::RequestUnread { unread_bytes: 12 }
    ));
}
