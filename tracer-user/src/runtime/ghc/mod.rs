//! GHC's runtime system (the RTS of `-threaded` Haskell programs): its own OS threads, the OS
//! thread that waits for the Haskell main thread, and the Haskell (green) threads.
//!
//! Natively, a blocked GHC program is a set of anonymous condition waits: the RTS parks OS
//! threads in `waitCondition` whenever they have no Haskell code to run. What they are:
//!
//! - **workers** (`workerStart` .. `yieldCapability`) wait for a capability to run Haskell
//!   code on, the **ticker** (`itimer_thread_func`) sleeps while the RTS is idle, the **I/O
//!   and timer managers** are Haskell threads in a foreign call to `epoll_wait`/`poll`: all
//!   idle, not stalls;
//! - the **bound OS thread** of a Haskell thread called from C (`hs_main`'s main thread, a
//!   `forkOS` thread, a foreign export) waits in `scheduleWaitThread` for its Haskell thread.
//!   It is recorded as waiting for green threads ([`RuntimeWaitKind::GreenThreads`]); when
//!   every OS thread of the process has been blocked past the threshold, no capability ran
//!   Haskell code all that time, so the Haskell threads are all blocked (MVar, STM, foreign
//!   calls): the analysis calls it a stall, a likely Haskell-level deadlock the RTS does not
//!   report (it raises `BlockedIndefinitelyOnMVar` only when the blocked threads are
//!   unreachable, not while another thread or a stable pointer keeps them alive).
//!
//! The green threads themselves are read from the RTS's thread lists (`layout`) for the
//! GHC versions whose layout is known. Detection: `libHSrts*.so` among the mappings
//! (a dynamically linked program), or the RTS's heap reservation at `0x4200000000` (its
//! block allocator reserves the address space there first, `rts/posix/OSMem.c`), which a
//! statically linked program shows as its only trace in the mappings; the view then confirms
//! it from the executable's symbols (`symbols`), once per process.

mod layout;
mod symbols;

use std::collections::BTreeMap;

use super::{Memo, ProcessInput, Runtime, ThreadView, View, WaitName};
use crate::{
    model::{Frame, RuntimeProcess, RuntimeThread, RuntimeWait, RuntimeWaitKind, WaitingCode},
    procs::maps::Maps,
};

/// Where GHC's block allocator reserves its heap on 64-bit Linux.
const GHC_HEAP_BASE: u64 = 0x42_0000_0000;

/// The runtime's name.
const NAME: &str = "ghc";

/// GHC's RTS.
pub(super) struct Ghc;

/// What is found once per process.
struct GhcMemo {
    image: Option<symbols::RtsImage>,
}

impl Runtime for Ghc {
    fn name(&self) -> &'static str {
        NAME
    }

    fn detect(&self, maps: &Maps) -> bool {
        maps.iter().any(|m| {
            let file = m.path.rsplit('/').next().unwrap_or_default();
            file.starts_with("libHSrts") || (m.start == GHC_HEAP_BASE && !m.is_file())
        })
    }

    fn wait_names(&self) -> &'static [WaitName] {
        const NAMES: &[WaitName] = &[
            WaitName::new("yieldcapability", WaitingCode::Condition),
            WaitName::new("waitforcapability", WaitingCode::Condition),
            WaitName::new("waitforworkercapability", WaitingCode::Condition),
            WaitName::new("waitcondition", WaitingCode::Condition),
        ];
        NAMES
    }

    fn has_view(&self) -> bool {
        true
    }

    fn view(&self, process: &ProcessInput<'_>, memo: &mut Memo) -> Option<View> {
        let memo = memo.get_or_insert_with(|| {
            Box::new(GhcMemo {
                image: symbols::read(process.pid, process.maps),
            })
        });
        let image = memo.downcast_ref::<GhcMemo>()?.image.as_ref()?;
        let green_threads = match (
            image.threaded,
            image.version.as_deref().and_then(layout::layout_for),
            image.addresses,
        ) {
            (true, Some(layout), Some(rts)) => {
                layout::green_threads(&layout, &rts, process.read_mem).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let threads: BTreeMap<u32, ThreadView> = process
            .blocked
            .iter()
            .filter_map(|b| {
                let facts = thread_facts(classify(b.native)?, b.futex_uaddr);
                Some((
                    b.tid,
                    ThreadView {
                        facts,
                        frames: None,
                    },
                ))
            })
            .collect();
        Some(View {
            process: RuntimeProcess {
                runtime: NAME.into(),
                version: image.version.clone(),
                interpreters: None,
                green_threads,
                service_tids: Vec::new(),
            },
            threads,
        })
    }
}

/// What an OS thread of a GHC program is, by its native frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OsThread {
    /// Waits in the scheduler for the Haskell thread bound to it.
    Bound,
    /// An RTS worker waiting for work.
    Worker,
    /// The RTS's ticker.
    Ticker,
    /// The I/O or timer manager (Haskell threads in a foreign call to epoll/poll).
    IoManager,
}

