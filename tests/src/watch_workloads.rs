//! Launches the `stallwatch watch` workloads and reads their line protocol.
//!
//! `watch` reports live stalls and deadlocks, so its tests need programs that get stuck in a
//! known way and say exactly where: which thread (`tid <role> <TID>`), which mutex
//! (`lock <name> 0x<addr>`), which port (`port <N>`), and when the situation is established
//! (`READY`). The protocol is described in `workloads/watch_common.h`; every program takes
//! `--delay-ms N` (pause after printing its tids, so a tracer can attach before anything blocks)
//! and `--timeout-s N` (it kills itself after N seconds, default 120, so a failed test never
//! leaks a stuck process). [`RunningWorkload`] runs one and kills it on drop.
//!
//! The per-workload modules name the roles, locks and the functions each thread blocks in (all
//! non-inlined, non-tail-calling, so they stay frames on the blocked stack). The helpers at the
//! bottom read `/proc` to check that a thread really is stuck, independently of the tracer.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{
    tracer::{RunOutput, Tracer, run},
    watch_report::WatchOutput,
    workload::python3,
};

/// How long a workload may take to print a protocol line the caller asks for by key.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Printed once the situation under test is established.
pub const READY: &str = "READY";
/// Role of every workload's main thread (which keeps the program's name as its comm).
pub const MAIN: &str = "main";
/// Option: wait this many ms after printing pid and tids before blocking.
pub const DELAY_MS_ARG: &str = "--delay-ms";
/// Option: the workload kills itself after this many seconds (default 120).
pub const TIMEOUT_S_ARG: &str = "--timeout-s";

/// `deadlock_abba.c` ([`crate::deadlock_abba_bin`]): an ABBA deadlock on pthread mutexes, plus
/// a healthy thread in the same process. main blocks in [`JOIN_FUNCTION`] on [`THREAD_A`].
pub mod abba {
    /// Flag: the mutexes use `PTHREAD_PRIO_INHERIT`. The thread that closes the cycle gets
    /// `EDEADLK` from `FUTEX_LOCK_PI` and glibc parks it forever in a futex wait on its own
    /// stack; the other stays in `FUTEX_LOCK_PI` on the mutex it wants.
    pub const PI_FLAG: &str = "--pi";
    /// Holds [`LOCK_A`], blocks on [`LOCK_B`] in [`LOCK_B_WHILE_HOLDING_A`].
    pub const THREAD_A: &str = "abba-a";
    /// Holds [`LOCK_B`], blocks on [`LOCK_A`] in [`LOCK_A_WHILE_HOLDING_B`].
    pub const THREAD_B: &str = "abba-b";
    /// Sleeps 10 ms in [`HEALTHY_SLEEP`] and takes [`LOCK_C`] in [`HEALTHY_TOUCH_C`], forever.
    pub const HEALTHY: &str = "healthy";
    /// First mutex (`pthread_mutex_t` address).
    pub const LOCK_A: &str = "A";
    /// Second mutex.
    pub const LOCK_B: &str = "B";
    /// The healthy thread's uncontended mutex.
    pub const LOCK_C: &str = "C";
    /// Where [`THREAD_A`] takes [`LOCK_A`].
    pub const TAKE_A: &str = "take_a";
    /// Where [`THREAD_B`] takes [`LOCK_B`].
    pub const TAKE_B: &str = "take_b";
    /// Where [`THREAD_A`] blocks forever.
    pub const LOCK_B_WHILE_HOLDING_A: &str = "lock_b_while_holding_a";
    /// Where [`THREAD_B`] blocks forever.
    pub const LOCK_A_WHILE_HOLDING_B: &str = "lock_a_while_holding_b";
    /// The healthy thread's 10 ms nanosleep.
    pub const HEALTHY_SLEEP: &str = "healthy_sleep";
    /// The healthy thread's lock/unlock of [`LOCK_C`].
    pub const HEALTHY_TOUCH_C: &str = "healthy_touch_c";
    /// Where main blocks in `pthread_join` on [`THREAD_A`].
    pub const JOIN_FUNCTION: &str = "await_abba_a";
}

