//! Runs the tracer as on a host without libc's detached debug files (`libc6-dbg`).
//!
//! Most production hosts have none, and without them libc's internal functions have no names
//! (only its exported ones do). To test that, the tracer alone is started in a private mount
//! namespace (`unshare -m`) where an empty directory is bind-mounted over `/usr/lib/debug`,
//! where symbolizers look for them (by build id and by `.gnu_debuglink`). The workloads and the
//! rest of the host keep seeing the files; BPF works as usual (root, same pid namespace), and
//! the tracer keeps its pid (`unshare` and `sh` exec it), so signals reach it.
//!
//! The choice is per test thread ([`HiddenDebugFiles`]), so tests running in parallel do not
//! see each other's.

use std::{cell::Cell, env, ffi::OsString, fs, path::PathBuf, process::Command};

use crate::stallwatch_bin;

/// Where symbolizers look for detached debug files.
pub const DEBUG_DIR: &str = "/usr/lib/debug";

/// Names only libc's debug files give (internal functions of glibc 2.34+ on the stacks of
/// the watch workloads): none may show up when they are hidden.
pub const DEBUG_ONLY_NAMES: &[&str] = &[
    "__pthread_clockjoin_ex",
    "__futex_abstimed_wait_common",
    "__GI___lll_lock_wait",
    "___pthread_mutex_lock",
    "__pthread_mutex_lock_full",
    "start_thread",
];

thread_local! {
    static HIDDEN: Cell<bool> = const { Cell::new(false) };
}

/// While alive, tracers this thread starts do not see libc's debug files.
pub struct HiddenDebugFiles(());

impl HiddenDebugFiles {
    /// Hides the debug files from the tracers this thread starts until dropped.
    pub fn new() -> Self {
        HIDDEN.with(|h| h.set(true));
        Self(())
    }
}

impl Default for HiddenDebugFiles {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HiddenDebugFiles {
    fn drop(&mut self) {
        HIDDEN.with(|h| h.set(false));
    }
}

/// Whether tracers this thread starts are to run without the debug files.
pub fn debug_files_hidden() -> bool {
    HIDDEN.with(Cell::get)
}

/// An empty directory, made once per test process (left behind: it is empty).
fn empty_dir() -> PathBuf {
    let dir = env::temp_dir().join(format!("stallwatch-test-nodebug-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The command that runs `stallwatch ARGS`: directly, or with the debug files hidden.
pub fn stallwatch_command(args: impl IntoIterator<Item = OsString>) -> Command {
    if !debug_files_hidden() {
        let mut command = Command::new(stallwatch_bin());
        command.args(args);
        return command;
    }
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" {DEBUG_DIR} && shift && exec \"$@\""
        ))
        .arg("sh")
        .arg(empty_dir())
        .arg(stallwatch_bin())
        .args(args);
    command
}
