//! Python frames in `profile --python`: telling BPF where each Python thread's frames are,
//! and naming the frames it recorded.
//!
//! While tracing, each CPython process's thread list is read (every interpreter's, as
//! [`reader`](super::reader) follows them; the newest only on 2.7 and 3.6, which have no
//! `_PyRuntime` to start the list from) and every thread state is handed to BPF with its
//! version's frame layout ([`layout`](super::layout)), keyed by its kernel tid
//! (`PyThreadState.native_thread_id` from 3.11; before, found from the `pthread_t` in
//! `thread_id` by [`tids`](super::tids)). BPF records code object addresses and instructions;
//! each code object is read once per process ([`code`](super::code)), and at the end the
//! frames are put among the native ones at the eval loop's frames ([`merge`](super::merge)).
//!
//! Threads started between two listings are found by BPF itself (`tracer-ebpf/src/pythreads.rs`)
//! in the thread lists whose place each process's [`PyProcess`] entry gives it.
//!
//! Code objects are read while tracing, a few hundred milliseconds after BPF first stored a
//! stack with them, and kept for the whole run; one whose address another code object took
//! since is read again for the stacks stored after that ([`CodeCache`], which says what is
//! still wrong). A stack first seen in the last moments of a process that then exited has its
//! frames named `[python 0xADDR]`. Processes whose version has no known layout get no Python frames, and
//! are listed so that the run can say so.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::FileExt as _,
    path::Path,
    time::{Duration, Instant},
};

use py_spy::{Config, PythonSpy, config::LockingStrategy};
use tracer_common::{PY_TSTATE_SPAN_BYTES, PyProcess, PyThread, py_marker};

use super::{
    PyFrame, PyVersion,
    code_cache::CodeCache,
    is_python_file,
    layout::{Layout, ThreadId, layout},
    merge,
    reader::{ListLayout, interpreter_list, list_layout, version_and_runtime},
    tids,
};
use crate::{
    model::{Frame, RawPyFrame},
    runtime::read_u64,
};

/// Most thread states followed in one interpreter.
const MAX_THREADS: usize = 4096;
/// How long after a first failed attempt a process is tried again (it may not have
/// initialized its interpreter yet: a COMMAND just started); the wait doubles after each
/// failure up to [`RETRY_AFTER_MAX`], so processes that never become readable cost little.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);

/// The Python processes of one `profile --python` run.
#[derive(Default)]
pub(crate) struct PythonStacks {
    processes: HashMap<u32, Process>,
}

/// What is known of one process.
enum Process {
    /// A CPython being followed.
    Open(Box<OpenProcess>),
    /// Not (yet) a CPython that could be opened: when it was last tried, and how long to wait
    /// before the next try.
    NotNow(Instant, Duration),
    /// A CPython whose version has no layout here: no Python frames, said once at the end.
    Unsupported(PyVersion),
}

/// Why a process could not be opened.
enum OpenFailure {
    /// Not a CPython, not initialized yet, or unreadable: tried again later.
    NotNow,
    /// A CPython of a version without a layout here.
    Unsupported(PyVersion),
}

struct OpenProcess {
    memory: File,
    version: PyVersion,
    layout: Layout,
    interpreters: Interpreters,
    /// Calibrated place of the tid in glibc's thread descriptor (3.10 and older).
    tid_offset: Option<u64>,
    codes: CodeCache,
}

/// Where a process's interpreters are found.
#[derive(Clone, Copy)]
enum Interpreters {
    /// Every interpreter, from `_PyRuntime` (3.7+).
    List(ListLayout),
    /// The one py-spy found, the newest when the process was opened (2.7, 3.6).
    Newest(u64),
}