/// `recv_stall.c` ([`crate::recv_stall_bin`]): TCP clients blocked in `recv` on a server that
/// never replies. main blocks in [`JOIN_FUNCTION`] on client-0.
pub mod recv {
    /// Accepts connections forever in [`ACCEPT_FUNCTION`], never sends.
    pub const SERVER: &str = "server";
    /// The blocked clients' roles.
    pub const CLIENTS: [&str; 4] = ["client-0", "client-1", "client-2", "client-3"];
    /// Where the clients block in `recv` (syscall `recvfrom`).
    pub const RECV_FUNCTION: &str = "wait_for_reply";
    /// Where the server blocks in `accept`.
    pub const ACCEPT_FUNCTION: &str = "accept_connection";
    /// Where main blocks in `pthread_join`.
    pub const JOIN_FUNCTION: &str = "join_client";
}

/// `peer_chain.c` ([`crate::peer_chain_bin`]): a client process waiting for replies from a
/// server process on TCP loopback. The first argument is the mode.
pub mod peer_chain {
    /// Mode: [`WORKER_1`] and [`WORKER_2`] deadlock ABBA on [`LOCK_M`] and [`LOCK_M2`]; each
    /// connection's handler thread ([`HANDLERS`]) reads the request and blocks taking
    /// [`LOCK_M`] in [`HANDLE_REQUEST`]. Prints `port N`.
    pub const SERVER_DEADLOCK: &str = "server-deadlock";
    /// Mode: one thread (main) serves in a `select` loop without timeout, reading each request
    /// and keeping it unanswered (a blocking queue pop on an empty queue). Prints `port N`.
    pub const SERVER_HOLD: &str = "server-hold";
    /// Mode: [`CLIENTS`] connect to `--port N`, each sends a request and blocks in `recv` in
    /// [`WAIT_FOR_REPLY`]; main joins client-0.
    pub const CLIENT: &str = "client";
    /// Option of [`CLIENT`]: the server's port.
    pub const PORT_ARG: &str = "--port";
    /// The client threads.
    pub const CLIENTS: [&str; 2] = ["client-0", "client-1"];
    /// The handler threads of the first two connections.
    pub const HANDLERS: [&str; 2] = ["handler-0", "handler-1"];
    /// Holds [`LOCK_M`], waits for [`LOCK_M2`].
    pub const WORKER_1: &str = "worker-1";
    /// Holds [`LOCK_M2`], waits for [`LOCK_M`].
    pub const WORKER_2: &str = "worker-2";
    /// The mutex the handlers take.
    pub const LOCK_M: &str = "M";
    /// The other mutex of the deadlock.
    pub const LOCK_M2: &str = "M2";
    /// Where the handlers block.
    pub const HANDLE_REQUEST: &str = "handle_request";
    /// Where the clients block.
    pub const WAIT_FOR_REPLY: &str = "wait_for_reply";
}

/// `healthy.c` ([`crate::healthy_bin`]): nothing is stuck. Pool workers, main (joining
/// [`TIMER`]) and, between signals, [`CV_WAITER`] wait for long but legitimately.
pub mod healthy {
    /// 20 ms nanosleeps in [`TIMER_SLEEP`]; writes the eventfd every 200 ms.
    pub const TIMER: &str = "timer";
    /// `epoll_wait` with a 100 ms timeout in [`EPOLL_WAIT`].
    pub const EPOLL_LOOP: &str = "epoll-loop";
    /// `pthread_cond_wait` without timeout in [`CV_WAIT`], signalled every 50 ms.
    pub const CV_WAITER: &str = "cv-waiter";
    /// Signals [`CV_WAITER`] after each 50 ms sleep in [`CV_SIGNAL_SLEEP`].
    pub const CV_SIGNAL: &str = "cv-signal";
    /// Idle workers in `pthread_cond_wait` ([`POOL_WAIT`]) on a queue that never gets work.
    pub const POOL: [&str; 3] = ["pool-0", "pool-1", "pool-2"];
    /// Contend on [`LOCK_CONTENDED`]: [`MUTEX_TAKE`], 1 ms [`MUTEX_WORK`], unlock,
    /// 5 ms [`MUTEX_PAUSE`].
    pub const MUTEX_THREADS: [&str; 2] = ["mutex-0", "mutex-1"];
    /// [`CV_WAITER`]'s mutex.
    pub const LOCK_CV: &str = "cv";
    /// The pool's work-queue mutex.
    pub const LOCK_QUEUE: &str = "queue";
    /// The mutex [`MUTEX_THREADS`] contend on.
    pub const LOCK_CONTENDED: &str = "contended";
    /// Function names, as above.
    pub const TIMER_SLEEP: &str = "timer_sleep";
    /// See [`EPOLL_LOOP`].
    pub const EPOLL_WAIT: &str = "epoll_wait_for_tick";
    /// See [`CV_WAITER`].
    pub const CV_WAIT: &str = "cv_wait_for_signal";
    /// See [`CV_SIGNAL`].
    pub const CV_SIGNAL_SLEEP: &str = "cv_signal_sleep";
    /// See [`POOL`].
    pub const POOL_WAIT: &str = "pool_wait_for_work";
    /// See [`MUTEX_THREADS`].
    pub const MUTEX_TAKE: &str = "mutex_take";
    /// See [`MUTEX_THREADS`].
    pub const MUTEX_WORK: &str = "mutex_work";
    /// See [`MUTEX_THREADS`].
    pub const MUTEX_PAUSE: &str = "mutex_pause";
    /// Where main blocks in `pthread_join` on [`TIMER`].
    pub const JOIN_FUNCTION: &str = "join_timer";
}

