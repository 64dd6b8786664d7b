//! What a runtime's own memory says about a process and its blocked threads: the interpreter's
//! or VM's view (`crate::runtime`), recorded as facts beside the native ones.
//!
//! The native facts say *that* a thread waits (a futex, a condvar); a runtime's structures say
//! *what for*: the `threading.RLock` and its owner's thread ident, the Java monitor and its
//! owner thread, the thread a `Thread.join` waits for. They are read once per scan, from memory
//! only, and `stall::analyze` uses them like the futex facts: as input, never re-read.

use serde::{Deserialize, Serialize};

/// What a runtime read about one blocked thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuntimeThread {
    /// The runtime (`cpython`, `hotspot`, `ghc`).
    pub runtime: String,
    /// The runtime's name for the thread (`threading.Thread.name`, the Java thread's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the thread waits for in the runtime's terms, if the runtime knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<RuntimeWait>,
    /// Its frames show it runs an event loop (asyncio's `run_forever`, ...).
    #[serde(default)]
    pub event_loop: bool,
    /// The task or coroutine the event loop is running, named as the runtime names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// What a thread waits for, as its runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuntimeWait {
    /// What kind of wait.
    pub kind: RuntimeWaitKind,
    /// The address of the object waited on (the lock, the monitor, the thread object): its
    /// identity, shared by every thread waiting for it.
    pub object: u64,
    /// The object's type, as the runtime names it (`_thread.RLock`, `java.lang.Object`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The thread holding the lock, or for a join the thread waited for, as a kernel tid;
    /// `None` when it cannot be known (an ownerless lock, an unreadable field, a thread that
    /// is not a live thread of the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_tid: Option<u32>,
}

/// The kinds of wait a runtime can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuntimeWaitKind {
    /// A lock that records its owner (`threading.RLock`, a Java monitor, `ReentrantLock`).
    Lock,
    /// A lock that has no owner to read (`threading.Lock`, a semaphore): nobody can say who
    /// holds it.
    OwnerlessLock,
    /// Waits for a thread to finish (`Thread.join`, `ThreadPoolExecutor.shutdown`).
    Join,
    /// Waits for a signal (a condition, an event, a queue, `Object.wait`).
    Condition,
    /// Waits for the result of work handed to other threads (`concurrent.futures.Future.result`,
    /// Java's `FutureTask.get`, `CompletableFuture.get`): only a thread running that work can
    /// end it. `object` is the future.
    Result,
    /// An OS thread bound to a green thread, waiting in the runtime's scheduler for it to run
    /// again (GHC's main OS thread in `scheduleWaitThread`): what it waits for is whatever
    /// the runtime's green threads wait for (`RuntimeProcess::green_threads`).
    GreenThreads,
}

/// What a runtime read about a whole process at a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuntimeProcess {
    /// The runtime (`cpython`, `hotspot`, `ghc`).
    pub runtime: String,
    /// Its version, as the runtime reports it (`3.11.7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How many interpreters (CPython subinterpreters included) were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreters: Option<u32>,
    /// The runtime's own (green) threads, for runtimes that schedule their own (GHC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub green_threads: Vec<GreenThread>,
    /// The tids of the threads the runtime runs for itself, which never run the program's code
    /// (a JVM's garbage collector, JIT compilers, reference handler, signal dispatcher): they
    /// can end none of the program's waits, whatever they do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_tids: Vec<u32>,
}

/// A thread a runtime schedules itself (a Haskell thread).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GreenThread {
    /// The runtime's id for it.
    pub id: u64,
    /// Its label, if the program set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What it is doing.
    pub state: GreenState,
}

/// What a green thread is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GreenState {
    /// Runnable or running.
    Running,
    /// Blocked taking or putting an MVar.
    BlockedOnMvar,
    /// Blocked in an STM `retry`.
    BlockedOnStm,
    /// Blocked on a thunk another thread is evaluating.
    BlockedOnBlackHole,
    /// In a `threadDelay`.
    Delay,
    /// In a foreign (FFI) call.
    ForeignCall,
    /// Blocked on I/O through the I/O manager.
    BlockedOnIo,
    /// Blocked in `throwTo`.
    BlockedOnThrowTo,
    /// Finished or killed.
    Finished,
    /// Another state, by the runtime's own number.
    Other {
        /// The runtime's number for it.
        code: u32,
    },
}
