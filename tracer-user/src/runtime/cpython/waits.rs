//! What a blocked Python thread waits for, from its frames and the objects they hold.
//!
//! The native side sees a futex; the Python frames say what it is:
//! - a `Thread.join` (also inside `ThreadPoolExecutor.shutdown`): the joined `Thread` object is
//!   the join frame's `self`, and every running thread's `Thread` object is the `self` of its
//!   own outermost `_bootstrap_inner` frame, which gives the joined thread's tid;
//! - a wait for a result (`concurrent.futures`' `Future.result`/`exception`, `wait`,
//!   `as_completed`): the future is the frame's `self` (`fs`, the futures, for `wait` and
//!   `as_completed`);
//! - a condition, event, queue or idle executor worker (`Condition.wait`, `queue.get`,
//!   `concurrent.futures`' `_worker`): waiting for a signal, whatever lock it sleeps on;
//! - a `threading.RLock` or `threading.Lock`: the lock object among the locals of the
//!   process's frames whose waited-on address is the futex ([`objects`]). An RLock's owner is its `rlock_owner` ident, mapped to a tid through the thread states;
//!   a Lock has no owner, and none is made up.
//!
//! A lock referenced only from globals or attributes, never from a local variable of a running
//! frame, is not found: the wait is then classified by its native frames (a lock, owner
//! unknown).

use std::{cell::OnceCell, collections::BTreeMap};

use super::{
    PyFrame, PySnapshot, PyThread,
    objects::{self, PyLock},
};
use crate::model::{RuntimeWait, RuntimeWaitKind};

/// How many innermost frames are searched for a join.
const JOIN_FRAMES: usize = 4;
/// How many innermost frames are searched for a wait for a result (below it: `Condition.wait`,
/// `Event.wait`).
const RESULT_FRAMES: usize = 4;
/// Frames (file suffix, function) that wait for the result of work handed to other threads.
const RESULT_FRAMES_NAMED: &[(&str, &str)] = &[
    ("/concurrent/futures/_base.py", "result"),
    ("/concurrent/futures/_base.py", "exception"),
    ("/concurrent/futures/_base.py", "wait"),
    ("/concurrent/futures/_base.py", "as_completed"),
];
/// Innermost frames (file suffix, function) that wait for a signal, whatever they sleep on.
const CONDITION_FRAMES: &[(&str, &str)] = &[
    ("/threading.py", "wait"),
    ("/threading.py", "wait_for"),
    ("/queue.py", "get"),
    ("/queue.py", "put"),
    ("/concurrent/futures/thread.py", "_worker"),
    ("/multiprocessing/pool.py", "worker"),
];
/// Frames that run an asyncio event loop.
const EVENT_LOOP_FRAMES: &[(&str, &str)] = &[
    ("/asyncio/base_events.py", "run_forever"),
    ("/asyncio/base_events.py", "_run_once"),
];

/// One view's worth of what waits are matched against.
pub(crate) struct Context<'a> {
    snapshot: &'a PySnapshot,
    tid_of_ident: &'a BTreeMap<u64, u32>,
    read_mem: &'a dyn Fn(u64, &mut [u8]) -> bool,
    /// `Thread` object address -> tid, from `_bootstrap_inner` frames.
    thread_objects: BTreeMap<u64, u32>,
    /// Every `_thread` lock held in a local variable, with its address (read when first
    /// needed).
    locks: OnceCell<Vec<(u64, PyLock)>>,
}

impl<'a> Context<'a> {
    /// A context over one snapshot; `tid_of_ident` maps thread idents to tids.
    pub(crate) fn new(
        snapshot: &'a PySnapshot,
        tid_of_ident: &'a BTreeMap<u64, u32>,
        read_mem: &'a dyn Fn(u64, &mut [u8]) -> bool,
    ) -> Self {
        let thread_objects = snapshot
            .threads
            .iter()
            .filter_map(|t| {
                let bootstrap = t
                    .frames
                    .iter()
                    .rev()
                    .find(|f| f.is("/threading.py", "_bootstrap_inner"))?;
                Some((bootstrap.local("self")?, t.tid?))
            })
            .collect();
        Self {
            snapshot,
            tid_of_ident,
            read_mem,
            thread_objects,
            locks: OnceCell::new(),
        }
    }

