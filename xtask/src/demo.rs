//! `cargo xtask demo`: build stallwatch, profile the bundled demo workload
//! (`xtask/demo/demo_workload.c`) and show where its threads waited, then let `stallwatch
//! watch` find a live deadlock (the ABBA workload of the integration tests).

use std::fs;

use anyhow::Context as _;

use crate::{build, setup, util};

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// How many of the heaviest folded stacks to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options {})?;
    build::build_stallwatch()?;

    let out_dir = util::target_dir().join("demo");
    let workload = out_dir.join("demo_workload");
    util::compile_c(
        &util::workspace_root().join("xtask/demo/demo_workload.c"),
        &workload,
    )?;
    let svg = out_dir.join("offcpu.svg");
    let folded = out_dir.join("offcpu.folded");

    // stallwatch prints its summary on stderr, which we let through.
    util::run(
        util::cmd(util::stallwatch_bin())
            .args(["profile", "--process-root", "--wait-leaf", "-o"])
            .arg(&svg)
            .arg("-o")
            .arg(&folded)
            .arg("--")
            .arg(&workload),
    )
    .context("profiling the demo workload")?;

    let text =
        fs::read_to_string(&folded).with_context(|| format!("reading {}", folded.display()))?;
    println!(
        "\nTop {} off-CPU stacks (blocked microseconds, stack):",
        opts.top
    );
    for (value, stack) in top_stacks(&text, opts.top) {
        println!("{value:>14}  {stack}");
    }
    println!("\nWrote:\n  {}\n  {}", svg.display(), folded.display());
    watch_deadlock(&out_dir)
}

/// Starts a program that deadlocks two threads after 2 s and runs `stallwatch watch` on it
/// until it reports the deadlock (exit status 11).
fn watch_deadlock(out_dir: &std::path::Path) -> anyhow::Result<()> {
    let program = out_dir.join("deadlock_abba");
    util::compile_c(
        &util::workspace_root().join("tests/workloads/deadlock_abba.c"),
        &program,
    )?;
    println!("\nNow a program whose threads deadlock in 2 s, under `stallwatch watch`:");
    let mut child = util::cmd(&program)
        .args(["--delay-ms", "2000", "--timeout-s", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let record = out_dir.join("deadlock.swrec");
    let mut watch = util::cmd(util::stallwatch_bin());
    watch
        .args([
            "watch",
            "--threshold",
            "1s",
            "--exit-on-deadlock",
            "-d",
            "30s",
        ])
        .arg("--record")
        .arg(&record)
        .arg("-p");
    let status = watch.arg(child.id().to_string()).status();
    let _ = child.kill();
    let _ = child.wait();
    let status = status.context("running stallwatch watch")?;
    if status.code() != Some(11) {
        anyhow::bail!("stallwatch watch did not report the deadlock ({status})");
    }
    println!(
        "\nRecorded to {0}: `stallwatch report {0}` prints the same report again, on any \
         machine, without root.",
        record.display()
    );
    Ok(())
}

/// The `n` heaviest lines of a folded file (`frame;frame;... VALUE`), heaviest first.
fn top_stacks(folded: &str, n: usize) -> Vec<(u64, &str)> {
    let mut lines: Vec<(u64, &str)> = folded
        .lines()
        .filter_map(|line| {
            let (stack, value) = line.trim_end().rsplit_once(' ')?;
            Some((value.parse().ok()?, stack))
        })
        .collect();
    lines.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    lines.truncate(n);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that folded lines are ranked by value and malformed lines are skipped.
    #[test]
    fn top_stacks_ranks_by_value() {
        let folded = "a;b 10\nnot a line\nc;d 300\ne 20\n";
        assert_eq!(top_stacks(folded, 2), vec![(300, "c;d"), (20, "e")]);
    }
}
