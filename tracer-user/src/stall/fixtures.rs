//! Hand-built blocked threads for the unit tests of `stall` and `report::watch`.

use tracer_common::syscalls::kind;

use super::model::{BlockedThread, Origin, SyscallCall, Timing};
use crate::symbolize::Frame;

/// Frames with only names, innermost first.
pub fn frames(names: &[&str]) -> Vec<Frame> {
    names
        .iter()
        .map(|n| Frame {
            name: Some(n.to_string()),
            ..Frame::default()
        })
        .collect()
}

/// A traced thread in an indefinite private `futex(FUTEX_WAIT)` on `0x7f0000001000`, with no
/// futex details, stacks or fd.
pub fn futex_thread(pid: u32, tid: u32, comm: &str, blocked_for_ns: u64) -> BlockedThread {
    BlockedThread {
        pid,
        tid,
        comm: comm.into(),
        state: 'S',
        since_ns: 1_000,
        blocked_for_ns,
        origin: Origin::Traced,
        call: Some(SyscallCall {
            nr: 202,
            kind: kind::FUTEX,
            resource: 0x7f00_0000_1000,
            detail: 128,
            timeout: 0,
        }),
        timing: Timing::Indefinite,
        futex: None,
        fd: None,
        event_loop: false,
        wchan: None,
        kernel_stack: Vec::new(),
        user_stack: Vec::new(),
        user_sp: None,
    }
}
