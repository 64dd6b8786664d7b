//! `cargo xtask setup`: install the BPF toolchain (nightly + rust-src + bpf-linker), the Debian
//! packages the demo, the benchmark and the runtime tests use (GHC for the Haskell workload),
//! and mount tracefs. Every step checks first, so a second run changes nothing and says
//! "already set up".

use std::{fs, os::unix::fs::symlink, path::Path};

use anyhow::{Context as _, bail};

use crate::util::{self, cargo_bin_dir, cmd, find_program, output};

/// Options of `cargo xtask setup`.
#[derive(clap::Args)]
pub(crate) struct Options {}

/// Debian packages and a file each installs, used to tell whether it is present.
const PACKAGES: &[(&str, &str)] = &[
    ("gcc", "gcc"),
    ("python3", "python3"),
    ("libbpf-tools", "/usr/sbin/offcputime"),
    ("bpftrace", "bpftrace"),
    ("bpftool", "bpftool"),
    // The Haskell workload of the GHC runtime's tests (Debian's GHC, 9.0.2 on bookworm).
    ("ghc", "ghc"),
];

pub(crate) fn run(_opts: &Options) -> anyhow::Result<()> {
    let mut done = Vec::new();
    ensure_nightly(&mut done)?;
    ensure_bpf_linker(&mut done)?;
    ensure_packages(&mut done)?;
    ensure_tracefs(&mut done)?;
    if done.is_empty() {
        eprintln!("setup: already set up");
    } else {
        for step in &done {
            eprintln!("setup: {step}");
        }
    }
    Ok(())
}

/// Nightly toolchain with rust-src: the BPF target is built with `-Z build-std`.
fn ensure_nightly(done: &mut Vec<String>) -> anyhow::Result<()> {
    let toolchains = output(cmd("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        util::run(cmd("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
        done.push("installed the nightly toolchain".into());
    }
    let components =
        output(cmd("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        util::run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
        done.push("added rust-src to nightly".into());
    }
    Ok(())
}

/// bpf-linker, linked against the LLVM shipped inside the nightly sysroot (a plain
/// `cargo install bpf-linker` looks for a system LLVM and fails).
fn ensure_bpf_linker(done: &mut Vec<String>) -> anyhow::Result<()> {
    if find_program("bpf-linker").is_some() || cargo_bin_dir().join("bpf-linker").is_file() {
        return Ok(());
    }
    let sysroot = output(cmd("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = Path::new(sysroot.trim());
    let version = output(cmd("rustc").args(["+nightly", "-vV"]))?;
    let major = llvm_major(&version).context("no `LLVM version:` line in `rustc +nightly -vV`")?;

    let lib = sysroot.join("lib");
    let link = lib.join("libLLVM.so");
    if fs::symlink_metadata(&link).is_err() {
        let prefix = format!("libLLVM.so.{major}.");
        let target = fs::read_dir(&lib)
            .with_context(|| format!("listing {}", lib.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with(&prefix) && name.contains("-rust-"))
            .with_context(|| format!("no {prefix}*-rust-* in {}", lib.display()))?;
        symlink(&target, &link)
            .with_context(|| format!("symlinking {} -> {target}", link.display()))?;
        done.push(format!("linked {} -> {target}", link.display()));
    }
    util::run(
        cmd("cargo")
            .env("LLVM_PREFIX", sysroot)
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}")),
    )
    .context("installing bpf-linker")?;
    done.push(format!("installed bpf-linker (llvm-{major})"));
    Ok(())
}

/// The major version from the `LLVM version: 22.1.4` line of `rustc -vV`.
fn llvm_major(version_output: &str) -> Option<u32> {
    version_output
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// gcc, python3, libbpf-tools, bpftrace, bpftool, ghc: install the missing ones with apt-get,
/// running `apt-get update` only when the first attempt fails.
fn ensure_packages(done: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| {
            if probe.starts_with('/') {
                !Path::new(probe).exists()
            } else {
                find_program(probe).is_none() && !Path::new("/usr/sbin").join(probe).exists()
            }
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() || find_program("apt-get").is_none() {
        bail!(
            "missing packages {}: install them (as root on Debian: apt-get install -y {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    let install = || {
        cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing)
            .status()
    };
    if !install().is_ok_and(|s| s.success()) {
        util::run(cmd("apt-get").arg("update"))?;
        let status = install().context("running apt-get install")?;
        if !status.success() {
            bail!("apt-get install -y {} failed", missing.join(" "));
        }
    }
    done.push(format!("installed {}", missing.join(", ")));
    Ok(())
}

/// bpftrace and bpftool read tracepoint formats from tracefs, which may be unmounted.
fn ensure_tracefs(done: &mut Vec<String>) -> anyhow::Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() || !util::is_root() {
        return Ok(());
    }
    util::run(cmd("mount").args(["-t", "tracefs", "nodev"]).arg(tracing))?;
    done.push(format!("mounted tracefs on {}", tracing.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the LLVM major version is read from `rustc -vV` output.
    #[test]
    fn llvm_major_reads_the_version_line() {
        let out = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(out), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }
}
