//! CPython: the Python stack of every blocked thread, and what a Python-level wait waits for
//! (the thread a `Thread.join` joins, the `threading.RLock` and its owner), read from the
//! interpreter's memory without ever stopping it.
//!
//! The interpreter's structures change with every minor version. py-spy, used as a library in
//! its non-blocking mode (its default *pauses* the target), knows their layouts for CPython
//! 3.3–3.15 and reads thread states and frames ([`reader`]). What it does not do is done
//! here, each in its own module, on recorded values so that it is unit-tested:
//! - every interpreter of the process, not only the newest that py-spy walks ([`reader`]);
//! - kernel tids on 3.8–3.10, whose thread states hold only the `pthread_t`: the tid's place
//!   in glibc's thread descriptor is calibrated against the process's own threads ([`tids`]);
//! - which object a blocked thread waits for and who owns it ([`waits`], [`objects`]);
//! - the asyncio task an event loop is running ([`asyncio`]);
//! - the Python frames put among the native ones where the eval loop runs them ([`merge`]);
//! - for `profile --python`, where BPF finds each thread's frames and what the frames it
//!   recorded are ([`offcpu`], [`layout`], [`code`], [`code_cache`]).

mod asyncio;
mod code;
mod code_cache;
mod layout;
mod merge;
mod objects;
pub(crate) mod offcpu;
mod reader;
#[cfg(test)]
mod tests_memory;
mod tids;
mod waits;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reader::Reader;

use super::{Memo, ProcessInput, Runtime, ThreadView, View, WaitName};
use crate::{
    model::{RuntimeProcess, RuntimeThread},
    procs::maps::Maps,
};

/// The runtime's name in recordings and frames.
pub(crate) const NAME: &str = "cpython";

/// How long after a failed attempt to find the interpreter it is tried again (the process
/// may not have initialized it yet).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// CPython, 3.7 and later (2.7 and 3.3–3.6: frames of the newest interpreter only).
pub(crate) struct CPython;

/// What is kept per process.
enum State {
    /// The interpreter was found.
    Found(Box<Reader>),
    /// It could not be found at this time.
    NotFound(Instant),
}

impl Runtime for CPython {
    fn name(&self) -> &'static str {
        NAME
    }

    fn detect(&self, maps: &Maps) -> bool {
        maps.code().any(|m| is_python_file(&m.path))
    }

    fn wait_names(&self) -> &'static [WaitName] {
        &[]
    }

    fn has_view(&self) -> bool {
        true
    }

    fn view(&self, process: &ProcessInput<'_>, memo: &mut Memo) -> Option<View> {
        let state = memo.get_or_insert_with(|| Box::new(open(process)));
        let state = state.downcast_mut::<State>()?;
        if let State::NotFound(at) = state
            && at.elapsed() >= RETRY_AFTER
        {
            *state = open(process);
        }
        let State::Found(reader) = state else {
            return None;
        };
        let snapshot = reader.read(process.pid, process.tids, process.read_mem)?;
        let tid_of_ident: BTreeMap<u64, u32> = snapshot
            .threads
            .iter()
            .filter_map(|t| Some((t.ident, t.tid?)))
            .collect();
        let context = waits::Context::new(&snapshot, &tid_of_ident, process.read_mem);
        let mut threads = BTreeMap::new();
        for blocked in process.blocked {
            let Some(thread) = thread_of(&snapshot, blocked.tid) else {
                continue;
            };
            let thread = &thread;
            let event_loop = waits::runs_event_loop(thread);
            let facts = RuntimeThread {
                runtime: NAME.to_owned(),
                name: thread.name.clone(),
                wait: context.wait_of(thread, blocked.futex_uaddr),
                event_loop,
                task: event_loop
                    .then(|| asyncio::running_task(thread, snapshot.version, process.read_mem))
                    .flatten(),
            };
            let frames =
                (!thread.frames.is_empty()).then(|| merge::merge(blocked.native, &thread.frames));
            threads.insert(blocked.tid, ThreadView { facts, frames });
        }
        let process = RuntimeProcess {
            runtime: NAME.to_owned(),
            version: Some(snapshot.version.to_string()),
            interpreters: Some(snapshot.interpreters),
            green_threads: Vec::new(),
            service_tids: Vec::new(),
        };
        Some(View { process, threads })
    }
}

