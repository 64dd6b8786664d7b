//! Builds the BPF object (crate `tracer-ebpf`) with aya-build and leaves it in `OUT_DIR`, where
//! `capture::session` embeds it with `include_bytes_aligned!`.
//!
//! Building BPF needs nightly, `rust-src` and `bpf-linker` (`cargo xtask setup` installs them).
//! Without `bpf-linker` an empty stub is written instead, as aya's integration tests do, so
//! `cargo check`, clippy and the root-free unit tests still work; the binary then refuses to
//! trace with a message naming the missing set-up.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result};
use aya_build::{Package, Toolchain};

/// `$CARGO_HOME/bin`, where `cargo install bpf-linker` puts it.
fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"))
}

fn bpf_linker_available() -> bool {
    which::which("bpf-linker").is_ok()
        || cargo_bin_dir().is_some_and(|bin| bin.join("bpf-linker").is_file())
}

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR")?);
    let ebpf_dir = manifest_dir.join("../tracer-ebpf");
    let common_dir = manifest_dir.join("../tracer-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!("cargo:rerun-if-env-changed=PATH");

    if !bpf_linker_available() {
        println!(
            "cargo:warning=bpf-linker not found: building stallwatch without its BPF programs \
             (run `cargo xtask setup`)"
        );
        fs::write(out_dir.join("stallwatch-bpf"), []).context("writing the BPF stub")?;
        return Ok(());
    }
    // Make a bpf-linker in $CARGO_HOME/bin visible to the nested cargo.
    if let Some(bin) = cargo_bin_dir() {
        let mut paths: Vec<PathBuf> =
            env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect();
        if !paths.contains(&bin) {
            paths.push(bin);
            // SAFETY: the build script is single-threaded here.
            unsafe { env::set_var("PATH", env::join_paths(paths)?) };
        }
    }
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context("building the BPF programs (tracer-ebpf)")
}