    /// What `thread`, sleeping on the futex at `futex_uaddr` if any, waits for.
    pub(crate) fn wait_of(
        &self,
        thread: &PyThread,
        futex_uaddr: Option<u64>,
    ) -> Option<RuntimeWait> {
        if let Some(join) = thread
            .frames
            .iter()
            .take(JOIN_FRAMES)
            .find(|f| f.is("/threading.py", "join"))
        {
            let object = join.local("self")?;
            return Some(RuntimeWait {
                kind: RuntimeWaitKind::Join,
                object,
                class: objects::type_name(object, self.read_mem),
                owner_tid: self.thread_objects.get(&object).copied(),
            });
        }
        if let Some(waiting) = thread.frames.iter().take(RESULT_FRAMES).find(|f| {
            RESULT_FRAMES_NAMED
                .iter()
                .any(|(file, name)| f.is(file, name))
        }) {
            let object = waiting.local("self").or_else(|| waiting.local("fs"));
            return Some(RuntimeWait {
                kind: RuntimeWaitKind::Result,
                object: object.unwrap_or(0),
                class: object
                    .and_then(|o| objects::type_name(o, self.read_mem))
                    .map(|name| match name.as_str() {
                        "Future" => "concurrent.futures.Future".to_owned(),
                        _ => name,
                    }),
                owner_tid: None,
            });
        }
        let innermost = thread.frames.first()?;
        if CONDITION_FRAMES
            .iter()
            .any(|(file, f)| innermost.is(file, f))
        {
            let object = innermost
                .local("self")
                .or_else(|| innermost.locals.first().map(|l| l.1))
                .unwrap_or(0);
            return Some(RuntimeWait {
                kind: RuntimeWaitKind::Condition,
                object,
                class: (object != 0)
                    .then(|| objects::type_name(object, self.read_mem))
                    .flatten(),
                owner_tid: None,
            });
        }
        self.lock_wait(futex_uaddr?)
    }

    /// The `_thread` lock whose waiters sleep on the futex at `uaddr`.
    fn lock_wait(&self, uaddr: u64) -> Option<RuntimeWait> {
        let (object, lock) = self.locks().iter().find(|(_, lock)| match *lock {
            PyLock::RLock { waited_at, .. } | PyLock::Lock { waited_at } => waited_at == uaddr,
        })?;
        Some(match *lock {
            PyLock::RLock { owner_ident, .. } => RuntimeWait {
                kind: RuntimeWaitKind::Lock,
                object: *object,
                class: Some("_thread.RLock".to_owned()),
                owner_tid: self.tid_of_ident.get(&owner_ident).copied(),
            },
            PyLock::Lock { .. } => RuntimeWait {
                kind: RuntimeWaitKind::OwnerlessLock,
                object: *object,
                class: Some("_thread.lock".to_owned()),
                owner_tid: None,
            },
        })
    }

    fn locks(&self) -> &[(u64, PyLock)] {
        self.locks.get_or_init(|| {
            let mut seen = BTreeMap::new();
            let locals = self
                .snapshot
                .threads
                .iter()
                .flat_map(|t| &t.frames)
                .flat_map(|f| &f.locals);
            for &(_, object) in locals {
                if object == 0 || seen.contains_key(&object) {
                    continue;
                }
                let lock = objects::type_name(object, self.read_mem).and_then(|name| {
                    objects::read_lock(object, &name, self.snapshot.version, self.read_mem)
                });
                seen.insert(object, lock);
            }
            seen.into_iter()
                .filter_map(|(object, lock)| Some((object, lock?)))
                .collect()
        })
    }
}