/// Thread `tid` as Python knows it. A thread that runs code in a subinterpreter (`run_string`,
/// `Interpreter.exec`) has a thread state in each interpreter it entered: their frames are
/// joined, the newest interpreter's (innermost) first, and its name is the one the oldest
/// interpreter gave it (a subinterpreter's `threading` calls every thread it did not start
/// `MainThread` or `Dummy-N`).
fn thread_of(snapshot: &PySnapshot, tid: u32) -> Option<PyThread> {
    let mut states = snapshot.threads.iter().filter(|t| t.tid == Some(tid));
    let mut thread = states.next()?.clone();
    for outer in states {
        thread.frames.extend(outer.frames.iter().cloned());
        if outer.name.is_some() {
            thread.name.clone_from(&outer.name);
        }
    }
    Some(thread)
}

fn open(process: &ProcessInput<'_>) -> State {
    match Reader::open(process.pid, process.read_mem) {
        Some(reader) => State::Found(Box::new(reader)),
        None => State::NotFound(Instant::now()),
    }
}

/// Whether a mapped file is a CPython interpreter: `python3.11`, `libpython3.12.so.1.0`
/// (version digits right after the name, so `python-config` or a `pythonista` tool are not).
fn is_python_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"));
    rest.is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// A CPython version, as the interpreter reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PyVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch level.
    pub patch: u64,
}

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl PyVersion {
    /// Whether this is `major.minor` or later.
    pub(crate) fn at_least(self, major: u64, minor: u64) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// What was read from one process at one scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PySnapshot {
    /// The interpreter's version.
    pub version: PyVersion,
    /// How many interpreters were read (the main one and subinterpreters).
    pub interpreters: u32,
    /// Every Python thread of every interpreter.
    pub threads: Vec<PyThread>,
}

/// One Python thread state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PyThread {
    /// `PyThreadState.thread_id`: the `pthread_t`, which `threading.get_ident()` returns and
    /// lock owners record.
    pub ident: u64,
    /// The kernel thread id, if known.
    pub tid: Option<u32>,
    /// `threading.Thread.name`, if the thread has one.
    pub name: Option<String>,
    /// Its frames, innermost first.
    pub frames: Vec<PyFrame>,
}

/// One Python frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PyFrame {
    /// Qualified function name (`co_qualname`; `co_name` before 3.11).
    pub function: String,
    /// Source file.
    pub file: String,
    /// Line being run, 0 if unknown.
    pub line: u32,
    /// The outermost frame run by one call of the eval loop (C code called into Python
    /// there).
    pub entry: bool,
    /// Its local variables: name and object address.
    pub locals: Vec<(String, u64)>,
}

impl PyFrame {
    /// Whether this frame runs `function` (qualified or not) of a file ending in `file`.
    pub(crate) fn is(&self, file: &str, function: &str) -> bool {
        self.file.ends_with(file)
            && (self.function == function
                || self
                    .function
                    .rsplit_once('.')
                    .is_some_and(|(_, f)| f == function))
    }

    /// The object in local variable `name`.
    pub(crate) fn local(&self, name: &str) -> Option<u64> {
        self.locals.iter().find(|(n, _)| n == name).map(|l| l.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that interpreters are recognised by their file names, and look-alikes are not.
    #[test]
    fn python_files() {
        for path in [
            "/usr/bin/python3.11",
            "/root/.pyenv/versions/3.8.18/bin/python3.8",
            "/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0",
            "/opt/python2.7",
        ] {
            assert!(is_python_file(path), "{path}");
        }
        for path in [
            "/usr/bin/python-config",
            "/usr/lib/libc.so.6",
            "/opt/pythonista",
        ] {
            assert!(!is_python_file(path), "{path}");
        }
    }

    /// Check that frames match by file suffix and by plain or qualified function name.
    #[test]
    fn frames_match_qualified_names() {
        let frame = PyFrame {
            function: "Thread.join".into(),
            file: "/usr/lib/python3.11/threading.py".into(),
            ..PyFrame::default()
        };
        assert!(frame.is("/threading.py", "join"));
        assert!(frame.is("/threading.py", "Thread.join"));
        assert!(!frame.is("/queue.py", "join"));
        assert!(!frame.is("/threading.py", "_join"));
        assert_eq!(
            PyVersion {
                major: 3,
                minor: 10,
                patch: 13
            }
            .to_string(),
            "3.10.13"
        );
    }
}
