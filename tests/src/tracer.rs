//! Runs `stallwatch` in the foreground or background and captures what it prints.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    os::unix::process::ExitStatusExt,
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::nodebug;

/// How long loading and attaching the BPF programs may take on a slow VM.
pub const TRACING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tracer may take to exit after its workload ended or it was signalled.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a finished `stallwatch` run ended and what it printed.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

impl RunOutput {
    /// Panics unless the run exited with `code`, quoting stderr.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "stallwatch exit code (signal {:?}); stderr:\n{}",
            self.signal,
            self.stderr
        );
    }

    /// True if stderr has a line starting with `Tracing`.
    pub fn started_tracing(&self) -> bool {
        self.stderr.lines().any(|l| l.starts_with("Tracing"))
    }
}

/// A `stallwatch` process started by a test; killed on drop if still running.
pub struct Tracer {
    child: Child,
    started: Instant,
    stderr_lines: Receiver<String>,
    stderr_text: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout_reader: Option<JoinHandle<String>>,
}

impl Tracer {
    /// Starts `stallwatch ARGS` with stdout and stderr captured (stdin is null); without libc's
    /// debug files if this thread hides them ([`nodebug::HiddenDebugFiles`]).
    pub fn spawn<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = args.into_iter().map(|a| a.as_ref().to_owned());
        let mut command = nodebug::stallwatch_command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));

        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdout_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });

        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let (tx, stderr_lines) = mpsc::channel();
        let text = Arc::clone(&stderr_text);
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut text = text.lock().expect("stderr buffer");
                    text.push_str(&line);
                    text.push('\n');
                }
                let _ = tx.send(line);
            }
        });

        Self {
            child,
            started,
            stderr_lines,
            stderr_text,
            stderr_reader: Some(stderr_reader),
            stdout_reader: Some(stdout_reader),
        }
    }

    /// Process id of the tracer.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_text.lock().expect("stderr buffer").clone()
    }

    /// Blocks until stderr has a line starting with `Tracing` or `Watching` (BPF attached). Panics with the
    /// stderr so far if the tracer exits first or [`TRACING_TIMEOUT`] passes.
    pub fn wait_tracing(&mut self) {
        let deadline = Instant::now() + TRACING_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.starts_with("Tracing") || line.starts_with("Watching") => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "no `Tracing` line from stallwatch within {TRACING_TIMEOUT:?}; stderr:\n{}",
                        self.stderr_so_far()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!(
                        "stallwatch ended ({status:?}) before printing `Tracing`; stderr:\n{}",
                        self.stderr_so_far()
                    );
                }
            }
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the tracer.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, which has
        // not been reaped yet (we hold the Child), so it cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the tracer to exit on its own within `timeout`; kills it and panics otherwise.
    pub fn wait(mut self, timeout: Duration) -> RunOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "stallwatch did not exit within {timeout:?}; stderr:\n{}",
                        self.stderr_so_far()
                    );
                }
                Err(e) => panic!("waiting for stallwatch: {e}"),
            }
        };
        let elapsed = self.started.elapsed();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stdout = self
            .stdout_reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default();
        RunOutput {
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr: self.stderr_so_far(),
            elapsed,
        }
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop(self, signal: libc::c_int) -> RunOutput {
        self.signal(signal);
        self.wait(EXIT_TIMEOUT)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `stallwatch ARGS` to completion (at most `timeout`).
pub fn run<I, S>(args: I, timeout: Duration) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Tracer::spawn(args).wait(timeout)
}