/// How deep the frames are searched (the RTS functions lie right under the condition wait).
const CLASSIFY_FRAMES: usize = 16;

fn classify(native: &[Frame]) -> Option<OsThread> {
    native
        .iter()
        .take(CLASSIFY_FRAMES)
        .filter_map(|f| f.name.as_deref())
        .find_map(|name| match name {
            "scheduleWaitThread" => Some(OsThread::Bound),
            "scheduleWorker" | "workerStart" => Some(OsThread::Worker),
            "itimer_thread_func" => Some(OsThread::Ticker),
            n if n.starts_with("base:GHC.Event.") => Some(OsThread::IoManager),
            _ => None,
        })
}

/// The facts recorded for an OS thread of the RTS: its role as its name, and for a bound
/// thread, that it waits for green threads (`object`: the futex it sleeps on).
fn thread_facts(kind: OsThread, futex_uaddr: Option<u64>) -> RuntimeThread {
    let name = match kind {
        OsThread::Bound => "bound to a Haskell thread",
        OsThread::Worker => "RTS worker",
        OsThread::Ticker => "RTS ticker",
        OsThread::IoManager => "I/O manager",
    };
    let wait = (kind == OsThread::Bound).then(|| RuntimeWait {
        kind: RuntimeWaitKind::GreenThreads,
        object: futex_uaddr.unwrap_or(0),
        class: None,
        owner_tid: None,
    });
    RuntimeThread {
        runtime: NAME.into(),
        name: Some(name.into()),
        wait,
        event_loop: false,
        task: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::fixtures::frames;

    /// Check that the RTS's OS threads are told apart by the frames GHC 9.0.2's threaded RTS
    /// shows (as `gdb` and stallwatch unwind them).
    #[test]
    fn os_threads_by_frames() {
        let wait = [
            "__futex_abstimed_wait_common",
            "___pthread_cond_wait",
            "waitCondition",
        ];
        let with = |rest: &[&str]| frames(&[&wait[..], rest].concat());
        assert_eq!(
            classify(&with(&[
                "yieldCapability",
                "schedule",
                "scheduleWaitThread",
                "hs_main"
            ])),
            Some(OsThread::Bound)
        );
        assert_eq!(
            classify(&with(&[
                "yieldCapability",
                "schedule",
                "scheduleWorker",
                "workerStart"
            ])),
            Some(OsThread::Worker)
        );
        assert_eq!(
            classify(&with(&["itimer_thread_func", "start_thread"])),
            Some(OsThread::Ticker)
        );
        assert_eq!(
            classify(&frames(&["epoll_wait", "base:GHC.Event.EPoll.new10"])),
            Some(OsThread::IoManager)
        );
        assert_eq!(classify(&frames(&["__sleep", "frame_dummy"])), None);
        let facts = thread_facts(OsThread::Bound, Some(0x3ce0_9318));
        let wait = facts.wait.expect("a bound thread waits for green threads");
        assert_eq!(
            (wait.kind, wait.object),
            (RuntimeWaitKind::GreenThreads, 0x3ce0_9318)
        );
        assert_eq!(thread_facts(OsThread::Worker, None).wait, None);
    }

    /// Check that a GHC program is detected by its heap reservation (statically linked RTS)
    /// or its `libHSrts` (dynamically linked), and nothing else is.
    #[test]
    fn detection() {
        let static_rts = Maps::parse(
            "00400000-004c6000 r-xp 00000000 fe:00 10125760 /tmp/hs/mv\n\
             4200000000-4200200000 rw-p 00000000 00:00 0 \n",
        );
        assert!(Ghc.detect(&static_rts));
        let dynamic = Maps::parse(
            "7f0000000000-7f0000100000 r-xp 00000000 fe:00 42 /usr/lib/ghc/rts/libHSrts_thr-ghc9.0.2.so\n",
        );
        assert!(Ghc.detect(&dynamic));
        let c = Maps::parse("00400000-004c6000 r-xp 00000000 fe:00 1 /usr/bin/cat\n");
        assert!(!Ghc.detect(&c));
    }
}
