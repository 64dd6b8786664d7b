//! A tracer running in the background for one benchmark run: start it, wait until it is
//! attached, end it with SIGINT the way a user would (so it writes its output), and keep its
//! output for error messages.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util;

/// How long a tracer may take to attach, and to exit after SIGINT.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait before repeating SIGINT (see [`Spec::resend_sigint`]).
const RESEND_INTERVAL: Duration = Duration::from_secs(5);

/// How to tell that a tracer has attached.
#[derive(Clone, Copy)]
pub(super) enum Ready {
    /// It printed a line (on stdout or stderr) starting with this text.
    Line(&'static str),
    /// It printed such a line, or its process holds BPF programs (for tools that print nothing,
    /// or whose stdout is block-buffered into our pipe); a short settle delay covers the attach.
    LineOrPrograms(&'static str),
}

/// The command line of a tracer.
#[derive(Clone)]
pub(super) struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub ready: Ready,
    /// Repeat SIGINT every few seconds until it exits: bpftrace 0.17 was seen to miss the first
    /// one. Not for stallwatch, whose output writing a second SIGINT could cut short.
    pub resend_sigint: bool,
    /// Exit codes that mean success besides 0 (`stallwatch watch` exits 10 or 11 when it
    /// found stalls, which a host-wide run may).
    pub ok_codes: &'static [i32],
}

/// A started, attached tracer.
pub(super) struct Running {
    child: Child,
    resend_sigint: bool,
    ok_codes: &'static [i32],
    lines: Receiver<String>,
    log: Vec<String>,
    shown: String,
}

impl Running {
    /// Spawn `spec` and wait until it is attached. `programs_appeared(pid)` is polled for
    /// [`Ready::LineOrPrograms`].
    pub(super) fn start(
        spec: &Spec,
        programs_appeared: impl Fn(u32) -> bool,
    ) -> anyhow::Result<Self> {
        let mut command = util::cmd(&spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = util::describe(&command);
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start `{shown}`"))?;
        let (tx, lines) = mpsc::channel();
        forward_lines(child.stdout.take().expect("piped"), tx.clone());
        forward_lines(child.stderr.take().expect("piped"), tx);
        let mut running = Running {
            child,
            resend_sigint: spec.resend_sigint,
            ok_codes: spec.ok_codes,
            lines,
            log: Vec::new(),
            shown,
        };
        running.wait_attached(spec.ready, programs_appeared)?;
        Ok(running)
    }

    /// The tracer's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_attached(
        &mut self,
        ready: Ready,
        programs_appeared: impl Fn(u32) -> bool,
    ) -> anyhow::Result<()> {
        let (prefix, poll_programs) = match ready {
            Ready::Line(prefix) => (prefix, false),
            Ready::LineOrPrograms(prefix) => (prefix, true),
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let hit = line.trim_start().starts_with(prefix);
                    self.log.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = self.child.try_wait()? {
                let tail = self.tail();
                bail!(
                    "`{}` exited with {status} before attaching{tail}",
                    self.shown
                );
            }
            if poll_programs && programs_appeared(self.child.id()) {
                thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tail = self.tail();
        bail!(
            "`{}` did not attach within {ATTACH_TIMEOUT:?}{tail}",
            self.shown
        );
    }

    /// SIGINT the tracer and wait for it; an exit code other than 0 and `ok_codes` is an error.
    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        let interrupt = || {
            // SAFETY: kill has no memory-safety preconditions; the child has not been reaped
            // yet, so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGINT) };
        };
        interrupt();
        let started = Instant::now();
        let mut last_signal = started;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.log.extend(self.lines.try_iter());
                if !status.success() && !status.code().is_some_and(|c| self.ok_codes.contains(&c)) {
                    let tail = self.tail();
                    bail!("`{}` exited with {status} after SIGINT{tail}", self.shown);
                }
                return Ok(());
            }
            if self.resend_sigint && last_signal.elapsed() > RESEND_INTERVAL {
                interrupt();
                last_signal = Instant::now();
            }
            if started.elapsed() > EXIT_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("`{}` ignored SIGINT for {EXIT_TIMEOUT:?}", self.shown);
            }
            // Drain as we go so the log stays bounded to what we might show.
            self.log.extend(self.lines.try_iter());
            if self.log.len() > 200 {
                self.log.drain(..self.log.len() - 50);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines the tracer printed, for error messages.
    fn tail(&mut self) -> String {
        self.log.extend(self.lines.try_iter());
        let start = self.log.len().saturating_sub(10);
        let lines = &self.log[start..];
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its last output:\n  {}", lines.join("\n  "))
        }
    }
}

impl Drop for Running {
    /// A tracer left running (after an error) would skew every later run: kill it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Read `source` line by line on a thread, sending each line to `tx`.
fn forward_lines(source: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}
