//! `cargo xtask test`: every test tier in order, stopping at the first failure with a one-line
//! summary naming the stage. The last tier loads BPF and therefore needs root; CI sets
//! `STALLWATCH_REQUIRE_BPF=1` so that tier's skips become failures.

use std::{env, process::Command};

use anyhow::bail;

use crate::{build, setup, util};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Extra arguments for the integration test binary (e.g. a test name filter).
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let stages: [(&str, &dyn Fn() -> anyhow::Result<()>); 5] = [
        ("setup", &|| setup::run(&setup::Options {})),
        ("fmt", &|| {
            util::run(util::cargo().args(["fmt", "--all", "--check"]))
        }),
        ("clippy", &|| util::run(util::cargo().args(CLIPPY))),
        ("unit tests", &|| util::run(util::cargo().args(UNIT_TESTS))),
        ("integration tests", &|| integration(&opts.test_args)),
    ];
    for (index, (name, stage)) in stages.iter().enumerate() {
        eprintln!("==> stage {}/{}: {name}", index + 1, stages.len());
        if let Err(err) = stage() {
            eprintln!("error: {err:#}");
            bail!("cargo xtask test: stage {} ({name}) failed", index + 1);
        }
    }
    eprintln!("==> all {} stages passed", stages.len());
    Ok(())
}

const CLIPPY: &[&str] = &[
    "clippy",
    "--workspace",
    "--exclude",
    "tracer-ebpf",
    "--all-targets",
    "--",
    "-D",
    "warnings",
];

const UNIT_TESTS: &[&str] = &[
    "test",
    "--release",
    "--workspace",
    "--exclude",
    "tracer-ebpf",
    "--exclude",
    "stallwatch-tests",
];

/// Build the real binary (with BPF), then run the root-only tests one at a time: they attach
/// host-wide tracepoints and would see each other's workloads if run in parallel.
fn integration(test_args: &[String]) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("the integration tests load BPF programs: run `cargo xtask test` as root");
    }
    build::build_stallwatch()?;
    let mut command: Command = util::cargo();
    command
        .args(["test", "--release", "-p", "stallwatch-tests", "--"])
        .arg("--test-threads=1")
        .args(test_args)
        .env("STALLWATCH_BIN", util::stallwatch_bin());
    if let Some(require) = env::var_os("STALLWATCH_REQUIRE_BPF") {
        command.env("STALLWATCH_REQUIRE_BPF", require);
    }
    util::run(&mut command)
}