impl OpenProcess {
    fn open(pid: u32) -> Result<Self, OpenFailure> {
        let spy = Self::spy(pid).ok_or(OpenFailure::NotNow)?;
        let (version, runtime) = version_and_runtime(&spy);
        let memory = File::open(format!("/proc/{pid}/mem")).map_err(|_| OpenFailure::NotNow)?;
        let read_mem = |addr: u64, buf: &mut [u8]| memory.read_exact_at(buf, addr).is_ok();
        let (layout, interpreters) = if version.at_least(3, 7) {
            let runtime = runtime.ok_or(OpenFailure::NotNow)?;
            (
                layout(version, runtime, &read_mem),
                list_layout(version, runtime, &read_mem).map(Interpreters::List),
            )
        } else {
            let newest = spy.addresses.interpreter_address as u64;
            (
                layout(version, 0, &read_mem),
                Some(Interpreters::Newest(newest)),
            )
        };
        let (Some(layout), Some(interpreters)) = (layout, interpreters) else {
            return Err(OpenFailure::Unsupported(version));
        };
        Ok(Self {
            memory,
            version,
            layout,
            interpreters,
            tid_offset: None,
            codes: CodeCache::default(),
        })
    }

    /// py-spy on process `pid`, if it is a CPython py-spy can read now.
    fn spy(pid: u32) -> Option<PythonSpy> {
        // py-spy's own search reads binaries; a look at the maps rules most processes out.
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        if !maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .any(is_python_file)
        {
            return None;
        }
        let config = Config {
            blocking: LockingStrategy::NonBlocking,
            native: false,
            ..Config::default()
        };
        PythonSpy::new(i32::try_from(pid).ok()?, &config).ok()
    }

    fn read_mem(&self) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        |addr, buf| self.memory.read_exact_at(buf, addr).is_ok()
    }
}

impl PythonStacks {
    /// Nothing open yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The Python threads of process `pid` now, each with where BPF finds its frames; `None`
    /// when `pid` is not a CPython this can read (not yet, or not a supported version).
    pub(crate) fn threads(&mut self, pid: u32) -> Option<Vec<(u32, PyThread)>> {
        let process = self.open(pid)?;
        let interpreters = match process.interpreters {
            Interpreters::List(list) => interpreter_list(list, &process.read_mem()),
            Interpreters::Newest(interpreter) => vec![interpreter],
        };
        let states = thread_states(pid, &process.layout, &interpreters, &process.read_mem());
        let mut threads = process.with_tids(pid, states);
        // A forked child keeps its parent's thread states until it runs Python again: only
        // the process's own threads are handed to BPF.
        threads.retain(|(tid, _)| Path::new(&format!("/proc/{pid}/task/{tid}")).exists());
        Some(threads)
    }

    /// Where BPF finds the thread states of process `pid` (its `PY_PROCESSES` entry), to look
    /// up threads started after [`PythonStacks::threads`] listed them; `None` when `pid` is
    /// not a CPython this can read, has no interpreter list (2.7, 3.6), or (3.8-3.10) the tid's
    /// place in glibc's thread descriptor is not known yet.
    pub(crate) fn process(&mut self, pid: u32) -> Option<PyProcess> {
        let process = self.open(pid)?;
        let Interpreters::List(list) = process.interpreters else {
            return None;
        };
        let pthread_tid_offset = match process.layout.thread_id {
            ThreadId::Native(_) => None,
            ThreadId::Pthread(_) => Some(process.tid_offset?),
        };
        process_entry(pid, &process.layout, list, pthread_tid_offset)
    }

    /// Reads the code objects of `python`, a stack just stored by BPF in process `pid`, while
    /// the process still runs (new ones, and those whose address another object has taken
    /// since they were read: [`CodeCache`]); the stack is named from these reads at the end.
    pub(crate) fn learn(&mut self, pid: u32, python: &[RawPyFrame]) {
        if let Some(Process::Open(process)) = self.processes.get_mut(&pid) {
            let memory = &process.memory;
            let read_mem = |addr, buf: &mut [u8]| memory.read_exact_at(buf, addr).is_ok();
            process.codes.learn(python, &process.layout.code, &read_mem);
        }
    }

