//! Owned domain types, one model for both commands: what a capture produced, what `watch`
//! gathered and concluded, independent of aya, of the BPF map layout and of `/proc`'s text.
//!
//! `capture` and `inspect` convert kernel data into these; everything after them
//! (symbolization, analysis, export, reports, record and replay) works on them only, so it
//! can be unit-tested with recorded input and no root. The types stages exchange are
//! structured (enums for wait kinds, thread states, fd types, verdicts and their reasons):
//! English is made only in `report`.

mod capture;
mod fd;
mod frame;
mod runtime;
mod verdict;
mod wait;
mod watch;

pub(crate) use capture::{
    Capture, Counters, InFlightWait, Loss, LossReason, OffCpuSample, PollReturns, RawPyFrame,
    RefusedPiLock, ResolvedSample, Waker,
};
pub(crate) use fd::{
    Detail, EpollTarget, FdAccess, FdDescription, FdHolder, FdType, HolderThread, LocalPeer,
    SocketInfo, SocketProtocol, TcpTiming, TimerFdState, WatchedFd,
};
pub(crate) use frame::{Frame, FrameKind, RawStack, StackCopy};
pub(crate) use runtime::{
    GreenState, GreenThread, RuntimeProcess, RuntimeThread, RuntimeWait, RuntimeWaitKind,
};
pub(crate) use verdict::{
    Analysis, Cycle, CycleEdge, Finding, FutexOwner, OwnerSource, PeerRef, PipeWriter, Reason,
    ThreadRef, Timing, Verdict, WaitingCode,
};
pub(crate) use wait::{SyscallCall, ThreadState, UserRegs, WaitKind};
pub(crate) use watch::{BlockedThread, FutexFacts, Origin, ProcessView, WaitKey};
