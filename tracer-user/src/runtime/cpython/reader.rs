//! Reading a CPython process's threads and frames, through py-spy used as a library.
//!
//! py-spy finds the interpreter (symbols, version, the `_PyRuntime` structure) and reads
//! thread states and frames for every CPython version it knows, in its non-blocking mode:
//! memory is read with `process_vm_readv` while the process runs, never paused or ptraced.
//! It walks one interpreter, the one `_PyRuntime.interpreters.head` pointed to when it was
//! opened (the newest); subinterpreters are linked from there by `PyInterpreterState.next`,
//! so this reader follows that list itself every scan (interpreters come and go) and has
//! py-spy read each in turn. Kernel tids missing on 3.8–3.10 are filled in by [`tids`].

use py_spy::{
    Config, PythonSpy,
    config::{LineNo, LockingStrategy},
    python_process_info::PythonProcessInfo,
};

use super::{PyFrame, PySnapshot, PyThread, PyVersion, tids};
use crate::runtime::read_u64;

/// Most interpreters followed in one process (the list is read while it may change).
const MAX_INTERPRETERS: usize = 256;

/// `_Py_DebugOffsets` (3.13+, at the start of `_PyRuntime`) starts with this cookie.
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// Where `_Py_DebugOffsets` keeps the offset of `_PyRuntime.interpreters.head`: after the
/// cookie, the version, the free-threading flag and `runtime_state.size` and `.finalizing`.
const DEBUG_INTERPRETERS_HEAD: u64 = 40;
/// Where it keeps the offset of `PyInterpreterState.next`: after `runtime_state` and
/// `interpreter_state.size` and `.id`.
const DEBUG_INTERPRETER_NEXT: u64 = 64;

/// Where the interpreter list starts and how it is linked, by version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListLayout {
    /// Address of `_PyRuntime.interpreters.head`.
    pub head_at: u64,
    /// Offset of `next` in `PyInterpreterState`.
    pub next_offset: u64,
}

/// An open CPython process.
pub(crate) struct Reader {
    spy: PythonSpy,
    version: PyVersion,
    /// `None` where the interpreter list cannot be followed (before 3.7): only the newest
    /// interpreter is read.
    list: Option<ListLayout>,
    /// The newest interpreter when py-spy was opened.
    opened_head: usize,
    /// Calibrated place of the tid in glibc's thread descriptor (3.8–3.10).
    tid_offset: Option<u64>,
}

/// The CPython version py-spy found in a process and the address of its `_PyRuntime` (where
/// the interpreter list and, from 3.13, the debug offsets start), if the symbol is there.
pub(crate) fn version_and_runtime(spy: &PythonSpy) -> (PyVersion, Option<u64>) {
    let version = PyVersion {
        major: spy.version.major,
        minor: spy.version.minor,
        patch: spy.version.patch,
    };
    let runtime = PythonProcessInfo::new(&spy.process)
        .ok()
        .and_then(|info| info.get_symbol("_PyRuntime").copied());
    (version, runtime)
}