    /// Every CPython process seen whose version has no layout here, with its version.
    pub(crate) fn unsupported(&self) -> Vec<(u32, String)> {
        let mut found: Vec<(u32, String)> = self
            .processes
            .iter()
            .filter_map(|(&pid, p)| match p {
                Process::Unsupported(v) => Some((pid, v.to_string())),
                _ => None,
            })
            .collect();
        found.sort();
        found
    }

    /// Every process whose Python frames were followed, with its CPython version.
    pub(crate) fn versions(&self) -> Vec<(u32, String)> {
        let mut found: Vec<(u32, String)> = self
            .processes
            .iter()
            .filter_map(|(&pid, p)| match p {
                Process::Open(p) => Some((pid, p.version.to_string())),
                Process::NotNow(..) | Process::Unsupported(_) => None,
            })
            .collect();
        found.sort();
        found
    }

    /// `native` (innermost first) with the Python frames `python` recorded in process `pid`
    /// put in at the eval loop's frames.
    pub(crate) fn splice(
        &mut self,
        pid: u32,
        native: &[Frame],
        python: &[RawPyFrame],
    ) -> Vec<Frame> {
        if python.is_empty() {
            return native.to_vec();
        }
        let (frames, marker) = match self.processes.get_mut(&pid) {
            Some(Process::Open(process)) => (process.frames(python), process.layout.frames.marker),
            _ => (python.iter().map(unnamed).collect(), py_marker::IS_ENTRY),
        };
        merge::merge(native, &runs(python, frames, marker))
    }

    fn open(&mut self, pid: u32) -> Option<&mut OpenProcess> {
        let retry = match self.processes.get(&pid) {
            None => Some(RETRY_AFTER),
            Some(Process::NotNow(at, wait)) => {
                (at.elapsed() >= *wait).then(|| (*wait * 2).min(RETRY_AFTER_MAX))
            }
            Some(Process::Open(_) | Process::Unsupported(_)) => None,
        };
        if let Some(next_wait) = retry {
            let process = match OpenProcess::open(pid) {
                Ok(p) => Process::Open(Box::new(p)),
                Err(OpenFailure::NotNow) => Process::NotNow(Instant::now(), next_wait),
                Err(OpenFailure::Unsupported(version)) => Process::Unsupported(version),
            };
            self.processes.insert(pid, process);
        }
        match self.processes.get_mut(&pid)? {
            Process::Open(p) => Some(p),
            Process::NotNow(..) | Process::Unsupported(_) => None,
        }
    }
}

impl OpenProcess {
    /// The thread states `states` of process `pid` keyed by kernel tid rather than their
    /// thread id: the same on 3.11+; before, the tid in the glibc thread descriptor the
    /// `pthread_t` points to, at the place calibrated on these threads (calibrated again when
    /// it no longer checks out, the last place kept if that fails: a thread state outliving
    /// its thread for a moment must not take every thread's frames away); states whose tid is
    /// not found are left out.
    fn with_tids(&mut self, pid: u32, states: Vec<(u64, PyThread)>) -> Vec<(u32, PyThread)> {
        if let ThreadId::Native(_) = self.layout.thread_id {
            return states
                .into_iter()
                .filter_map(|(id, thread)| Some((u32::try_from(id).ok()?, thread)))
                .collect();
        }
        let live_tids = live_tids(pid);
        let idents: Vec<u64> = states.iter().map(|s| s.0).collect();
        let read_mem = |addr: u64, buf: &mut [u8]| self.memory.read_exact_at(buf, addr).is_ok();
        if !self
            .tid_offset
            .is_some_and(|offset| tids::check(&idents, offset, &live_tids, &read_mem))
            && let Some(offset) = tids::calibrate(&idents, pid, &live_tids, &read_mem)
        {
            self.tid_offset = Some(offset);
        }
        let Some(offset) = self.tid_offset else {
            return Vec::new();
        };
        states
            .into_iter()
            .filter_map(|(ident, thread)| {
                Some((tids::tid_at(ident, offset, &live_tids, &read_mem)?, thread))
            })
            .collect()
    }

