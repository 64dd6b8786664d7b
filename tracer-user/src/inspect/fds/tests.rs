//! Tests of `fds`.

use super::*;

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
            clock: "CLOCK_MONOTONIC".into(),
            next_expiry_ns: 98_929_393,
            interval_ns: 1_500_000_000,
            ticks: 3
        }
    );
    assert_eq!(
        timer_summary(&t),
        "timerfd CLOCK_MONOTONIC, next in 0.099 s, interval 1.5 s"
    );
    let disarmed = TimerFdState {
        next_expiry_ns: 0,
        interval_ns: 0,
        ..t
    };
    assert_eq!(
        timer_summary(&disarmed),
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
    assert_eq!(signal_names(0x4002), "SIGINT, SIGTERM");
    assert_eq!(parse_fdinfo("garbage\n:\n"), FdInfoFields::default());
}

#[test]
fn pipe_summaries() {
    let writer = FdHolder {
        pid: 4711,
        comm: "writer".into(),
        fd: 5,
        access: Some(FdAccess::Write),
    };
    let reader = FdHolder {
        pid: 4712,
        comm: "reader".into(),
        fd: 3,
        access: Some(FdAccess::Read),
    };
    let peers = [writer, reader];
    assert_eq!(
        pipe_summary("pipe:[1234]", Some(FdAccess::Read), &peers),
        "pipe:[1234], write end held by 4711 (writer) fd 5"
    );
    assert_eq!(
        pipe_summary("pipe:[1234]", Some(FdAccess::Write), &peers),
        "pipe:[1234], read end held by 4712 (reader) fd 3"
    );
    assert_eq!(
        pipe_summary("pipe:[1234]", Some(FdAccess::Write), &peers[..1]),
        "pipe:[1234], no read end open elsewhere"
    );
    assert_eq!(format_secs(100_000_000), "0.1 s");
    assert_eq!(format_secs(12_000_000_000), "12 s");
}