/// `src/bin/rust_mutex_abba.rs`: an ABBA deadlock on `std::sync::Mutex<u64>`. Only integration
/// tests can find the binary: `env!("CARGO_BIN_EXE_rust_mutex_abba")`. Also reports the tid of
/// its `watchdog` thread (sleeping until the safety timeout).
pub mod rust_abba {
    /// Holds [`LOCK_A`], blocks on [`LOCK_B`] in [`LOCK_B_WHILE_HOLDING_A`].
    pub const THREAD_A: &str = "rust-a";
    /// Holds [`LOCK_B`], blocks on [`LOCK_A`] in [`LOCK_A_WHILE_HOLDING_B`].
    pub const THREAD_B: &str = "rust-b";
    /// Sleeps until the safety timeout, then exits the process.
    pub const WATCHDOG: &str = "watchdog";
    /// First mutex (address of the `Mutex`, whose futex word comes first).
    pub const LOCK_A: &str = "A";
    /// Second mutex.
    pub const LOCK_B: &str = "B";
    /// Where [`THREAD_A`] takes [`LOCK_A`].
    pub const TAKE_A: &str = "rust_take_a";
    /// Where [`THREAD_B`] takes [`LOCK_B`].
    pub const TAKE_B: &str = "rust_take_b";
    /// Where [`THREAD_A`] blocks forever.
    pub const LOCK_B_WHILE_HOLDING_A: &str = "rust_lock_b_while_holding_a";
    /// Where [`THREAD_B`] blocks forever.
    pub const LOCK_A_WHILE_HOLDING_B: &str = "rust_lock_a_while_holding_b";
    /// Where main blocks joining [`THREAD_A`].
    pub const JOIN_FUNCTION: &str = "join_rust_a";
}

/// `workloads/asyncio_blocked.py` (run with [`RunningWorkload::spawn_python`]): an asyncio loop
/// cycling every 50 ms, then blocked by a coroutine. Takes a mode ([`MODE_SLEEP`] or
/// [`MODE_LOCK`]) and `--warmup-s S` (default 3) between `READY` and [`BLOCKING`].
pub mod asyncio {
    /// The script, in `workloads/` (see [`crate::workload_file`]).
    pub const SCRIPT: &str = "asyncio_blocked.py";
    /// Mode: the coroutine calls `time.sleep(600)` (clock_nanosleep).
    pub const MODE_SLEEP: &str = "sleep";
    /// Mode: the coroutine calls `acquire()` on a `threading.Lock` that [`HOLDER`] keeps (futex).
    pub const MODE_LOCK: &str = "lock";
    /// Option: seconds between `READY` and [`BLOCKING`].
    pub const WARMUP_S_ARG: &str = "--warmup-s";
    /// The main thread, which runs the event loop.
    pub const LOOP: &str = "loop";
    /// Lock mode: holds the lock and sleeps forever.
    pub const HOLDER: &str = "holder";
    /// The coroutine that blocks the loop.
    pub const BLOCKING_COROUTINE: &str = "blocking_handler";
    /// Printed immediately before the blocking call.
    pub const BLOCKING: &str = "BLOCKING";
}

