//! Timed or indefinite: can a wait end by itself?
//!
//! A thread that keeps re-arming a timed wait (a timer loop, epoll with a timeout) is healthy
//! however long each wait lasts, so only indefinite waits can be stalls. The answer comes
//! from the syscall's timeout argument as the kernel got it.

use tracer_common::syscalls;

use crate::model::{SyscallCall, Timing, WaitKind};

/// Futex commands that block: WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI, LOCK_PI2.
const BLOCKING_FUTEX_CMDS: [u32; 5] = [0, 6, 9, 11, 13];

/// Whether the wait in `call` (none: not in a followed syscall) can end by itself.
pub(crate) fn timing(call: Option<&SyscallCall>) -> Timing {
    let Some(call) = call else {
        return Timing::Unknown;
    };
    let no_pointer_timeout = call.timeout == 0;
    match call.kind {
        WaitKind::Futex => {
            let cmd = (call.detail & syscalls::FUTEX_CMD_MASK) as u32;
            if !BLOCKING_FUTEX_CMDS.contains(&cmd) {
                Timing::Timed // WAKE, UNLOCK_PI...: do not wait at all
            } else if no_pointer_timeout {
                Timing::Indefinite
            } else {
                Timing::Timed
            }
        }
        WaitKind::FutexWaitv | WaitKind::Select => indefinite_if(no_pointer_timeout),
        WaitKind::Epoll | WaitKind::Poll if syscalls::timeout_is_ms(call.nr) => {
            // An int argument: only the low 32 bits are the value.
            indefinite_if((call.timeout as u32 as i32) < 0)
        }
        WaitKind::Epoll | WaitKind::Poll => indefinite_if(no_pointer_timeout),
        WaitKind::Read | WaitKind::Recv | WaitKind::Accept | WaitKind::WaitChild => {
            Timing::Indefinite
        }
        WaitKind::Sleep => Timing::Timed,
        WaitKind::Other => Timing::Unknown,
    }
}

fn indefinite_if(indefinite: bool) -> Timing {
    if indefinite {
        Timing::Indefinite
    } else {
        Timing::Timed
    }
}

/// Whether the wait is a poll-style call (epoll_wait, poll, select): what an event loop
/// blocks in between events.
pub(crate) fn is_poll(call: Option<&SyscallCall>) -> bool {
    call.is_some_and(|c| c.kind.is_poll())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: u32, detail: u64, timeout: u64) -> SyscallCall {
        let layout = syscalls::classify(nr).expect("tracked syscall");
        SyscallCall {
            nr,
            kind: WaitKind::from_raw(layout.kind),
            resource: 0x1000,
            detail,
            timeout,
        }
    }

    fn timing_of(nr: u32, detail: u64, timeout: u64) -> Timing {
        timing(Some(&call(nr, detail, timeout)))
    }

    /// Check that futex waits and locks are indefinite without a timeout pointer only.
    #[test]
    fn futex_timing_follows_the_timeout_pointer() {
        let private = 128;
        assert_eq!(timing_of(202, private, 0), Timing::Indefinite); // WAIT
        assert_eq!(timing_of(202, 9 | private, 0x7ff0), Timing::Timed); // WAIT_BITSET
        assert_eq!(timing_of(202, 6, 0), Timing::Indefinite); // LOCK_PI
        assert_eq!(timing_of(202, 1, 0), Timing::Timed); // WAKE never blocks
    }

    /// Check that epoll_wait(-1) is indefinite and epoll_wait(100) timed, with the int
    /// argument's upper register half ignored.
    #[test]
    fn epoll_timeout_in_ms_is_signed_32_bit() {
        assert_eq!(timing_of(232, u64::MAX, u64::MAX), Timing::Indefinite);
        assert_eq!(timing_of(232, 0xffff_ffff, 0xffff_ffff), Timing::Indefinite);
        assert_eq!(timing_of(232, 100, 100), Timing::Timed);
        assert_eq!(timing_of(232, 0, 0), Timing::Timed);
        assert_eq!(timing_of(7, 0, u32::MAX as u64), Timing::Indefinite); // poll(-1)
        assert_eq!(timing_of(441, 0, 0), Timing::Indefinite); // epoll_pwait2(NULL)
        assert_eq!(timing_of(271, 0, 0x7ff0), Timing::Timed); // ppoll(&ts)
    }

    /// Check that blocking I/O and joins are indefinite, sleeps timed, and no call unknown.
    #[test]
    fn io_is_indefinite_and_sleep_timed() {
        for nr in [0, 45, 47, 43, 288, 61] {
            assert_eq!(timing_of(nr, 0, 0), Timing::Indefinite, "nr {nr}");
        }
        assert_eq!(timing_of(230, 0, 0), Timing::Timed);
        assert_eq!(timing(None), Timing::Unknown);
        assert!(is_poll(Some(&call(232, 0, 0))));
        assert!(!is_poll(Some(&call(0, 0, 0))));
        assert!(!is_poll(None));
    }
}
