//! Reads on pipes and FIFOs: waiting for input, or stuck behind its writer?
//!
//! A reader blocked on a pipe is the normal state of every shell pipeline (`tail -f | grep`),
//! every `while read` loop on a FIFO and every child reading its parent's pipe: it waits for
//! input its writer will send when it has some. Calling each of those a stall floods a healthy
//! host with false alarms, so the verdict follows the writer instead:
//!
//! - a writer process with a thread that is alive and not stuck (running, asleep in a timed
//!   wait, polling, waiting for its children or for its own input) will write when it has
//!   something: the reader is `idle`, waiting for input from that process;
//! - writers whose every thread is stuck (indefinite futex waits, uninterruptible sleep) will
//!   not write: the reader is a `stall` behind them;
//! - the only write end held by the reader's own process, which has no other thread: nothing
//!   can ever write (the wait closes a cycle through the reader itself), a `stall`;
//! - no write end visible at all: the writer is somewhere `/proc` does not show (another PID
//!   namespace, an fd in flight in a unix socket message). With no writer at all the read
//!   would have returned EOF, so someone holds it: not a stall, but said so.
//!
//! The writers' threads are facts gathered with the fd (`model::FdHolder::threads`); this
//! module only judges them, so it is driven by hand-made threads in tests.

use super::timing::timing;
use crate::model::{
    BlockedThread, FdAccess, FdHolder, FdType, HolderThread, PipeWriter, Reason, ThreadState,
    Timing, Verdict, WaitKind,
};

/// The verdict of a thread reading a pipe or FIFO, or `None` when it is not reading one (or
/// its other holders were not read).
pub(crate) fn pipe_read_verdict(thread: &BlockedThread) -> Option<(Verdict, Reason)> {
    let call = thread.call?;
    let fd = thread.fd.as_ref()?;
    let reading = matches!(call.kind, WaitKind::Read | WaitKind::Recv)
        && matches!(fd.fd_type, FdType::Pipe | FdType::Fifo)
        && fd.access.is_some_and(FdAccess::reads);
    if !reading {
        return None;
    }
    let writers: Vec<&FdHolder> = fd
        .pipe_peers
        .iter()
        .filter(|h| h.access.is_none_or(FdAccess::writes))
        .collect();
    if writers.is_empty() {
        return Some((Verdict::Idle, Reason::WriterNotVisible));
    }
    // Other processes first: a process's own write end is usually the one it forgot to close.
    let mut ordered = writers.clone();
    ordered.sort_by_key(|h| h.pid == thread.pid);
    let live = ordered
        .iter()
        .find(|h| writer_state(h, thread.tid) == WriterState::Live);
    if let Some(writer) = live {
        return Some((
            Verdict::Idle,
            Reason::WaitingForInput {
                writer: pipe_writer(writer),
            },
        ));
    }
    if ordered
        .iter()
        .all(|h| writer_state(h, thread.tid) == WriterState::OnlyTheReader)
    {
        return Some((Verdict::Stall, Reason::ReadsOwnPipe));
    }
    let stuck = ordered
        .iter()
        .find(|h| writer_state(h, thread.tid) == WriterState::Stuck)
        .unwrap_or(&ordered[0]);
    Some((
        Verdict::Stall,
        Reason::WriterBlocked {
            writer: pipe_writer(stuck),
        },
    ))
}

/// What a process holding a write end can do about the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriterState {
    /// Some thread runs or waits in a way that ends (a timer, a poll, a child, its own
    /// input): it may write. Also a process whose threads could not be read (benefit of the
    /// doubt: a holder seen a moment ago that is gone now has closed its end).
    Live,
    /// Its only thread is the reader itself.
    OnlyTheReader,
    /// Every thread other than the reader waits in a way that does not end by itself.
    Stuck,
}

fn writer_state(holder: &FdHolder, reader_tid: u32) -> WriterState {
    if holder.threads.is_empty() {
        return WriterState::Live;
    }
    let others: Vec<&HolderThread> = holder
        .threads
        .iter()
        .filter(|t| t.tid != reader_tid)
        .collect();
    if others.is_empty() {
        WriterState::OnlyTheReader
    } else if others.iter().any(|t| thread_may_write(t)) {
        WriterState::Live
    } else {
        WriterState::Stuck
    }
}

/// A thread that is not stuck: running, stopped by a signal or a debugger (a person's
/// doing, not a hang), asleep in a timed wait, in a poll, waiting for a child, or waiting
/// for its own input (a pipeline stage whose input is judged on its own).
fn thread_may_write(t: &HolderThread) -> bool {
    match t.state {
        ThreadState::Runnable | ThreadState::Other => true,
        ThreadState::Disk => false,
        ThreadState::Sleeping => t.call.is_some_and(|call| {
            timing(Some(&call)) == Timing::Timed
                || call.kind.is_poll()
                || matches!(
                    call.kind,
                    WaitKind::WaitChild | WaitKind::Read | WaitKind::Recv | WaitKind::Accept
                )
        }),
    }
}

