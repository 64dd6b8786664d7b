//! Hand-built blocked threads for the unit tests of `stall` and `report::watch`.

use crate::model::{
    BlockedThread, CycleEdge, FdDescription, FdType, Finding, Frame, FrameKind, FutexFacts,
    FutexOwner, LocalPeer, Origin, OwnerSource, ProcessView, Reason, SocketInfo, SocketProtocol,
    SyscallCall, TcpTiming, ThreadState, Timing, Verdict, WaitKind, WaitingCode,
};

/// Frames with only names, innermost first.
pub(crate) fn frames(names: &[&str]) -> Vec<Frame> {
    names
        .iter()
        .map(|n| Frame::named(*n, FrameKind::Native))
        .collect()
}

/// A traced thread in an indefinite private `futex(FUTEX_WAIT)` on `0x7f0000001000`, with no
/// futex facts, stacks or fd.
pub(crate) fn futex_thread(pid: u32, tid: u32, comm: &str, blocked_for_ns: u64) -> BlockedThread {
    BlockedThread {
        pid,
        tid,
        comm: comm.into(),
        state: ThreadState::Sleeping,
        since_ns: 1_000,
        blocked_for_ns,
        origin: Origin::Traced,
        call: Some(SyscallCall {
            nr: 202,
            kind: WaitKind::Futex,
            resource: 0x7f00_0000_1000,
            detail: 128,
            timeout: 0,
        }),
        futex: None,
        fd: None,
        poll_returns: None,
        wchan: None,
        kernel_stack: Vec::new(),
        user_stack: Vec::new(),
        user_sp: None,
        runtime: None,
    }
}

/// The futex facts from which the analysis infers `owner` as found by `source` (memory as
/// glibc lays out a locked `pthread_mutex_t`, a PI word, a joined thread's tid), or a locked
/// word with nothing after it when there is no owner.
pub(crate) fn futex_facts(uaddr: u64, owner: Option<(u32, OwnerSource)>) -> FutexFacts {
    let word = |w: u32| w.to_ne_bytes().to_vec();
    let (op, memory) = match owner {
        Some((tid, OwnerSource::GlibcMutex)) => {
            let mut bytes = vec![0u8; 20];
            bytes[0..4].copy_from_slice(&2u32.to_ne_bytes());
            bytes[8..12].copy_from_slice(&tid.to_ne_bytes());
            bytes[12..16].copy_from_slice(&1u32.to_ne_bytes());
            (0, bytes)
        }
        Some((tid, OwnerSource::PiWord | OwnerSource::FailedPiLock)) => {
            (6, word(0x8000_0000 | tid))
        }
        Some((tid, OwnerSource::Join)) => (0, word(tid)),
        // A runtime's owner is in its view, not in the futex memory.
        Some((_, OwnerSource::RuntimeLock | OwnerSource::RuntimeJoin)) | None => (0, word(2)),
    };
    FutexFacts {
        uaddr,
        op,
        memory,
        refused_pi_lock: None,
    }
}

/// An established TCP connection from `local` to `peer` as fd `fd`.
pub(crate) fn tcp_socket(fd: i32, local: &str, peer: &str) -> FdDescription {
    FdDescription {
        socket: Some(SocketInfo {
            protocol: SocketProtocol::Tcp,
            inode: 81234,
            local: local.into(),
            peer: Some(peer.into()),
            tcp_state: Some("ESTABLISHED".into()),
            unix_kind: None,
            tcp_timing: None,
            local_peer: None,
        }),
        ..FdDescription::new(fd, FdType::Socket, "socket:[81234]".into())
    }
}

/// `thread`'s finding: an indefinite wait of unknown code with no owner, with this verdict and
/// reason.
pub(crate) fn finding(thread: BlockedThread, verdict: Verdict, reason: Reason) -> Finding {
    Finding {
        thread,
        code: WaitingCode::Unknown,
        timing: Timing::Indefinite,
        event_loop: false,
        owner: None,
        peer: None,
        verdict,
        reason,
    }
}

/// A cycle edge: `tid` waits for the glibc mutex at `lock_uaddr`, held by `owner`.
pub(crate) fn glibc_edge(tid: u32, lock_uaddr: u64, owner: u32) -> CycleEdge {
    CycleEdge {
        tid,
        lock_uaddr,
        owner: FutexOwner {
            tid: owner,
            source: OwnerSource::GlibcMutex,
        },
    }
}

/// Thread `tid` of `pid` in `recvfrom` on a loopback connection (socket `inode`) whose other
/// end is socket `peer_inode` of `peer_pid`, with `unread` bytes unread there, a request
/// sent 3 s ago and nothing received since.
pub(crate) fn loopback_client(
    pid: u32,
    tid: u32,
    inode: u64,
    peer: (u32, u64),
    unread: u32,
) -> BlockedThread {
    let mut t = futex_thread(pid, tid, &format!("client-{tid}"), 3_000_000_000);
    t.call = Some(SyscallCall {
        nr: 45,
        kind: WaitKind::Recv,
        resource: 5,
        detail: 0,
        timeout: 0,
    });
    let mut fd = tcp_socket(5, "127.0.0.1:41234", "127.0.0.1:5432");
    let socket = fd.socket.as_mut().expect("a socket");
    socket.inode = inode;
    socket.tcp_timing = Some(TcpTiming {
        last_data_sent_ms: 3_000,
        last_data_recv_ms: 60_000,
        data_segs_in: Some(0),
        data_segs_out: Some(1),
    });
    socket.local_peer = Some(LocalPeer {
        inode: peer.1,
        pid: Some(peer.0),
        unread_bytes: unread,
    });
    t.fd = Some(fd);
    t
}

/// Thread `tid` of `pid` waiting for glibc mutex `uaddr` held by `owner`.
pub(crate) fn mutex_waiter(pid: u32, tid: u32, uaddr: u64, owner: u32) -> BlockedThread {
    let mut t = futex_thread(pid, tid, &format!("t{tid}"), 4_000_000_000);
    t.futex = Some(futex_facts(uaddr, Some((owner, OwnerSource::GlibcMutex))));
    t.user_stack = frames(&["__lll_lock_wait", "pthread_mutex_lock", "handle"]);
    t
}

/// Process `pid` with these threads, running glibc and Rust's std.
pub(crate) fn process(pid: u32, tids: &[u32]) -> ProcessView {
    ProcessView {
        pid,
        tids: tids.to_vec(),
        runtimes: vec!["glibc".into(), "rust_std".into()],
        runtime_views: Vec::new(),
        peer: false,
    }
}