    /// A recorded stack's frames named from their code objects, as [`CodeCache`] read them.
    fn frames(&mut self, python: &[RawPyFrame]) -> Vec<PyFrame> {
        let memory = &self.memory;
        let read_mem = |addr, buf: &mut [u8]| memory.read_exact_at(buf, addr).is_ok();
        let names = self.codes.names(python, &self.layout.code, &read_mem);
        python
            .iter()
            .zip(names)
            .map(|(raw, info)| match info {
                Some(info) => PyFrame {
                    function: info.name.clone(),
                    file: info.filename.clone(),
                    line: info.line_at(raw.instr).unwrap_or(0),
                    entry: false,
                    locals: Vec::new(),
                },
                None => unnamed(raw),
            })
            .collect()
    }
}

/// The Python frames with their runs marked (`entry` on the outermost frame of each C call
/// of the eval loop) by the version's `marker` kind; 3.12+ shim frames are dropped, and up to
/// 3.10 every frame is a run of its own.
fn runs(raw: &[RawPyFrame], frames: Vec<PyFrame>, marker: u32) -> Vec<PyFrame> {
    let mut out: Vec<PyFrame> = Vec::with_capacity(frames.len());
    for (raw, mut frame) in raw.iter().zip(frames) {
        if marker == py_marker::FRAME_OBJECT {
            frame.entry = true;
        } else if marker == py_marker::OWNER_CSTACK {
            if raw.marker == py_marker::CSTACK_OWNER_VALUE {
                if let Some(last) = out.last_mut() {
                    last.entry = true;
                }
                continue;
            }
            frame.entry = false;
        } else {
            frame.entry = raw.marker != 0;
        }
        out.push(frame);
    }
    out
}

/// A frame whose code object could not be read.
fn unnamed(raw: &RawPyFrame) -> PyFrame {
    PyFrame {
        function: format!("[python 0x{:x}]", raw.code),
        ..PyFrame::default()
    }
}

/// Process `pid`'s `PY_PROCESSES` entry: its interpreter list and thread-state layout, with
/// the one span of each thread state BPF reads (its `next` and thread id: `native_thread_id`,
/// or up to 3.10 the `pthread_t` whose descriptor holds the tid at `pthread_tid_offset`);
/// `None` if they are not 8-aligned or too far apart for one read.
fn process_entry(
    pid: u32,
    layout: &Layout,
    list: ListLayout,
    pthread_tid_offset: Option<u64>,
) -> Option<PyProcess> {
    let small = |offset: u64| u32::try_from(offset).ok().filter(|o| o % 8 == 0);
    let next = small(layout.thread_next)?;
    let (ThreadId::Native(id_offset) | ThreadId::Pthread(id_offset)) = layout.thread_id;
    let id = small(id_offset)?;
    let span_offset = next.min(id);
    let span_bytes = next.max(id) + 8 - span_offset;
    if span_bytes as usize > PY_TSTATE_SPAN_BYTES {
        return None;
    }
    Some(PyProcess {
        interpreters_head: list.head_at,
        interpreter_next_offset: u32::try_from(list.next_offset).ok()?,
        threads_head_offset: u32::try_from(layout.threads_head).ok()?,
        span_offset,
        span_bytes,
        thread_next_offset: next,
        thread_id_offset: id,
        pthread_tid_offset: match pthread_tid_offset {
            Some(offset) => u32::try_from(offset).ok()?,
            None => u32::MAX,
        },
        _pad: 0,
        frames: PyThread {
            tgid: pid,
            ..layout.frames
        },
    })
}