fn pipe_writer(holder: &FdHolder) -> PipeWriter {
    PipeWriter {
        pid: holder.pid,
        comm: holder.comm.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{FdDescription, SyscallCall},
        stall::fixtures,
    };

    const READER_PID: u32 = 100;
    const READER_TID: u32 = 100;

    fn call(nr: u32, kind: WaitKind, timeout: u64) -> SyscallCall {
        SyscallCall {
            nr,
            kind,
            resource: 0,
            detail: 128,
            timeout,
        }
    }

    fn sleeping(tid: u32, call: SyscallCall) -> HolderThread {
        HolderThread {
            tid,
            state: ThreadState::Sleeping,
            call: Some(call),
        }
    }

    fn writer(pid: u32, threads: Vec<HolderThread>) -> FdHolder {
        FdHolder {
            pid,
            comm: Some(format!("w{pid}")),
            fd: 1,
            access: Some(FdAccess::Write),
            threads,
        }
    }

    /// `pid 100` blocked in `read(0)` on a pipe whose other holders are `peers`.
    fn reader(fd_type: FdType, peers: Vec<FdHolder>) -> BlockedThread {
        let mut t = fixtures::futex_thread(READER_PID, READER_TID, "grep", 9_000_000_000);
        t.call = Some(call(0, WaitKind::Read, 0));
        t.fd = Some(FdDescription {
            access: Some(FdAccess::Read),
            pipe_peers: peers,
            ..FdDescription::new(0, fd_type, "pipe:[77]".into())
        });
        t
    }

    fn futex_forever(tid: u32) -> HolderThread {
        sleeping(tid, call(202, WaitKind::Futex, 0))
    }

    /// Check that a `tail -f | grep` reader (tail asleep in nanosleep) and a FIFO reader
    /// whose writer waits for its child (`sleep 1` in a shell loop) wait for input.
    #[test]
    fn live_writers_mean_waiting_for_input() {
        let tail = writer(7, vec![sleeping(7, call(230, WaitKind::Sleep, 0))]);
        let shell = writer(8, vec![sleeping(8, call(61, WaitKind::WaitChild, 0))]);
        for (fd_type, w) in [(FdType::Pipe, tail), (FdType::Fifo, shell)] {
            let pid = w.pid;
            assert_eq!(
                pipe_read_verdict(&reader(fd_type, vec![w])),
                Some((
                    Verdict::Idle,
                    Reason::WaitingForInput {
                        writer: PipeWriter {
                            pid,
                            comm: Some(format!("w{pid}"))
                        }
                    }
                ))
            );
        }
        // A writer polling forever (an event loop) or running is live too.
        let polling = writer(9, vec![sleeping(9, call(232, WaitKind::Epoll, u64::MAX))]);
        let running = writer(
            10,
            vec![HolderThread {
                tid: 10,
                state: ThreadState::Runnable,
                call: None,
            }],
        );
        for w in [polling, running] {
            let verdict = pipe_read_verdict(&reader(FdType::Pipe, vec![w]));
            assert_eq!(verdict.map(|v| v.0), Some(Verdict::Idle));
        }
    }

    /// Check that a reader whose only writer has every thread in an indefinite futex wait (or
    /// in D) is a stall naming that writer, and that one live writer among stuck ones is
    /// enough for idle.
    #[test]
    fn stuck_writers_mean_a_stall() {
        let stuck = writer(7, vec![futex_forever(7), futex_forever(8)]);
        assert_eq!(
            pipe_read_verdict(&reader(FdType::Pipe, vec![stuck.clone()])),
            Some((
                Verdict::Stall,
                Reason::WriterBlocked {
                    writer: PipeWriter {
                        pid: 7,
                        comm: Some("w7".into())
                    }
                }
            ))
        );
        let disk = writer(
            9,
            vec![HolderThread {
                tid: 9,
                state: ThreadState::Disk,
                call: None,
            }],
        );
        let verdict = pipe_read_verdict(&reader(FdType::Pipe, vec![disk]));
        assert_eq!(verdict.map(|v| v.0), Some(Verdict::Stall));
        let live = writer(11, vec![sleeping(11, call(61, WaitKind::WaitChild, 0))]);
        let verdict = pipe_read_verdict(&reader(FdType::Pipe, vec![stuck, live]));
        assert_eq!(verdict.map(|v| v.0), Some(Verdict::Idle));
    }

    /// Check that a single-threaded process reading a pipe whose only write end it holds
    /// itself is a stall (nothing else can write), while with another live thread it waits
    /// for input from itself.
    #[test]
    fn own_write_end() {
        let own = writer(
            READER_PID,
            vec![sleeping(READER_TID, call(0, WaitKind::Read, 0))],
        );
        assert_eq!(
            pipe_read_verdict(&reader(FdType::Pipe, vec![own.clone()])),
            Some((Verdict::Stall, Reason::ReadsOwnPipe))
        );
        let mut two = own;
        two.threads
            .push(sleeping(101, call(230, WaitKind::Sleep, 0)));
        let verdict = pipe_read_verdict(&reader(FdType::Pipe, vec![two]));
        assert_eq!(verdict.map(|v| v.0), Some(Verdict::Idle));
    }

    /// Check that a pipe with no visible write end is not called a stall, and that reads of
    /// other things are left to the ordinary rules.
    #[test]
    fn invisible_writer_and_other_fds() {
        let read_end = FdHolder {
            access: Some(FdAccess::Read),
            ..writer(7, Vec::new())
        };
        assert_eq!(
            pipe_read_verdict(&reader(FdType::Pipe, vec![read_end])),
            Some((Verdict::Idle, Reason::WriterNotVisible))
        );
        let mut socket = reader(FdType::Pipe, Vec::new());
        socket.fd = Some(fixtures::tcp_socket(3, "127.0.0.1:1", "127.0.0.1:2"));
        assert_eq!(pipe_read_verdict(&socket), None);
        let mut futex = reader(FdType::Pipe, Vec::new());
        futex.call = Some(call(202, WaitKind::Futex, 0));
        assert_eq!(pipe_read_verdict(&futex), None);
    }
}
