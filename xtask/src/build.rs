//! `cargo xtask build`: set up, then build the release `stallwatch` binary. tracer-user's
//! build.rs compiles the BPF object when it finds bpf-linker on `PATH`, which
//! [`util::cargo`] extends with `$CARGO_HOME/bin`.

use anyhow::{Context as _, ensure};

use crate::{setup, util};

/// Options of `cargo xtask build`.
#[derive(clap::Args)]
pub(crate) struct Options {}

pub(crate) fn run(_opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options {})?;
    build_stallwatch()
}

/// `cargo build --release -p tracer-user`, checking the binary appeared.
pub(crate) fn build_stallwatch() -> anyhow::Result<()> {
    util::run(util::cargo().args(["build", "--release", "-p", "tracer-user"]))
        .context("building stallwatch")?;
    let bin = util::stallwatch_bin();
    ensure!(bin.is_file(), "{} missing after the build", bin.display());
    Ok(())
}
