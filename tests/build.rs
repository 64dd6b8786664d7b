//! Builds the C workloads in `workloads/` into `OUT_DIR`, one binary per `.c` file, and exports
//! each path as `<STEM>_BIN` (`offcpu_sites.c` -> `OFFCPU_SITES_BIN`).
//!
//! Frame pointers everywhere (including leaf functions) so the tracer's frame-pointer walk sees
//! the workload's own frames; glibc has none, which is why the sites issue raw syscalls.
//!
//! The workloads in [`NO_FRAME_POINTER`] are built a second time the way distributions build
//! code, `-O2 -fomit-frame-pointer`, as `<STEM>_nofp` (`OFFCPU_SITES_NOFP_BIN`): what
//! `profile --unwind dwarf` must unwind. Those in [`SHARED_LIBRARIES`] are libraries a
//! workload in another language loads, built as `lib<STEM>.so` (`<STEM>_SO`).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-Wall",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-pthread",
];

/// Flags of the second, frame-pointer-less build.
const NO_FRAME_POINTER_CFLAGS: &[&str] =
    &["-O2", "-g", "-Wall", "-fomit-frame-pointer", "-pthread"];

/// Workloads also built without frame pointers.
const NO_FRAME_POINTER: &[&str] = &["offcpu_sites"];

/// Shared libraries rather than programs.
const SHARED_LIBRARIES: &[&str] = &["native_waker"];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let workloads = manifest_dir.join("workloads");
    println!("cargo:rerun-if-changed={}", workloads.display());

    let mut sources: Vec<PathBuf> = fs::read_dir(&workloads)
        .with_context(|| format!("reading {}", workloads.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    sources.retain(|p| p.extension().is_some_and(|e| e == "c"));
    sources.sort();

    for source in sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .context("workload file name is not UTF-8")?;
        if SHARED_LIBRARIES.contains(&stem) {
            let output = out_dir.join(format!("lib{stem}.so"));
            let cflags: Vec<&str> = CFLAGS.iter().copied().chain(["-shared", "-fPIC"]).collect();
            compile(&source, &output, &cflags)?;
            println!(
                "cargo:rustc-env={}_SO={}",
                stem.to_uppercase(),
                output.display()
            );
            continue;
        }
        build(&source, &out_dir.join(stem), CFLAGS, stem)?;
        if NO_FRAME_POINTER.contains(&stem) {
            let nofp = format!("{stem}_nofp");
            build(
                &source,
                &out_dir.join(&nofp),
                NO_FRAME_POINTER_CFLAGS,
                &nofp,
            )?;
        }
    }
    Ok(())
}

/// Compiles `source` into `output` with `cflags`.
fn compile(source: &Path, output: &Path, cflags: &[&str]) -> Result<()> {
    let status = Command::new("gcc")
        .args(cflags)
        .arg("-o")
        .arg(output)
        .arg(source)
        .status()
        .context("running gcc (the C workloads need it)")?;
    if !status.success() {
        bail!("gcc failed on {}: {status}", source.display());
    }
    Ok(())
}

/// Compiles `source` into `output` with `cflags` and exports the path as `<NAME>_BIN`.
fn build(source: &Path, output: &Path, cflags: &[&str], name: &str) -> Result<()> {
    compile(source, output, cflags)?;
    println!(
        "cargo:rustc-env={}_BIN={}",
        name.to_uppercase(),
        output.display()
    );
    Ok(())
}
