//! HotSpot (OpenJDK): which Java thread a blocked thread is, which monitor or `j.u.c` lock it
//! waits for, and which Java thread holds it.
//!
//! A Java deadlock on `synchronized` is invisible natively: both threads sleep in
//! `ObjectMonitor::EnterI` -> `PlatformEvent::park` -> a condvar futex, which reads as a
//! condition wait (and, for the monitor's "responsible" waiter, as a timed one). The VM's own
//! structures say what it is, and `libjvm.so` describes them itself: the serviceability
//! tables ([`vmstructs`]) give every offset by name, found through the library's dynamic
//! symbols ([`symbols`]). They are parsed once per process (the memo); each view then walks
//! the Java thread list and reads, for the blocked threads, their Java name, the monitor they
//! wait to enter with its object's class and owner, or the lock they are parked for
//! ([`threads`]), and their Java frames, walked from the thread's last Java frame through the
//! interpreter's and the compiled methods' frames ([`stack`], [`method`]) and put among the
//! native frames ([`merge`]). Memory is only read, never written; the VM is never stopped or
//! attached to.
//! See `docs/runtimes.md` for the versions covered.

mod codecache;
mod frame_layout;
mod heap;
mod layout;
mod merge;
mod method;
mod scopes;
mod stack;
mod symbols;
mod threads;
mod vmstructs;

use std::collections::{BTreeMap, HashMap};

use codecache::CodeCache;
use frame_layout::FrameLayout;
use heap::Heap;
use layout::Layout;
use method::At;
use threads::JavaThread;
use vmstructs::Reader;

use super::{Memo, ProcessInput, Runtime, ThreadView, View, WaitName};
use crate::{
    model::{Frame, FrameKind, RuntimeProcess, RuntimeThread, WaitingCode},
    procs::maps::Maps,
};