impl Reader {
    /// Finds the interpreter of process `pid`, whose memory `read_mem` reads; `None` if it is
    /// not (yet) a CPython py-spy can read.
    pub(crate) fn open(pid: u32, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Self> {
        let config = Config {
            blocking: LockingStrategy::NonBlocking,
            native: false,
            // Local variables are read for their addresses: the objects a thread waits for.
            dump_locals: 1,
            include_idle: true,
            collect_thread_names: true,
            full_filenames: true,
            lineno: LineNo::LastInstruction,
            ..Config::default()
        };
        let spy = PythonSpy::new(i32::try_from(pid).ok()?, &config).ok()?;
        let (version, runtime) = version_and_runtime(&spy);
        let list = runtime.and_then(|at| list_layout(version, at, read_mem));
        let opened_head = spy.addresses.interpreter_address;
        Some(Self {
            spy,
            version,
            list,
            opened_head,
            tid_offset: None,
        })
    }

    /// Every thread of every interpreter, now. `None` if even the first interpreter could not
    /// be read (the process is exiting, or its memory changed under the reader).
    pub(crate) fn read(
        &mut self,
        pid: u32,
        live_tids: &[u32],
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) -> Option<PySnapshot> {
        let interpreters = match self.list {
            Some(list) => interpreter_list(list, read_mem),
            None => vec![self.opened_head as u64],
        };
        let mut threads = Vec::new();
        let mut read_any = false;
        for &interpreter in &interpreters {
            self.spy.addresses.interpreter_address = interpreter as usize;
            // Thread names are looked up in this interpreter's `threading` module.
            self.spy.python_thread_names.clear();
            let Ok(traces) = self.spy.get_stack_traces() else {
                continue;
            };
            read_any = true;
            threads.extend(traces.into_iter().map(|trace| {
                PyThread {
                    ident: trace.thread_id,
                    tid: trace.os_thread_id.and_then(|t| u32::try_from(t).ok()),
                    name: trace.thread_name,
                    frames: trace
                        .frames
                        .into_iter()
                        .map(|f| PyFrame {
                            function: f.name,
                            file: f.filename,
                            line: u32::try_from(f.line).unwrap_or(0),
                            entry: f.is_entry || f.is_shim_entry,
                            locals: f
                                .locals
                                .unwrap_or_default()
                                .into_iter()
                                .map(|l| (l.name, l.addr as u64))
                                .collect(),
                        })
                        .collect(),
                }
            }));
        }
        self.spy.addresses.interpreter_address = self.opened_head;
        if !read_any {
            return None;
        }
        if threads.iter().any(|t| t.tid.is_none()) {
            self.fill_tids(&mut threads, pid, live_tids, read_mem);
        }
        Some(PySnapshot {
            version: self.version,
            interpreters: u32::try_from(interpreters.len()).unwrap_or(u32::MAX),
            threads,
        })
    }

    /// Kernel tids for thread states that have only their `pthread_t`, through the calibrated
    /// place of the tid in glibc's thread descriptor (calibrated again when it no longer
    /// checks out).
    fn fill_tids(
        &mut self,
        threads: &mut [PyThread],
        pid: u32,
        live_tids: &[u32],
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) {
        // A thread running a subinterpreter has a state in each interpreter, with one ident.
        let mut idents: Vec<u64> = threads.iter().map(|t| t.ident).collect();
        idents.sort_unstable();
        idents.dedup();
        let checks = |offset| tids::check(&idents, offset, live_tids, read_mem);
        if !self.tid_offset.is_some_and(checks) {
            self.tid_offset = tids::calibrate(&idents, pid, live_tids, read_mem);
        }
        let Some(offset) = self.tid_offset else {
            return;
        };
        for thread in threads.iter_mut().filter(|t| t.tid.is_none()) {
            thread.tid = tids::tid_at(thread.ident, offset, live_tids, read_mem);
        }
    }
}

/// Where the interpreter list of a CPython `version` whose `_PyRuntime` is at `runtime`
/// starts, and how it is linked: 3.13+ says so in `_Py_DebugOffsets`; before, the offsets are
/// those of `_PyRuntimeState` and `PyInterpreterState` in each version's headers (`next` is
/// their first field from 3.7 to 3.12).
pub(crate) fn list_layout(
    version: PyVersion,
    runtime: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<ListLayout> {
    let head_offset = match (version.major, version.minor) {
        (3, 7) => 24,
        (3, 8..=10) => 32,
        (3, 11..=12) => 40,
        (3, 13..) => {
            let mut cookie = [0u8; 8];
            if !read_mem(runtime, &mut cookie) || &cookie != DEBUG_COOKIE {
                return None;
            }
            let head = read_u64(runtime + DEBUG_INTERPRETERS_HEAD, read_mem)?;
            let next = read_u64(runtime + DEBUG_INTERPRETER_NEXT, read_mem)?;
            return Some(ListLayout {
                head_at: runtime + head,
                next_offset: next,
            });
        }
        _ => return None,
    };
    Some(ListLayout {
        head_at: runtime + head_offset,
        next_offset: 0,
    })
}

/// Every interpreter, newest first (the main interpreter last).
pub(crate) fn interpreter_list(
    list: ListLayout,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Vec<u64> {
    let mut found = Vec::new();
    let mut next = read_u64(list.head_at, read_mem);
    while let Some(interpreter) = next.filter(|&a| a != 0) {
        if found.contains(&interpreter) || found.len() >= MAX_INTERPRETERS {
            break;
        }
        found.push(interpreter);
        next = read_u64(interpreter + list.next_offset, read_mem);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::Memory;

    const V: fn(u64) -> PyVersion = |minor| PyVersion {
        major: 3,
        minor,
        patch: 0,
    };

    /// Check that the interpreter list is followed from `_PyRuntime` by each version's rule:
    /// fixed offsets before 3.13, `_Py_DebugOffsets` from 3.13, and that a loop in the list
    /// or a missing cookie stop it.
    #[test]
    fn interpreter_lists() {
        let mut memory = Memory::default();
        // 3.11: head at _PyRuntime + 40; next first.
        memory.u64(0x1000 + 40, 0x5000);
        memory.u64(0x5000, 0x6000);
        memory.u64(0x6000, 0);
        let list = list_layout(V(11), 0x1000, &memory.reader()).expect("layout");
        assert_eq!(interpreter_list(list, &memory.reader()), [0x5000, 0x6000]);
        // 3.13: offsets from the debug offsets.
        let mut memory = Memory::default();
        memory.bytes(0x1000, b"xdebugpy");
        memory.u64(0x1000 + 40, 632);
        memory.u64(0x1000 + 64, 7264);
        memory.u64(0x1000 + 632, 0x9000);
        memory.u64(0x9000 + 7264, 0x9000); // a loop
        let list = list_layout(V(13), 0x1000, &memory.reader()).expect("layout");
        assert_eq!(
            list,
            ListLayout {
                head_at: 0x1000 + 632,
                next_offset: 7264
            }
        );
        assert_eq!(interpreter_list(list, &memory.reader()), [0x9000]);
        let empty = Memory::default();
        assert_eq!(list_layout(V(13), 0x1000, &empty.reader()), None);
        assert_eq!(list_layout(V(6), 0x1000, &empty.reader()), None);
    }
}
