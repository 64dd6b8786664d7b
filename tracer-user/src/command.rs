//! Running `-- COMMAND` so that it is traced from its first instruction.
//!
//! The child is forked, reports its pid on a pipe and then waits on a second pipe before it
//! `exec`s; the caller adds the pid to the in-kernel filter and only then releases it. `std`'s
//! `spawn` itself waits for the `exec`, so it runs on a helper thread while the caller reads
//! the pid.

use std::{
    io,
    os::{fd::RawFd, unix::process::CommandExt as _},
    process::{Child, Command},
    thread::JoinHandle,
};

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not on PATH or not executable.
    #[error("cannot run {program}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A forked child stopped just before `exec`.
pub(crate) struct GatedChild {
    pid: u32,
    gate_write: RawFd,
    spawner: JoinHandle<io::Result<Child>>,
    program: String,
}

impl GatedChild {
    /// Forks `argv`; the child waits before `exec` until [`GatedChild::release`].
    pub(crate) fn spawn(argv: &[String]) -> Result<Self, CommandError> {
        let program = argv[0].clone();
        let start_err = |source| CommandError::Start {
            program: program.clone(),
            source,
        };
        let (pid_read, pid_write) = pipe().map_err(start_err)?;
        let (gate_read, gate_write) = pipe().map_err(start_err)?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        // SAFETY: the closure only calls async-signal-safe functions (getpid, write, read).
        unsafe {
            cmd.pre_exec(move || {
                let pid = libc::getpid().to_ne_bytes();
                libc::write(pid_write, pid.as_ptr().cast(), pid.len());
                let mut byte = 0u8;
                if libc::read(gate_read, (&raw mut byte).cast(), 1) != 1 {
                    return Err(io::Error::other(
                        "tracer went away before the command started",
                    ));
                }
                Ok(())
            });
        }
        let spawner = std::thread::spawn(move || cmd.spawn());
        let mut buf = [0u8; 4];
        // SAFETY: valid buffer; blocks until the child wrote its pid or all writers closed.
        let n = unsafe { libc::read(pid_read, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: closing our own descriptors once.
        unsafe {
            libc::close(pid_read);
            libc::close(pid_write);
            libc::close(gate_read);
        }
        if n != 4 {
            // SAFETY: as above.
            unsafe { libc::close(gate_write) };
            let err = match spawner.join() {
                Ok(Err(e)) => e,
                _ => io::Error::other("the child did not start"),
            };
            return Err(start_err(err));
        }
        Ok(Self {
            pid: u32::from_ne_bytes(buf),
            gate_write,
            spawner,
            program,
        })
    }

    /// The child's pid (also its pid after `exec`).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child `exec`; fails if the `exec` fails (e.g. command not found).
    pub(crate) fn release(self) -> Result<Child, CommandError> {
        let byte = 1u8;
        // SAFETY: writing one byte from a valid buffer to our pipe, then closing it once.
        unsafe {
            libc::write(self.gate_write, (&raw const byte).cast(), 1);
            libc::close(self.gate_write);
        }
        let start_err = |source| CommandError::Start {
            program: self.program.clone(),
            source,
        };
        match self.spawner.join() {
            Ok(result) => result.map_err(start_err),
            Err(_) => Err(start_err(io::Error::other("spawner thread panicked"))),
        }
    }
}

fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the child does not run before release, and runs after.
    #[test]
    fn child_waits_for_release() {
        let dir = std::env::temp_dir().join(format!("sw-gate-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let argv = vec!["touch".to_string(), dir.display().to_string()];
        let gated = GatedChild::spawn(&argv).expect("spawn");
        assert!(gated.pid() > 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!dir.exists(), "child ran before release");
        let mut child = gated.release().expect("release");
        assert!(child.wait().expect("wait").success());
        assert!(dir.exists());
        let _ = std::fs::remove_file(&dir);
    }

    /// Check that a missing program is an error at release, not a hang.
    #[test]
    fn missing_program_fails_at_release() {
        let argv = vec!["/nonexistent/program".to_string()];
        let gated = GatedChild::spawn(&argv).expect("fork works");
        assert!(gated.release().is_err());
    }
}
