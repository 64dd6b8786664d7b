//! Orchestration that is not a build step: toolchain set-up, the demo, test tiers and the
//! overhead benchmark. Run as `cargo xtask <subcommand>` (alias in `.cargo/config.toml`).

mod bench;
mod build;
mod demo;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

/// Developer tasks for the stallwatch workspace.
#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the BPF build and the benchmark need (idempotent).
    Setup(setup::Options),
    /// Set up, then build `target/release/stallwatch` with its BPF object.
    Build(build::Options),
    /// Build, then profile the bundled demo workload and write a flame graph.
    Demo(demo::Options),
    /// Run every test tier: fmt, clippy, unit tests, root-only integration tests.
    Test(test::Options),
    /// Measure tracing overhead on a context-switch-heavy workload; writes docs/performance.md.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Build(opts) => build::run(&opts),
        Command::Demo(opts) => demo::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
    }
}
