//! Waits that began before `watch` attached, read from `/proc`.
//!
//! The BPF programs only see a wait begin at switch-out; a thread already asleep (the hang
//! that made someone run `watch`) never switches out again. So every target thread in S or D
//! state is read once at start: its syscall and arguments, SP/PC, kernel stack and wchan, and
//! when it last ran. Such a wait lasts as long as the thread's run count (`schedstat`) stays
//! the same: once it runs, anything it blocks on next is traced by BPF.

use std::collections::BTreeMap;

use crate::{
    inspect::{
        self, KernelFrameName,
        threads::{self, ProcSyscall, ProcThread},
    },
    model::{SyscallCall, ThreadState, UserRegs},
};

/// One thread found asleep when `watch` started.
#[derive(Clone, Debug)]
pub(super) struct SnapshotWait {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// S or D.
    pub state: ThreadState,
    /// Best estimate of when it fell asleep (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    /// The syscall it sleeps in, if one stallwatch follows.
    pub call: Option<SyscallCall>,
    /// User pc and sp from `/proc/PID/task/TID/syscall` (bp is not there).
    pub regs: Option<UserRegs>,
    /// Kernel stack from `/proc/PID/task/TID/stack` (names only; needs root).
    pub kernel_stack: Vec<KernelFrameName>,
    /// Kernel wait channel.
    pub wchan: Option<String>,
    /// Timeslices run when read; a change means the wait ended.
    pub run_count: Option<u64>,
}

/// Every sleeping thread of `pids` (every process when empty), except this process's own.
pub(super) fn take(pids: &[u32], now_ns: u64) -> BTreeMap<u32, SnapshotWait> {
    let own = std::process::id();
    let pids = if pids.is_empty() {
        threads::list_pids()
    } else {
        pids.to_vec()
    };
    let mut waits = BTreeMap::new();
    for pid in pids.into_iter().filter(|&p| p != own) {
        let Ok(tids) = threads::list_tids(pid) else {
            continue;
        };
        for tid in tids {
            if let Ok(thread) = threads::read_thread(pid, tid)
                && let Some(wait) = sleeping(thread, now_ns)
            {
                waits.insert(tid, wait);
            }
        }
    }
    waits
}

/// Whether a snapshot wait is still going on: the thread has not run since (its `schedstat`
/// run count is unchanged; one small file per thread and scan). Without schedstat, the whole
/// thread is read again.
pub(super) fn still_waiting(wait: &SnapshotWait) -> bool {
    let path = format!("/proc/{}/task/{}/schedstat", wait.pid, wait.tid);
    let run_count = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| threads::parse_schedstat(&text))
        .map(|s| s.run_count)
        .filter(|&n| n != 0);
    match (run_count, wait.run_count) {
        (Some(now), Some(then)) => now == then,
        _ => match threads::read_thread(wait.pid, wait.tid) {
            Ok(now) => {
                ThreadState::from_letter(now.state).is_asleep() && now.run_count == wait.run_count
            }
            Err(_) => false,
        },
    }
}

/// `thread` as a wait, if it is a user thread asleep.
pub(super) fn sleeping(thread: ProcThread, now_ns: u64) -> Option<SnapshotWait> {
    // Kernel threads are not watched (the BPF side skips them too): they have no user side
    // and `/proc` shows them "in" syscall 0.
    let state = ThreadState::from_letter(thread.state);
    if !state.is_asleep() || thread.kernel_thread {
        return None;
    }
    let since_ns = inspect::blocked_since_ns(&thread)
        .map(|(ns, _)| ns)
        .unwrap_or(now_ns)
        .min(now_ns);
    let regs = |pc, sp| {
        Some(UserRegs {
            ip: pc,
            sp,
            bp: None,
        })
    };
    let (call, regs) = match thread.syscall {
        ProcSyscall::InSyscall { nr, args, sp, pc } => {
            (SyscallCall::from_args(nr, &args), regs(pc, sp))
        }
        ProcSyscall::NotInSyscall { sp, pc } => (None, regs(pc, sp)),
        _ => (None, None),
    };
    Some(SnapshotWait {
        pid: thread.pid,
        tid: thread.tid,
        comm: thread.comm,
        state,
        since_ns,
        call,
        regs,
        kernel_stack: thread.kernel_stack,
        wchan: thread.wchan,
        run_count: thread.run_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that /proc arguments are read with the same layout as at sys_enter.
    #[test]
    fn arguments_follow_the_bpf_layout() {
        let call = SyscallCall::from_args(202, &[0x5000, 128, 2, 0, 0, 0]).unwrap();
        assert_eq!((call.resource, call.detail, call.timeout), (0x5000, 128, 0));
        let call = SyscallCall::from_args(232, &[4, 0x7000, 16, u32::MAX as u64, 0, 0]).unwrap();
        assert_eq!((call.resource, call.timeout), (4, u32::MAX as u64));
        assert!(SyscallCall::from_args(1, &[0; 6]).is_none()); // write: not tracked
    }
}
