//! Helpers shared by the subcommands: workspace paths, child commands with the cargo bin
//! directory on `PATH`, and running a command with a useful error.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of this crate's manifest directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory for the workspace (honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The release `stallwatch` binary built by `cargo xtask build`.
pub(crate) fn stallwatch_bin() -> PathBuf {
    target_dir().join("release").join("stallwatch")
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub(crate) fn cargo_bin_dir() -> PathBuf {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

/// `PATH` for children: the current one with the cargo bin directory appended if it is absent,
/// so tracer-user's build.rs finds bpf-linker even when the caller's shell lacks ~/.cargo/bin.
pub(crate) fn child_path() -> OsString {
    let bin = cargo_bin_dir();
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if !dirs.contains(&bin) {
        dirs.push(bin);
    }
    env::join_paths(dirs).expect("PATH entries contain no separator")
}

/// A command for `program` whose environment carries [`child_path`].
pub(crate) fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env("PATH", child_path());
    command
}

/// A `cargo` command (the cargo that runs xtask, if known) run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut command = cmd(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Find `name` on [`child_path`].
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let cwd = env::current_dir().ok()?;
    which::which_in(name, Some(child_path()), cwd).ok()
}

/// Run `command` to completion, inheriting stdio; fail unless it exits 0.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = describe(command);
    let status = command
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// Run `command` and return its stdout; fail unless it exits 0.
pub(crate) fn output(command: &mut Command) -> anyhow::Result<String> {
    let shown = describe(command);
    let out = command
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// The command line of `command`, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Compile a C workload with the flags that keep frame-pointer stacks intact.
pub(crate) fn compile_c(source: &Path, output: &Path) -> anyhow::Result<()> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    run(cmd("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-pthread",
            "-Wall",
            "-o",
        ])
        .arg(output)
        .arg(source))
    .with_context(|| format!("compiling {}", source.display()))
}
