//! Tests of `fds`.

use super::*;
use crate::inspect::fdinfo::{FdInfoFields, parse_fdinfo};
use crate::{model::TimerFdState, report::describe::fd_phrase};

/// Fd 3, of `fd_type`, with nothing else known about it.
fn description(fd_type: FdType, target: &str) -> FdDescription {
    FdDescription::new(3, fd_type, target.into())
}

#[test]
fn fdinfo_pipe_and_eventfd() {
    let pipe = "pos:\t0\nflags:\t02000001\nmnt_id:\t15\nino:\t1057\n";
    let f = parse_fdinfo(pipe);
    assert_eq!(f.flags, Some(0o2000001));
    assert_eq!(
        f.flags.and_then(FdAccess::from_flags),
        Some(FdAccess::Write)
    );
    let eventfd = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1058\n\
                   eventfd-count:               1a\neventfd-id: 3\neventfd-semaphore: 0\n";
    let f = parse_fdinfo(eventfd);
    assert_eq!(f.eventfd_count, Some(26));
    assert_eq!(
        f.flags.and_then(FdAccess::from_flags),
        Some(FdAccess::ReadWrite)
    );
}

#[test]
fn fdinfo_timerfd() {
    let text = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1058\nclockid: 1\nticks: 3\n\
                settime flags: 00\nit_value: (0, 98929393)\nit_interval: (1, 500000000)\n";
    let t = parse_fdinfo(text).timer.expect("timer");
    assert_eq!(
        t,
        TimerFdState {
            clock_id: 1,
            next_expiry_ns: 98_929_393,
            interval_ns: 1_500_000_000,
            ticks: 3
        }
    );
    let timer = |t: TimerFdState| FdDescription {
        timer: Some(t),
        ..description(FdType::TimerFd, "anon_inode:[timerfd]")
    };
    assert_eq!(
        fd_phrase(&timer(t.clone())),
        "timerfd CLOCK_MONOTONIC, next in 0.099 s, interval 1.5 s"
    );
    let disarmed = TimerFdState {
        next_expiry_ns: 0,
        interval_ns: 0,
        ..t
    };
    assert_eq!(
        fd_phrase(&timer(disarmed)),
        "timerfd CLOCK_MONOTONIC, disarmed"
    );
}

#[test]
fn fdinfo_epoll_and_signalfd() {
    let text = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1058\n\
        tfd:        5 events:       19 data:                5  pos:0 ino:5f sdev:f\n\
        tfd:       12 events: 80000001 data:     7f0000000000  pos:0 ino:1a2b sdev:8\n\
        tfd: bogus\n";
    let f = parse_fdinfo(text);
    assert_eq!(
        f.epoll,
        vec![
            EpollWatch {
                fd: 5,
                events: 0x19,
                inode: Some(0x5f)
            },
            EpollWatch {
                fd: 12,
                events: 0x8000_0001,
                inode: Some(0x1a2b)
            },
        ]
    );
    let f = parse_fdinfo("sigmask:\t0000000000004002\n");
    assert_eq!(f.sigmask, Some(0x4002));
    let signalfd = FdDescription {
        sigmask: f.sigmask,
        ..description(FdType::SignalFd, "anon_inode:[signalfd]")
    };
    assert_eq!(fd_phrase(&signalfd), "signalfd for SIGINT, SIGTERM");
    assert_eq!(parse_fdinfo("garbage\n:\n"), FdInfoFields::default());
}

#[test]
fn pipe_summaries() {
    let writer = FdHolder {
        pid: 4711,
        comm: Some("writer".into()),
        fd: 5,
        access: Some(FdAccess::Write),
        threads: Vec::new(),
    };
    let reader = FdHolder {
        pid: 4712,
        comm: Some("reader".into()),
        fd: 3,
        access: Some(FdAccess::Read),
        threads: Vec::new(),
    };
    let peers = vec![writer, reader];
    let pipe = |access, peers: &[FdHolder]| FdDescription {
        access: Some(access),
        pipe_peers: peers.to_vec(),
        ..description(FdType::Pipe, "pipe:[1234]")
    };
    assert_eq!(
        fd_phrase(&pipe(FdAccess::Read, &peers)),
        "pipe:[1234], write end held by 4711 (writer) fd 5"
    );
    assert_eq!(
        fd_phrase(&pipe(FdAccess::Write, &peers)),
        "pipe:[1234], read end held by 4712 (reader) fd 3"
    );
    assert_eq!(
        fd_phrase(&pipe(FdAccess::Write, &peers[..1])),
        "pipe:[1234], no read end open elsewhere"
    );
}

/// Check that the other end of a socket is named by the lowest pid other than the asking
/// process (a socket pair shared before a fork: the child), and by the asking process when
/// it is the only holder (a server thread of the same process).
#[test]
fn socket_holder_prefers_another_process() {
    assert_eq!(
        preferred_holder([300, 100, 200].into_iter(), 100),
        Some(200)
    );
    assert_eq!(preferred_holder([100, 100].into_iter(), 100), Some(100));
    assert_eq!(preferred_holder([500, 300].into_iter(), 100), Some(300));
    assert_eq!(preferred_holder(std::iter::empty(), 100), None);
}
