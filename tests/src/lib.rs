//! Harness for stallwatch's root-only integration tests.
//!
//! The tests run the real `stallwatch` binary, which loads real BPF into the running kernel, and
//! trace workloads (`workloads/`) that measure their own blocked time, so every number the
//! tracer reports can be checked against ground truth. [`require_bpf`] gates every test that
//! needs root and BTF; the rest of the crate is plumbing: [`tracer`] runs the binary,
//! [`workload`] drives the workloads, [`folded`] reads the output. [`watch_workloads`] runs the
//! programs that get stuck on purpose (deadlocks, stalled I/O) for `stallwatch watch`.

pub mod folded;
pub mod nodebug;
pub mod pythons;
pub mod sites;
pub mod tracer;
pub mod watch_report;
pub mod watch_workloads;
pub mod workload;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

/// Environment variable that turns skips into failures (CI sets it).
pub const REQUIRE_BPF_ENV: &str = "STALLWATCH_REQUIRE_BPF";

/// Returns true if BPF tracing can run here (root and kernel BTF). Otherwise panics when
/// `STALLWATCH_REQUIRE_BPF=1`, or prints `skipped: <reason>` and returns false.
pub fn require_bpf() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let reason = if euid != 0 {
        Some(format!("not root (euid {euid}); BPF tracing needs root"))
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("/sys/kernel/btf/vmlinux is missing; the kernel has no BTF".to_owned())
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if env::var(REQUIRE_BPF_ENV).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_BPF_ENV}=1 but {reason}")
        }
        Some(reason) => {
            eprintln!("skipped: {reason}");
            false
        }
    }
}

/// The `stallwatch` binary under test: `$STALLWATCH_BIN`, else `<workspace>/target/release/`.
pub fn stallwatch_bin() -> PathBuf {
    let path = env::var_os("STALLWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/stallwatch")
        });
    assert!(
        path.is_file(),
        "stallwatch binary not found at {}: build it with `cargo build --release -p tracer-user` \
         or set STALLWATCH_BIN",
        path.display()
    );
    path
}

/// The `offcpu_sites` workload, built by `build.rs`.
pub fn offcpu_sites_bin() -> &'static Path {
    Path::new(env!("OFFCPU_SITES_BIN"))
}

/// The `offcpu_sites` workload built without frame pointers (`-O2 -fomit-frame-pointer`),
/// by `build.rs`.
pub fn offcpu_sites_nofp_bin() -> &'static Path {
    Path::new(env!("OFFCPU_SITES_NOFP_BIN"))
}

/// The `deadlock_abba` workload (see [`watch_workloads::abba`]), built by `build.rs`.
pub fn deadlock_abba_bin() -> &'static Path {
    Path::new(env!("DEADLOCK_ABBA_BIN"))
}

/// The `recv_stall` workload (see [`watch_workloads::recv`]), built by `build.rs`.
pub fn recv_stall_bin() -> &'static Path {
    Path::new(env!("RECV_STALL_BIN"))
}

/// The `healthy` workload (see [`watch_workloads::healthy`]), built by `build.rs`.
pub fn healthy_bin() -> &'static Path {
    Path::new(env!("HEALTHY_BIN"))
}

/// The `peer_chain` workload (see [`watch_workloads::peer_chain`]), built by `build.rs`.
pub fn peer_chain_bin() -> &'static Path {
    Path::new(env!("PEER_CHAIN_BIN"))
}

/// A file in `workloads/` (scripts that need no build).
pub fn workload_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
}

/// Compiles `workloads/CLASS.java` into `dir` with `javac`, and prints the JDK it runs on (a
/// test says which runtime version it covered).
pub fn compile_java(class: &str, dir: &Path) {
    let out = Command::new("javac")
        .arg("-d")
        .arg(dir)
        .arg(workload_file(&format!("{class}.java")))
        .output()
        .expect("javac (OpenJDK) must be installed");
    assert!(
        out.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = Command::new("java").arg("-version").output().expect("java");
    let version = String::from_utf8_lossy(&version.stderr);
    println!("JDK: {}", version.lines().next().unwrap_or_default());
}

/// A scratch directory, removed on drop unless the test is panicking (kept for inspection).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory named after `label`.
    pub fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock before 1970")
            .subsec_nanos();
        let path = env::temp_dir().join(format!(
            "stallwatch-test-{label}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    /// Path of `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept test files in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Panics unless `actual` is within `tolerance` (a fraction) of `expected`.
pub fn assert_close(what: &str, actual: u64, expected: u64, tolerance: f64, context: &str) {
    let diff = actual.abs_diff(expected) as f64;
    let allowed = expected as f64 * tolerance;
    assert!(
        diff <= allowed,
        "{what}: traced {actual} us vs ground truth {expected} us differs by {diff} us \
         (more than {:.1}%)\n{context}",
        tolerance * 100.0
    );
}