/// How long a `watch --once` may run.
pub const ONCE_TIMEOUT: Duration = Duration::from_secs(60);

/// `watch -p PID --once --threshold 1s --json -o OUT`: the run and its report.
pub fn once_json(pid: u32, out: &Path) -> (RunOutput, WatchOutput) {
    let pid = pid.to_string();
    let result = run(
        [
            "watch",
            "-p",
            &pid,
            "--once",
            "--threshold",
            "1s",
            "--json",
            "-o",
            out.to_str().expect("UTF-8 temp path"),
        ],
        ONCE_TIMEOUT,
    );
    let report = WatchOutput::read(out);
    (result, report)
}

/// Starts `stallwatch watch -p PID ARGS` on `workload`, waits until it is attached, and checks
/// the workload had not printed `not_yet` before that (else the test would not test what
/// `watch` traces, only what it reads from `/proc`).
pub fn attach_watch(workload: &RunningWorkload, args: &[&str], not_yet: &str) -> Tracer {
    let pid = workload.pid().to_string();
    let mut command: Vec<&str> = vec!["watch", "-p", &pid];
    command.extend_from_slice(args);
    let mut tracer = Tracer::spawn(&command);
    tracer.wait_tracing();
    assert!(
        !workload.lines().iter().any(|l| l == not_yet),
        "the workload printed {not_yet} before watch attached; raise its {DELAY_MS_ARG}"
    );
    tracer
}

/// Lines a workload printed so far, filled by a reader thread.
#[derive(Default)]
struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutputState {
    lines: Vec<String>,
    /// stdout reached EOF (the process exited or closed it).
    closed: bool,
}

/// A running workload; killed and reaped on drop.
pub struct RunningWorkload {
    name: String,
    child: Child,
    output: Arc<Output>,
}

impl RunningWorkload {
    /// Starts `program` with `args`, stdout piped (read in the background), stderr inherited.
    pub fn spawn(program: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(program);
        command.args(args);
        Self::start(program, command)
    }

    /// Starts `script` with the real `python3` interpreter (so [`pid`](Self::pid) is the
    /// interpreter's).
    pub fn spawn_python(script: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(python3());
        command.arg(script).args(args);
        Self::start(script, command)
    }

    fn start(program: &Path, mut command: Command) -> Self {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let output = Arc::new(Output::default());
        let sink = Arc::clone(&output);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.state.lock().unwrap().lines.push(line);
                sink.changed.notify_all();
            }
            sink.state.lock().unwrap().closed = true;
            sink.changed.notify_all();
        });
        Self {
            name,
            child,
            output,
        }
    }

    /// Waits until the workload prints exactly `line`; panics with everything it printed if it
    /// does not within `timeout` or exits first.
    pub fn wait_for(&self, line: &str, timeout: Duration) {
        self.wait_for_line(&format!("the line {line:?}"), timeout, |l| l == line);
    }

    /// Waits for the first line `matches` accepts and returns it (panics like
    /// [`wait_for`](Self::wait_for)).
    fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.output.state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().find(|l| matches(l)) {
                return line.clone();
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                let why = if state.closed {
                    "exited".to_owned()
                } else {
                    format!("printed nothing more for {timeout:?}")
                };
                let lines = state.lines.join("\n");
                drop(state);
                panic!(
                    "workload {} {why} before {what}; it printed:\n{lines}",
                    self.name
                );
            }
            state = self
                .output
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The value of the line `<key...> <value>` (e.g. `tid main 123` for `["tid", "main"]`),
    /// waiting up to [`STARTUP_TIMEOUT`] for it.
    fn value(&self, key: &[&str]) -> String {
        let line = self.wait_for_line(&format!("{key:?}"), STARTUP_TIMEOUT, |line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.len() == key.len() + 1 && words[..key.len()] == *key
        });
        line.rsplit(' ').next().unwrap_or_default().to_owned()
    }

    /// Everything printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.state.lock().unwrap().lines.clone()
    }

    /// The workload's pid (from its `pid` line).
    pub fn pid(&self) -> u32 {
        let value = self.value(&["pid"]);
        value
            .parse()
            .unwrap_or_else(|e| panic!("bad pid {value:?}: {e}"))
    }

    /// Tid of the thread playing `role`.
    pub fn tid(&self, role: &str) -> u32 {
        let value = self.value(&["tid", role]);
        value
            .parse()
            .unwrap_or_else(|e| panic!("bad tid {value:?}: {e}"))
    }

    /// Every `(role, tid)` reported so far.
    pub fn tids(&self) -> Vec<(String, u32)> {
        self.lines()
            .iter()
            .filter_map(
                |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                    ["tid", role, tid] => Some((role.to_owned(), tid.parse().ok()?)),
                    _ => None,
                },
            )
            .collect()
    }

    /// Address of the mutex called `name`.
    pub fn lock(&self, name: &str) -> u64 {
        let value = self.value(&["lock", name]);
        u64::from_str_radix(value.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("bad lock address {value:?}: {e}"))
    }

    /// The TCP port the workload listens on.
    pub fn port(&self) -> u16 {
        let value = self.value(&["port"]);
        value
            .parse()
            .unwrap_or_else(|e| panic!("bad port {value:?}: {e}"))
    }

    /// Kills the workload (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself (e.g. its safety timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the workload") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "workload {} still running after {timeout:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningWorkload {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `futex` on x86_64.
