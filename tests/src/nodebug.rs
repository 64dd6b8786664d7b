//! Runs the tracer as on a host without libc's detached debug files (`libc6-dbg`).
//!
//! Most production hosts have none, and without them libc's internal functions have no names
//! (only its exported ones do). To test that, the tracer alone is started in a private mount
//! namespace (`unshare -m`) where an empty directory is bind-mounted over `/usr/lib/debug`,
//! where symbolizers look for them (by build id and by `.gnu_debuglink`). The workloads and the
//! rest of the host keep seeing the files; BPF works as usual (root, same pid namespace), and
//! the tracer keeps its pid (`unshare` and `sh` exec it), so signals reach it.
//!
//! The same bind mount can show the tracer a directory of a test's own debug files instead
//! ([`ReplacedDebugDir`]), so tests of the lookup in `/usr/lib/debug` leave the host's alone.
//!
//! The choice is per test thread ([`HiddenDebugFiles`], [`ReplacedDebugDir`]), so tests running
//! in parallel do not see each other's.

use std::{
    cell::RefCell,
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

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
    /// What tracers this thread starts see at [`DEBUG_DIR`], if not the host's directory.
    static REPLACEMENT: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// While alive, tracers this thread starts do not see libc's debug files.
pub struct HiddenDebugFiles(());

impl HiddenDebugFiles {
    /// Hides the debug files from the tracers this thread starts until dropped.
    pub fn new() -> Self {
        REPLACEMENT.with(|r| r.replace(Some(empty_dir())));
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
        REPLACEMENT.with(|r| r.replace(None));
    }
}

/// While alive, tracers this thread starts see a given directory at [`DEBUG_DIR`] (and none of
/// the host's debug files).
pub struct ReplacedDebugDir(());

impl ReplacedDebugDir {
    /// Shows `dir` as [`DEBUG_DIR`] to the tracers this thread starts until dropped.
    pub fn new(dir: &Path) -> Self {
        REPLACEMENT.with(|r| r.replace(Some(dir.to_owned())));
        Self(())
    }
}

impl Drop for ReplacedDebugDir {
    fn drop(&mut self) {
        REPLACEMENT.with(|r| r.replace(None));
    }
}

/// Whether tracers this thread starts are to run without the host's debug files.
pub fn debug_files_hidden() -> bool {
    REPLACEMENT.with(|r| r.borrow().is_some())
}

/// An empty directory, made once per test process (left behind: it is empty).
fn empty_dir() -> PathBuf {
    let dir = env::temp_dir().join(format!("stallwatch-test-nodebug-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The command that runs `stallwatch ARGS`: directly, or with the debug files hidden or
/// replaced.
pub fn stallwatch_command(args: impl IntoIterator<Item = OsString>) -> Command {
    let Some(debug_dir) = REPLACEMENT.with(|r| r.borrow().clone()) else {
        let mut command = Command::new(stallwatch_bin());
        command.args(args);
        return command;
    };
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" {DEBUG_DIR} && shift && exec \"$@\""
        ))
        .arg("sh")
        .arg(debug_dir)
        .arg(stallwatch_bin())
        .args(args);
    command
}