/// Why a JVM could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HotspotError {
    /// The process maps no `libjvm.so`.
    #[error("no libjvm.so mapped")]
    NoLibjvm,
    /// `libjvm.so` could not be opened.
    #[error("cannot open libjvm.so")]
    Open(#[source] std::io::Error),
    /// `libjvm.so` is not a readable ELF file.
    #[error("cannot parse libjvm.so")]
    Elf(#[source] object::Error),
    /// No loadable segment covers the mapping of `libjvm.so`.
    #[error("libjvm.so's mapping matches no loadable segment")]
    NoLoadSegment,
    /// An export the tables need is missing.
    #[error("libjvm.so does not export {0}")]
    MissingSymbol(&'static str),
    /// A table is empty or endless.
    #[error("the VM table {0} is malformed")]
    BadTable(&'static str),
    /// A field, type or constant is not in the tables (another VM version).
    #[error("the VM tables lack {0}")]
    MissingField(String),
    /// Memory could not be read at this address.
    #[error("cannot read the JVM's memory at {0:#x}")]
    Unreadable(u64),
    /// A value read makes no sense (a structure read while it changed).
    #[error("implausible {0}")]
    Implausible(&'static str),
}

/// The runtime's name, as frames and facts record it.
const NAME: &str = "hotspot";

/// HotSpot, the OpenJDK virtual machine.
pub(super) struct Hotspot;

/// What is kept per JVM process.
enum HotspotMemo {
    /// Its layout and what was learnt since.
    Read(Box<Vm>),
    /// It cannot be read (tables missing or unsupported): not tried again.
    Unreadable,
}

/// One JVM's layout and caches.
struct Vm {
    layout: Layout,
    /// The stack walk's layout; `None` if the tables lack part of it (no Java frames then).
    frame_layout: Option<FrameLayout>,
    version: Option<String>,
    field_offsets: HashMap<(u64, &'static str), Option<u64>>,
}

impl Runtime for Hotspot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn detect(&self, maps: &Maps) -> bool {
        maps.iter().any(symbols::is_libjvm)
    }

    /// HotSpot's contended monitor enter and its parking. They rarely decide alone: a monitor
    /// waiter's innermost frames are glibc's condvar (a condition wait); the view's
    /// [`RuntimeWait`](crate::model::RuntimeWait) is what names the lock.
    fn wait_names(&self) -> &'static [WaitName] {
        const LOCK: WaitingCode = WaitingCode::Lock { glibc_mutex: false };
        const NAMES: &[WaitName] = &[
            WaitName::new("objectmonitor::enter", LOCK),
            WaitName::new("objectsynchronizer::enter", LOCK),
            WaitName::new("objectmonitor::wait", WaitingCode::Condition),
            WaitName::new("unsafe_park", WaitingCode::Condition),
        ];
        NAMES
    }

    fn has_view(&self) -> bool {
        true
    }

    fn view(&self, process: &ProcessInput<'_>, memo: &mut Memo) -> Option<View> {
        let reader = Reader {
            read_mem: process.read_mem,
        };
        if memo.is_none() {
            let state = match load(process, &reader) {
                Ok(vm) => HotspotMemo::Read(Box::new(vm)),
                Err(_) => HotspotMemo::Unreadable,
            };
            *memo = Some(Box::new(state));
        }
        let HotspotMemo::Read(vm) = memo.as_mut()?.downcast_mut::<HotspotMemo>()? else {
            return None;
        };
        let vm = &mut **vm;
        let java_threads = threads::java_threads(&reader, &vm.layout).ok()?;
        let mut heap = Heap {
            reader,
            layout: &vm.layout,
            field_offsets: &mut vm.field_offsets,
        };
        let mut views = BTreeMap::new();
        // Read once per view, when a thread has Java frames to walk.
        let mut code_cache: Option<Option<CodeCache>> = None;
        for blocked in process.blocked {
            let Some(thread) = java_threads.iter().find(|t| t.tid == blocked.tid) else {
                continue;
            };
            let name = threads::name(&mut heap, thread).ok();
            let wait = match threads::monitor_wait(&mut heap, thread, &java_threads) {
                Ok(Some(wait)) => Some(wait),
                _ => threads::park_wait(&mut heap, thread, &java_threads)
                    .ok()
                    .flatten(),
            };
            let facts = RuntimeThread {
                runtime: self.name().into(),
                name,
                wait,
                event_loop: false,
                task: None,
            };
            let frames = vm.frame_layout.as_ref().and_then(|l| {
                let cache = code_cache
                    .get_or_insert_with(|| CodeCache::read(&heap.reader, l).ok())
                    .as_ref()?;
                java_stack(&heap.reader, l, cache, thread, blocked.native)
            });
            views.insert(blocked.tid, ThreadView { facts, frames });
        }
        // A thread waiting to enter a monitor is a lock wait however short its current park:
        // on JDK 17 the first waiter re-parks every second, so it is reported even when it is
        // not among the blocked threads (`watch::gather` then pulls it in).
        for thread in &java_threads {
            if views.contains_key(&thread.tid) {
                continue;
            }
            let Ok(Some(wait)) = threads::monitor_wait(&mut heap, thread, &java_threads) else {
                continue;
            };
            let facts = RuntimeThread {
                runtime: self.name().into(),
                name: threads::name(&mut heap, thread).ok(),
                wait: Some(wait),
                event_loop: false,
                task: None,
            };
            views.insert(
                thread.tid,
                ThreadView {
                    facts,
                    frames: None,
                },
            );
        }
        // Threads outside the Java thread list (garbage collectors, the VM thread, the
        // launcher's thread) and the VM's own Java threads never run the program's code.
        let service_tids = process
            .tids
            .iter()
            .copied()
            .filter(|&tid| match java_threads.iter().find(|t| t.tid == tid) {
                Some(thread) => threads::is_service(&mut heap, thread),
                None => true,
            })
            .collect();
        Some(View {
            process: RuntimeProcess {
                runtime: self.name().into(),
                version: vm.version.clone(),
                interpreters: None,
                green_threads: Vec::new(),
                service_tids,
            },
            threads: views,
        })
    }
}

/// The whole user stack of `thread`: its Java frames put among its `native` ones; `None` if
/// it has no Java frames to show.
fn java_stack(
    reader: &Reader<'_>,
    l: &FrameLayout,
    cache: &CodeCache,
    thread: &JavaThread,
    native: &[Frame],
) -> Option<Vec<Frame>> {
    let runs: Vec<Vec<Frame>> = stack::java_frames(reader, l, cache, thread.addr, &thread.stack)
        .into_iter()
        .map(|run| name_run(reader, l, &run))
        .filter(|run: &Vec<Frame>| !run.is_empty())
        .collect();
    if runs.is_empty() {
        return None;
    }
    Some(merge::merge(native, runs, |pc| cache.contains(pc)))
}

/// The frames of one run of Java frames, a compiled frame's inlined methods (innermost first)
/// before it. A frame whose method cannot be read ends its run: what follows is not trusted.
fn name_run(reader: &Reader<'_>, l: &FrameLayout, run: &[stack::RawJavaFrame]) -> Vec<Frame> {
    let mut frames = Vec::new();
    for raw in run {
        let scopes = raw
            .nmethod
            .and_then(|nm| scopes::scopes_at(reader, l, nm, raw.pc).ok())
            .filter(|s| !s.is_empty());
        let at: Vec<(u64, At)> = match (scopes, raw.bcp) {
            (Some(scopes), _) => scopes.iter().map(|s| (s.method, At::Bci(s.bci))).collect(),
            (None, Some(bcp)) => vec![(raw.method, At::Bcp(bcp))],
            (None, None) => vec![(raw.method, At::Unknown)],
        };
        let outermost = at.len() - 1;
        for (i, (method, at)) in at.into_iter().enumerate() {
            let Ok(method) = method::read(reader, l, method, at) else {
                return frames;
            };
            frames.push(Frame {
                addr: raw.pc,
                file: method.file.filter(|_| !method.native),
                line: method.line,
                inlined: i < outermost,
                ..Frame::named(
                    method.name,
                    FrameKind::Interpreted {
                        runtime: NAME.to_owned(),
                    },
                )
            });
        }
    }
    frames
}

/// Finds and parses the VM's tables and takes the layout out of them.
fn load(process: &ProcessInput<'_>, reader: &Reader<'_>) -> Result<Vm, HotspotError> {
    let symbols = symbols::table_symbols(process.pid, process.maps)?;
    let tables = vmstructs::read(reader, &symbols)?;
    let flags = heap::read_flags(reader, &tables)?;
    let layout = Layout::new(&tables, &flags)?;
    let frame_layout = FrameLayout::new(&tables).ok();
    let version = layout
        .vm_release
        .and_then(|at| reader.u64(at).ok())
        .and_then(|release| reader.vec(release, 32).ok())
        .map(|bytes| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        });
    Ok(Vm {
        layout,
        frame_layout,
        version,
        field_offsets: HashMap::new(),
    })
}