pub const SYS_FUTEX: i64 = 202;
/// `clock_nanosleep` on x86_64.
pub const SYS_CLOCK_NANOSLEEP: i64 = 230;
/// `recvfrom` on x86_64 (glibc's `recv`).
pub const SYS_RECVFROM: i64 = 45;
/// `recvmsg` on x86_64.
pub const SYS_RECVMSG: i64 = 47;
/// `accept` on x86_64.
pub const SYS_ACCEPT: i64 = 43;
/// `accept4` on x86_64.
pub const SYS_ACCEPT4: i64 = 288;
/// `FUTEX_WAIT` (the low bits of a futex op, without `FUTEX_PRIVATE_FLAG`/`CLOCK_REALTIME`).
pub const FUTEX_WAIT: u64 = 0;
/// `FUTEX_LOCK_PI`.
pub const FUTEX_LOCK_PI: u64 = 6;
/// `FUTEX_WAIT_BITSET` (what glibc's waits use).
pub const FUTEX_WAIT_BITSET: u64 = 9;
/// Mask for the futex command in an op (drops the private and clock flags).
pub const FUTEX_CMD_MASK: u64 = 0x7f;

/// A thread blocked in a syscall, from `/proc/PID/task/TID/syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSyscall {
    /// Syscall number.
    pub nr: i64,
    /// Its six arguments.
    pub args: [u64; 6],
}

impl TaskSyscall {
    /// For a futex syscall: the command without flags (e.g. [`FUTEX_LOCK_PI`]).
    pub fn futex_cmd(&self) -> u64 {
        self.args[1] & FUTEX_CMD_MASK
    }
}

/// The syscall `tid` of `pid` is blocked in; `None` if it is running or not in a syscall.
/// Needs ptrace access to the process (a child of the caller, or root).
pub fn task_syscall(pid: u32, tid: u32) -> Option<TaskSyscall> {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0; 6];
    for arg in &mut args {
        let field = fields.next()?;
        *arg = u64::from_str_radix(field.trim_start_matches("0x"), 16).ok()?;
    }
    Some(TaskSyscall { nr, args })
}

/// How many times `tid` of `pid` has been scheduled in (third field of `schedstat`); unchanged
/// over an interval means the thread never ran.
pub fn task_run_count(pid: u32, tid: u32) -> u64 {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.split_whitespace()
        .nth(2)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("bad {path}: {text:?}"))
}

/// Run counts of `roles` at the start and end of `interval`.
pub fn run_counts_over(
    workload: &RunningWorkload,
    roles: &[&str],
    interval: Duration,
) -> Vec<(String, u64, u64)> {
    let pid = workload.pid();
    let tids: Vec<u32> = roles.iter().map(|r| workload.tid(r)).collect();
    let before: Vec<u64> = tids.iter().map(|&t| task_run_count(pid, t)).collect();
    thread::sleep(interval);
    roles
        .iter()
        .zip(tids.iter().zip(before))
        .map(|(role, (&tid, before))| ((*role).to_owned(), before, task_run_count(pid, tid)))
        .collect()
}