/// Whether the thread's frames run an asyncio event loop.
pub(crate) fn runs_event_loop(thread: &PyThread) -> bool {
    thread.frames.iter().any(|f: &PyFrame| {
        EVENT_LOOP_FRAMES
            .iter()
            .any(|(file, name)| f.is(file, name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::{PyVersion, tests_memory::Memory};

    fn frame(file: &str, function: &str, locals: &[(&str, u64)]) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: file.into(),
            line: 1,
            entry: true,
            locals: locals.iter().map(|(n, a)| ((*n).into(), *a)).collect(),
        }
    }

    fn thread(ident: u64, tid: u32, frames: Vec<PyFrame>) -> PyThread {
        PyThread {
            ident,
            tid: Some(tid),
            name: None,
            frames,
        }
    }

    const THREADING: &str = "/usr/lib/python3.11/threading.py";

    /// Types at 0x2000 (RLock) and 0x4000 (lock); RLock A at 0x1000 waited on at 0xa000, held
    /// by ident 0x71 (tid 11); RLock B at 0x1100 waited on at 0xb000, held by ident 0x72 (tid
    /// 12); Lock C at 0x3000 waited on at 0xc000.
    fn memory() -> Memory {
        let mut memory = Memory::default();
        for (type_object, name_at, name) in [
            (0x2000u64, 0x2800u64, &b"_thread.RLock\0"[..]),
            (0x4000, 0x4800, b"_thread.lock\0"),
        ] {
            memory.u64(type_object + 24, name_at);
            memory.bytes(name_at, name);
            memory.bytes(name_at + name.len() as u64, &[0u8; 128]);
        }
        for (object, type_object, waited_at, owner) in [
            (0x1000u64, 0x2000u64, 0xa000u64, 0x71u64),
            (0x1100, 0x2000, 0xb000, 0x72),
            (0x3000, 0x4000, 0xc000, 0),
        ] {
            memory.u64(object + 8, type_object);
            memory.u64(object + 16, waited_at);
            memory.u64(object + 24, owner);
        }
        memory
    }

    fn snapshot(minor: u64, threads: Vec<PyThread>) -> PySnapshot {
        PySnapshot {
            version: PyVersion {
                major: 3,
                minor,
                patch: 0,
            },
            interpreters: 1,
            threads,
        }
    }

    /// Check an RLock ABBA: each thread's wait is the RLock whose waited-on address is its
    /// futex, owned by the other thread; a plain Lock is found but gets no owner.
    #[test]
    fn rlocks_and_locks_before_3_13() {
        let memory = memory();
        let read = memory.reader();
        let worker = |a, b| frame("/app.py", "worker", &[("first", a), ("second", b)]);
        let snap = snapshot(
            11,
            vec![
                thread(0x71, 11, vec![worker(0x1000, 0x1100)]),
                thread(0x72, 12, vec![worker(0x1100, 0x1000)]),
                thread(
                    0x73,
                    13,
                    vec![frame("/app.py", "plain", &[("lock", 0x3000)])],
                ),
            ],
        );
        let idents = BTreeMap::from([(0x71, 11), (0x72, 12), (0x73, 13)]);
        let context = Context::new(&snap, &idents, &read);
        let wait = context
            .wait_of(&snap.threads[0], Some(0xb000))
            .expect("a wait");
        assert_eq!(
            wait,
            RuntimeWait {
                kind: RuntimeWaitKind::Lock,
                object: 0x1100,
                class: Some("_thread.RLock".into()),
                owner_tid: Some(12)
            }
        );
        let wait = context
            .wait_of(&snap.threads[1], Some(0xa000))
            .expect("a wait");
        assert_eq!(wait.owner_tid, Some(11));
        let wait = context
            .wait_of(&snap.threads[2], Some(0xc000))
            .expect("a wait");
        assert_eq!(wait.kind, RuntimeWaitKind::OwnerlessLock);
        assert_eq!(wait.owner_tid, None);
        assert_eq!(context.wait_of(&snap.threads[2], Some(0xd000)), None);
        assert_eq!(context.wait_of(&snap.threads[2], None), None);
    }

    /// Check that a join names the joined thread through its `_bootstrap_inner` frame, even
    /// inside `ThreadPoolExecutor.shutdown`, that `Future.result` (above its condition) is a
    /// wait for a result, and that condition waits are not locks.
    #[test]
    fn joins_and_conditions() {
        let memory = memory();
        let read = memory.reader();
        let joiner = thread(
            0x71,
            11,
            vec![
                frame(
                    THREADING,
                    "Thread._wait_for_tstate_lock",
                    &[("lock", 0x3000)],
                ),
                frame(THREADING, "Thread.join", &[("self", 0x5000)]),
                frame(
                    "/usr/lib/python3.11/concurrent/futures/thread.py",
                    "ThreadPoolExecutor.shutdown",
                    &[],
                ),
                frame("/app.py", "main", &[]),
            ],
        );
        let worker = thread(
            0x72,
            12,
            vec![
                frame("/usr/lib/python3.11/socket.py", "recv", &[]),
                frame(THREADING, "Thread.run", &[]),
                frame(THREADING, "Thread._bootstrap_inner", &[("self", 0x5000)]),
                frame(THREADING, "Thread._bootstrap", &[]),
            ],
        );
        let waiter = thread(
            0x73,
            13,
            vec![
                frame(
                    THREADING,
                    "Condition.wait",
                    &[("self", 0x6000), ("waiter", 0x3000)],
                ),
                frame(THREADING, "Event.wait", &[]),
            ],
        );
        let snap = snapshot(11, vec![joiner, worker, waiter]);
        let idents = BTreeMap::new();
        let context = Context::new(&snap, &idents, &read);
        let join = context
            .wait_of(&snap.threads[0], Some(0xc000))
            .expect("join");
        assert_eq!(
            (join.kind, join.object, join.owner_tid),
            (RuntimeWaitKind::Join, 0x5000, Some(12))
        );
        let wait = context
            .wait_of(&snap.threads[2], Some(0xc000))
            .expect("condition");
        assert_eq!(
            (wait.kind, wait.object),
            (RuntimeWaitKind::Condition, 0x6000)
        );
        assert!(!runs_event_loop(&snap.threads[0]));
        let result_waiter = thread(
            0x74,
            14,
            vec![
                frame(THREADING, "Condition.wait", &[("self", 0x6000)]),
                frame(
                    "/usr/lib/python3.11/concurrent/futures/_base.py",
                    "Future.result",
                    &[("self", 0x1000), ("timeout", 0)],
                ),
                frame("/app.py", "main", &[]),
            ],
        );
        let wait = context
            .wait_of(&result_waiter, Some(0xc000))
            .expect("result");
        assert_eq!(
            (wait.kind, wait.object, wait.owner_tid),
            (RuntimeWaitKind::Result, 0x1000, None)
        );
        let looping = thread(
            1,
            1,
            vec![frame(
                "/usr/lib/python3.11/asyncio/base_events.py",
                "BaseEventLoop.run_forever",
                &[],
            )],
        );
        assert!(runs_event_loop(&looping));
    }
}