/// The kernel tids of process `pid` now.
fn live_tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every thread state of `interpreters` with a thread id (the kernel tid from 3.11, the
/// `pthread_t` before), as BPF's `PY_THREADS` entries.
fn thread_states(
    pid: u32,
    layout: &Layout,
    interpreters: &[u64],
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Vec<(u64, PyThread)> {
    let (ThreadId::Native(id_offset) | ThreadId::Pthread(id_offset)) = layout.thread_id;
    let mut found: Vec<(u64, PyThread)> = Vec::new();
    for &interpreter in interpreters {
        let mut in_this: Vec<(u64, u64)> = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut next = read_u64(interpreter + layout.threads_head, read_mem);
        while let Some(tstate) = next.filter(|&a| a != 0) {
            if visited.len() >= MAX_THREADS || !visited.insert(tstate) {
                break;
            }
            let tid = read_u64(tstate + id_offset, read_mem).filter(|&t| t != 0);
            // Two states of one tid in one list: 3.11 makes a new thread's state in the
            // thread that starts it, with the starter's tid, first in the list, until the new
            // thread writes its own; the starter's own state is the older, later one.
            if let Some(tid) = tid {
                in_this.retain(|(t, _)| *t != tid);
                in_this.push((tid, tstate));
            }
            next = read_u64(tstate + layout.thread_next, read_mem);
        }
        // A thread in several interpreters: the one it entered last is the newest, whose
        // list is read first; keep that.
        for (tid, tstate) in in_this {
            if !found.iter().any(|(t, _)| *t == tid) {
                found.push((
                    tid,
                    PyThread {
                        tstate,
                        tgid: pid,
                        ..layout.frames
                    },
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::{layout::layout, tests_memory::Memory};

    fn raw(code: u64, marker: u8) -> RawPyFrame {
        RawPyFrame {
            code,
            instr: 0,
            marker,
        }
    }

    fn named(function: &str) -> PyFrame {
        PyFrame {
            function: function.into(),
            ..PyFrame::default()
        }
    }

    /// Check that runs are cut by `is_entry` on 3.11 and by the shim frames on 3.12+, which
    /// are dropped.
    #[test]
    fn runs_by_marker() {
        let entries = |frames: &[PyFrame]| -> Vec<(String, bool)> {
            frames
                .iter()
                .map(|f| (f.function.clone(), f.entry))
                .collect()
        };
        let raw311 = [raw(0x10, 0), raw(0x20, 1), raw(0x30, 1)];
        let frames = vec![named("inner"), named("worker"), named("<module>")];
        assert_eq!(
            entries(&runs(&raw311, frames.clone(), py_marker::IS_ENTRY)),
            [
                ("inner".into(), false),
                ("worker".into(), true),
                ("<module>".into(), true)
            ]
        );
        assert_eq!(
            entries(&runs(&raw311, frames.clone(), py_marker::FRAME_OBJECT)),
            [
                ("inner".into(), true),
                ("worker".into(), true),
                ("<module>".into(), true)
            ]
        );
        let raw313 = [
            raw(0x10, 0),
            raw(0x20, 1),
            raw(0x40, 3),
            raw(0x30, 0),
            raw(0x50, 3),
        ];
        let frames = vec![
            named("inner"),
            named("generator"),
            named("shim"),
            named("<module>"),
            named("shim"),
        ];
        assert_eq!(
            entries(&runs(&raw313, frames, py_marker::OWNER_CSTACK)),
            [
                ("inner".into(), false),
                ("generator".into(), true),
                ("<module>".into(), true)
            ]
        );
    }

    /// Check that a process entry spans `next` and `native_thread_id` in one read, points at
    /// the interpreter list, carries the frame layout, and that offsets one read cannot cover
    /// give none.
    #[test]
    fn process_entries_span_next_and_tid() {
        let v311 = PyVersion {
            major: 3,
            minor: 11,
            patch: 2,
        };
        let mut layout = layout(v311, 0, &Memory::default().reader()).expect("3.11");
        let list = ListLayout {
            head_at: 0x1028,
            next_offset: 0,
        };
        let entry = process_entry(40, &layout, list, None).expect("entry");
        assert_eq!(entry.interpreters_head, 0x1028);
        assert_eq!(entry.threads_head_offset, 16);
        assert_eq!((entry.span_offset, entry.span_bytes), (8, 160));
        assert_eq!((entry.thread_next_offset, entry.thread_id_offset), (8, 160));
        assert_eq!(entry.pthread_tid_offset, u32::MAX);
        assert_eq!(entry.frames.tgid, 40);
        assert_eq!(entry.frames.tstate, 0);
        assert_eq!(entry.frames.frame_ptr_offset, 56);
        layout.thread_id = ThreadId::Native(8 + PY_TSTATE_SPAN_BYTES as u64);
        assert_eq!(process_entry(40, &layout, list, None), None);
        layout.thread_id = ThreadId::Native(164);
        assert_eq!(process_entry(40, &layout, list, None), None);
        // Up to 3.10 the id is a `pthread_t`, with the tid's place in its descriptor.
        layout.thread_id = ThreadId::Pthread(160);
        let entry = process_entry(40, &layout, list, Some(720)).expect("entry");
        assert_eq!(
            (entry.thread_id_offset, entry.pthread_tid_offset),
            (160, 720)
        );
    }

    /// Check that thread states are listed with their tids and the version's frame layout,
    /// that a thread state without a tid is skipped and that a loop in the list ends.
    #[test]
    fn thread_states_are_listed() {
        let v311 = PyVersion {
            major: 3,
            minor: 11,
            patch: 2,
        };
        let layout = layout(v311, 0, &Memory::default().reader()).expect("3.11");
        let mut memory = Memory::default();
        let interp = 0x1000;
        memory.u64(interp + 16, 0x2000);
        memory.u64(0x2000 + 160, 41);
        memory.u64(0x2000 + 8, 0x3000);
        memory.u64(0x3000 + 160, 0);
        memory.u64(0x3000 + 8, 0x4000);
        memory.u64(0x4000 + 160, 43);
        memory.u64(0x4000 + 8, 0x2000); // a loop back
        let threads = thread_states(40, &layout, &[interp], &memory.reader());
        let tids: Vec<u64> = threads.iter().map(|t| t.0).collect();
        assert_eq!(tids, [41, 43]);
        assert_eq!(threads[1].1.tstate, 0x4000);
        assert_eq!(threads[1].1.tgid, 40);
        assert_eq!(threads[1].1.frame_ptr_offset, 56);
        assert_eq!(threads[1].1.cframe_frame_offset, 8);
    }

    /// Check that a tid with two states in one interpreter's list gets the older (3.11's
    /// state of a thread not started yet carries its starter's tid, first in the list), and
    /// one in two interpreters the newest interpreter's.
    #[test]
    fn thread_states_prefer_the_older_in_a_list_and_the_newer_interpreter() {
        let v311 = PyVersion {
            major: 3,
            minor: 11,
            patch: 2,
        };
        let layout = layout(v311, 0, &Memory::default().reader()).expect("3.11");
        let mut memory = Memory::default();
        let (sub, main) = (0x1000, 0x1800);
        // The main interpreter: a new thread's state with its starter's tid 41, then 41's.
        memory.u64(main + 16, 0x2000);
        memory.u64(0x2000 + 160, 41);
        memory.u64(0x2000 + 8, 0x3000);
        memory.u64(0x3000 + 160, 41);
        memory.u64(0x3000 + 8, 0x4000);
        memory.u64(0x4000 + 160, 42);
        memory.u64(0x4000 + 8, 0);
        // A subinterpreter thread 42 entered.
        memory.u64(sub + 16, 0x5000);
        memory.u64(0x5000 + 160, 42);
        memory.u64(0x5000 + 8, 0);
        let threads = thread_states(40, &layout, &[sub, main], &memory.reader());
        let tstates: Vec<(u64, u64)> = threads.iter().map(|(t, p)| (*t, p.tstate)).collect();
        assert_eq!(tstates, [(42, 0x5000), (41, 0x3000)]);
    }
}