/// Waits up to `timeout` until `role` is blocked in one of the syscalls `nrs` (e.g. a thread
/// that is between two blocking calls, or main right after printing `READY`).
pub fn wait_until_blocked_in(
    workload: &RunningWorkload,
    role: &str,
    nrs: &[i64],
    timeout: Duration,
) -> TaskSyscall {
    let (pid, tid) = (workload.pid(), workload.tid(role));
    let deadline = Instant::now() + timeout;
    loop {
        let sys = task_syscall(pid, tid);
        match sys {
            Some(sys) if nrs.contains(&sys.nr) => return sys,
            _ if Instant::now() >= deadline => {
                panic!(
                    "{role} did not block in one of the syscalls {nrs:?} within {timeout:?}: {sys:?}"
                )
            }
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Panics unless each of `roles` stays in syscall `nr` for all of `interval` without running.
/// Returns the syscall each one is blocked in.
pub fn assert_stuck_in(
    workload: &RunningWorkload,
    roles: &[&str],
    nrs: &[i64],
    interval: Duration,
) -> Vec<TaskSyscall> {
    let pid = workload.pid();
    let syscall_of = |role: &str| {
        let sys = task_syscall(pid, workload.tid(role));
        match sys {
            Some(sys) if nrs.contains(&sys.nr) => sys,
            _ => panic!("{role} is not blocked in one of the syscalls {nrs:?}: {sys:?}"),
        }
    };
    let first: Vec<TaskSyscall> = roles.iter().map(|r| syscall_of(r)).collect();
    for (role, before, after) in run_counts_over(workload, roles, interval) {
        assert_eq!(before, after, "{role} ran during {interval:?}");
    }
    for (role, sys) in roles.iter().zip(&first) {
        assert_eq!(syscall_of(role), *sys, "{role} changed syscall");
    }
    first
}

/// Panics unless every one of `roles` is scheduled at least once during `interval`.
pub fn assert_running(workload: &RunningWorkload, roles: &[&str], interval: Duration) {
    for (role, before, after) in run_counts_over(workload, roles, interval) {
        assert!(after > before, "{role} never ran during {interval:?}");
    }
}

/// Checks the ABBA deadlock of `deadlock_abba` (plain or PI) or `rust_mutex_abba` after
/// `READY`: both threads stay in futex for 1 s, blocked on each other's lock. `pi`: one waits in
/// `FUTEX_LOCK_PI` on the other's lock, the other (which got `EDEADLK`) in a plain futex wait
/// elsewhere (its own stack). Returns both syscalls.
pub fn assert_abba_deadlock(
    workload: &RunningWorkload,
    (thread_a, thread_b): (&str, &str),
    (lock_a, lock_b): (&str, &str),
    pi: bool,
) -> [TaskSyscall; 2] {
    let stuck = assert_stuck_in(
        workload,
        &[thread_a, thread_b],
        &[SYS_FUTEX],
        Duration::from_secs(1),
    );
    let (a, b) = (stuck[0], stuck[1]);
    let (lock_a, lock_b) = (workload.lock(lock_a), workload.lock(lock_b));
    if pi {
        // Which thread closes the cycle (and gets EDEADLK) is a race.
        let (waiter, wanted, parked) = if a.futex_cmd() == FUTEX_LOCK_PI {
            (a, lock_b, b)
        } else {
            (b, lock_a, a)
        };
        assert_eq!(waiter.futex_cmd(), FUTEX_LOCK_PI, "{stuck:x?}");
        assert_eq!(waiter.args[0], wanted, "{stuck:x?}");
        assert!(
            [FUTEX_WAIT, FUTEX_WAIT_BITSET].contains(&parked.futex_cmd()),
            "{stuck:x?}"
        );
        assert!(![lock_a, lock_b].contains(&parked.args[0]), "{stuck:x?}");
    } else {
        for (sys, wanted) in [(a, lock_b), (b, lock_a)] {
            assert!(
                [FUTEX_WAIT, FUTEX_WAIT_BITSET].contains(&sys.futex_cmd()),
                "{stuck:x?}"
            );
            assert_eq!(
                sys.args[0], wanted,
                "futex word is not the lock: {stuck:x?}"
            );
        }
    }
    [a, b]
}

#[cfg(test)]
mod tests;
