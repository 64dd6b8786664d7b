//! Drives the `offcpu_sites` workload and reads its ground truth.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::offcpu_sites_bin;

/// How long the workload may take from `go` to its result line.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Sleeps of 20 ms in `site_nanosleep`.
pub const SLEEP: &str = "sw-sleep";
/// Sleeps of 1 ms in `site_short_sleep`.
pub const SHORT: &str = "sw-short";
/// 20 ms epoll_wait timeouts in `site_epoll_wait`.
pub const EPOLL: &str = "sw-epoll";
/// Pipe reads in `site_pipe_read`, fed every 20 ms by [`WRITER`].
pub const PIPE: &str = "sw-pipe";
/// Writes the pipe.
pub const WRITER: &str = "sw-writer";
/// Condvar waits in `pthread_cond_wait`, signalled every 20 ms by [`SIGNAL`].
pub const CONDVAR: &str = "sw-condvar";
/// Signals the condvar.
pub const SIGNAL: &str = "sw-signal";
/// Same as [`SLEEP`]; must vanish when tracing only [`SLEEP`]'s tid.
pub const TIDTEST: &str = "sw-tidtest";
/// The function every thread blocks in before the measured phase (not part of any site).
pub const GATE_FUNCTION: &str = "gate_wait";

/// The user function each frame-pointer-friendly site blocks in.
pub fn site_function(thread: &str) -> Option<&'static str> {
    match thread {
        SLEEP | TIDTEST => Some("site_nanosleep"),
        SHORT => Some("site_short_sleep"),
        EPOLL => Some("site_epoll_wait"),
        PIPE => Some("site_pipe_read"),
        _ => None,
    }
}

/// First line: the workload's pid and its threads' tids by name.
#[derive(Clone, Debug, Deserialize)]
pub struct Tids {
    /// Process id.
    pub pid: u32,
    /// Tid of each named thread.
    pub tids: BTreeMap<String, u32>,
}

impl Tids {
    /// Tid of `thread`; panics if the workload did not report it.
    pub fn tid(&self, thread: &str) -> u32 {
        *self
            .tids
            .get(thread)
            .unwrap_or_else(|| panic!("workload reported no thread {thread}: {self:?}"))
    }
}

/// Last line: what each blocking thread measured.
#[derive(Clone, Debug, Deserialize)]
pub struct SiteResults {
    /// Process id.
    pub pid: u32,
    /// Ground truth per thread name.
    pub sites: BTreeMap<String, SiteTruth>,
}

impl SiteResults {
    /// Ground truth of `thread`; panics if missing.
    pub fn site(&self, thread: &str) -> &SiteTruth {
        self.sites
            .get(thread)
            .unwrap_or_else(|| panic!("workload reported no site {thread}: {self:?}"))
    }
}

/// Blocked time one thread measured around its blocking calls.
#[derive(Clone, Debug, Deserialize)]
pub struct SiteTruth {
    /// Thread id.
    pub tid: u32,
    /// Sum of the measured blocking calls.
    pub blocked_ns: u64,
    /// Number of blocking calls.
    pub count: u64,
    /// The longest blocking call.
    pub longest_ns: u64,
}

impl SiteTruth {
    /// Blocked time in microseconds, the unit of folded values.
    pub fn blocked_us(&self) -> u64 {
        self.blocked_ns / 1000
    }
}

/// A running `offcpu_sites` waiting for `go`; killed on drop if still running.
pub struct OffcpuSites {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The tids line.
    pub tids: Tids,
}

impl OffcpuSites {
    /// Starts the workload with `iterations` and reads its tids line.
    pub fn spawn(iterations: u32) -> Self {
        Self::spawn_binary(offcpu_sites_bin(), iterations)
    }

    /// Starts a build of the workload (`binary`) with `iterations` and reads its tids line.
    pub fn spawn_binary(binary: &Path, iterations: u32) -> Self {
        let mut child = Command::new(binary)
            .args(["--iterations", &iterations.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(WORKLOAD_TIMEOUT)
            .unwrap_or_else(|e| panic!("no tids line from offcpu_sites: {e}"));
        let tids = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("bad tids line from offcpu_sites ({e}): {first}"));
        Self {
            child,
            stdin,
            lines,
            tids,
        }
    }

    /// Starts the measured phase.
    pub fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go sent twice");
        stdin
            .write_all(b"go\n")
            .expect("writing go to offcpu_sites");
    }

    /// Waits for the measured phase to end and returns the ground truth.
    pub fn finish(mut self) -> SiteResults {
        let line = self
            .lines
            .recv_timeout(WORKLOAD_TIMEOUT)
            .unwrap_or_else(|e| panic!("no result line from offcpu_sites: {e}"));
        let deadline = Instant::now() + WORKLOAD_TIMEOUT;
        loop {
            match self.child.try_wait().expect("waiting for offcpu_sites") {
                Some(status) => {
                    assert!(status.success(), "offcpu_sites failed: {status}");
                    break;
                }
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                None => panic!("offcpu_sites did not exit after its result line"),
            }
        }
        parse_results(&line)
    }
}

impl Drop for OffcpuSites {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses a result line (`{"pid":..,"sites":{..}}`).
pub fn parse_results(line: &str) -> SiteResults {
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad result line from offcpu_sites ({e}): {line}"))
}

/// Finds the workload's result line in mixed output (e.g. a tracer's stdout in COMMAND mode).
pub fn find_results(output: &str) -> SiteResults {
    let line = output
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"sites\""))
        .unwrap_or_else(|| panic!("no offcpu_sites result line in:\n{output}"));
    parse_results(line)
}

/// What `py_sleep.py` measured.
#[derive(Clone, Debug, Deserialize)]
pub struct PySleepResult {
    /// Process id of the interpreter.
    pub pid: u32,
    /// Sum of the measured sleeps.
    pub slept_ns: u64,
    /// Number of sleeps.
    pub count: u64,
}

/// The real Python interpreter (not a pyenv shim, which would run other processes first).
pub fn python3() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for the Python workload: {e}"));
    assert!(output.status.success(), "python3 failed: {output:?}");
    String::from_utf8(output.stdout)
        .expect("python path is UTF-8")
        .trim()
        .to_owned()
}
