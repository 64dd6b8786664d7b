//! `cargo xtask bench`: what tracing costs a context-switch-heavy workload.
//!
//! `tests/workloads/pingpong.c` bounces a byte between two processes pinned to CPU 0, so its
//! throughput is bounded by context-switch cost, which is exactly where an off-CPU tracer's
//! hooks run. Each round runs every configuration once, in an order that rotates per round so
//! slow drift of the machine does not favour one configuration; the report compares medians.
//! The tracers run host-wide in the background while pingpong runs, with the kernel's BPF
//! run-time statistics off (they slow every program run); one extra round with them on
//! measures each program's run time.

mod bpf_stats;
mod report;
mod tracer;

use std::{ffi::OsString, fs, path::Path, thread, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::Value;

use self::{
    bpf_stats::{StatsEnabled, Totals},
    tracer::{Ready, Running, Spec},
};
use crate::{build, setup, util};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Rounds; every configuration runs once per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of pingpong per run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print the report only; do not write docs/performance.md.
    #[arg(long)]
    no_docs: bool,
}

/// Which ping-pong a configuration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    /// `tests/workloads/pingpong.c`.
    Native,
    /// `tests/workloads/py_pingpong.py` under Debian's CPython (for `--python`).
    Python,
}

/// Debian's CPython, which runs the Python ping-pong.
const PYTHON: &str = "/usr/bin/python3";

/// One benchmarked configuration and what it measured.
pub(crate) struct Config {
    /// Short label used in tables.
    pub label: String,
    /// The ping-pong it runs.
    pub workload: Workload,
    /// `None` for the untraced baseline.
    tracer: Option<Spec>,
    /// Pingpong results, one per round.
    pub runs: Vec<PingPong>,
    /// BPF run time and count per program name, from the statistics round.
    pub bpf: Totals,
    /// Pingpong's round trips in the statistics round (what `bpf` was spent on).
    pub bpf_round_trips: u64,
    /// The tracer failed; the configuration is left out from the next round on.
    dropped: bool,
}

/// One pingpong result line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PingPong {
    pub round_trips: u64,
    pub round_trips_per_sec: f64,
    pub involuntary_switches: u64,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.rounds == 0 || opts.seconds <= 0.0 {
        bail!("--rounds and --seconds must be positive");
    }
    if !util::is_root() {
        bail!("the benchmark loads BPF programs host-wide: run `cargo xtask bench` as root");
    }
    setup::run(&setup::Options {})?;
    let mut notes = Vec::new();
    if let Err(err) = build::build_stallwatch() {
        notes.push(format!(
            "stallwatch not benchmarked: build failed ({err:#})"
        ));
    }
    let pingpong = util::target_dir().join("bench/pingpong");
    util::compile_c(
        &util::workspace_root().join("tests/workloads/pingpong.c"),
        &pingpong,
    )?;

    let py_pingpong = util::workspace_root().join("tests/workloads/py_pingpong.py");
    let workloads = Workloads {
        native: &pingpong,
        python: &py_pingpong,
    };
    let mut configs = configurations(&mut notes);
    let _stats_off = StatsEnabled::set(false)?;
    for round in 0..opts.rounds {
        let n = configs.len();
        for i in 0..n {
            let index = (i + round) % n;
            let config = &mut configs[index];
            eprintln!(
                "bench: round {}/{}: {}",
                round + 1,
                opts.rounds,
                config.label
            );
            if let Err(err) = run_once(config, &workloads, opts.seconds, Measure::Throughput) {
                if config.tracer.is_none() {
                    return Err(err.context("untraced pingpong run"));
                }
                // A tracer that cannot run is reported, not fatal: the others still compare.
                notes.push(format!(
                    "{} dropped in round {}: {err:#}",
                    config.label,
                    round + 1
                ));
                config.dropped = true;
            }
            // Let writeback and the tracer's exit settle before the next run.
            thread::sleep(Duration::from_millis(500));
        }
        configs.retain(|c| !c.dropped);
    }
    // One more round for the BPF cost columns, with the kernel's run-time statistics on: they
    // slow every program run, so the rounds above ran without them.
    {
        let _stats_on = StatsEnabled::set(true)?;
        for config in configs.iter_mut().filter(|c| c.tracer.is_some()) {
            eprintln!("bench: BPF statistics: {}", config.label);
            if let Err(err) = run_once(config, &workloads, opts.seconds, Measure::BpfCost) {
                notes.push(format!("{}: no BPF statistics: {err:#}", config.label));
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
    drop(_stats_off);

    let markdown = report::markdown(&configs, &notes, opts)?;
    println!("{markdown}");
    if !opts.no_docs {
        let path = util::workspace_root().join("docs/performance.md");
        fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// The untraced baseline and every tracer that is available here.
fn configurations(notes: &mut Vec<String>) -> Vec<Config> {
    let config = |label: &str, tracer| Config {
        label: label.to_owned(),
        workload: Workload::Native,
        tracer,
        runs: Vec::new(),
        bpf: Totals::new(),
        bpf_round_trips: 0,
        dropped: false,
    };
    let mut configs = vec![config("untraced", None)];

    let stallwatch = util::stallwatch_bin();
    let folded = util::target_dir().join("bench/stallwatch.folded");
    let help = util::output(util::cmd(&stallwatch).args(["profile", "--help"]));
    match help {
        Ok(help) if help.contains("--no-stack-memo") => {
            let spec = |extra: &[&str]| Spec {
                program: stallwatch.clone(),
                args: ["profile", "-d", "1000", "-o"]
                    .iter()
                    .map(OsString::from)
                    .chain([folded.clone().into_os_string()])
                    .chain(extra.iter().map(OsString::from))
                    .collect(),
                ready: Ready::Line("Tracing"),
                resend_sigint: false,
                ok_codes: &[],
            };
            if help.contains("--unwind") {
                // Frame pointers (the kernel's walk) against stack copies unwound with DWARF
                // (`sites.rs`), each with and without the memo: without it every switch-out
                // copies and hashes the stack, which is the copy's cost.
                for (label, args) in [
                    (report::FP, &["--unwind", "fp"][..]),
                    (report::FP_NO_MEMO, &["--unwind", "fp", "--no-stack-memo"]),
                    (report::DWARF, &["--unwind", "dwarf"]),
                    (
                        report::DWARF_NO_MEMO,
                        &["--unwind", "dwarf", "--no-stack-memo"],
                    ),
                    (report::AUTO, &["--unwind", "auto"]),
                ] {
                    configs.push(config(label, Some(spec(args))));
                }
            } else {
                configs.push(config(report::FP, Some(spec(&[]))));
                configs.push(config(report::FP_NO_MEMO, Some(spec(&["--no-stack-memo"]))));
            }
            // `watch` keeps waits in flight only (no aggregation) but reads user registers at
            // every switch-out, and scans its maps every second.
            if help.contains("--python") && Path::new(PYTHON).is_file() {
                // The Python ping-pong's processes start after the tracer: host-wide, so
                // `--python` finds them as they appear (they idle for a second first).
                let python = |label: &str, tracer| Config {
                    workload: Workload::Python,
                    ..config(label, tracer)
                };
                configs.push(python("py: untraced", None));
                configs.push(python("py: stallwatch", Some(spec(&[]))));
                configs.push(python("py: stallwatch --python", Some(spec(&["--python"]))));
                if help.contains("--unwind") {
                    // An interpreter's stack holds heap pointers that change at every wait.
                    configs.push(python(
                        "py: stallwatch --unwind fp",
                        Some(spec(&["--unwind", "fp"])),
                    ));
                }
            } else {
                notes.push(format!(
                    "Python ping-pong not run: no {PYTHON} or no `profile --python`"
                ));
            }
            configs.push(config(
                "stallwatch watch",
                Some(Spec {
                    program: stallwatch.clone(),
                    args: ["watch", "-d", "1000", "-o"]
                        .iter()
                        .map(OsString::from)
                        .chain([util::target_dir().join("bench/watch.txt").into_os_string()])
                        .collect(),
                    ready: Ready::Line("Watching"),
                    resend_sigint: false,
                    ok_codes: &[10, 11],
                }),
            ));
        }
        Ok(_) => notes.push(format!(
            "stallwatch not benchmarked: `{} profile --help` does not offer --no-stack-memo",
            stallwatch.display()
        )),
        Err(err) => notes.push(format!("stallwatch not benchmarked: {err:#}")),
    }

    // libbpf-tools' offcputime may print nothing until Ctrl-C (and block-buffers stdout into a
    // pipe), so its attach is also detected by its program appearing.
    let offcputime = Path::new("/usr/sbin/offcputime");
    if offcputime.is_file() {
        configs.push(config(
            "offcputime (libbpf-tools)",
            Some(Spec {
                program: offcputime.to_path_buf(),
                args: Vec::new(),
                ready: Ready::LineOrPrograms("Tracing off-CPU time"),
                resend_sigint: true,
                ok_codes: &[],
            }),
        ));
    } else {
        notes.push("offcputime not benchmarked: /usr/sbin/offcputime missing".into());
    }

    match util::find_program("bpftrace") {
        Some(bpftrace) => configs.push(config(
            "bpftrace sched_switch count",
            Some(Spec {
                program: bpftrace,
                args: vec![
                    "-e".into(),
                    "tracepoint:sched:sched_switch { @[cpu] = count(); }".into(),
                ],
                ready: Ready::LineOrPrograms("Attaching"),
                resend_sigint: true,
                ok_codes: &[],
            }),
        )),
        None => notes.push("bpftrace reference not run: bpftrace missing".into()),
    }
    configs
}

/// The ping-pong programs.
struct Workloads<'a> {
    native: &'a Path,
    python: &'a Path,
}

/// What one run is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Pingpong's throughput (kernel BPF statistics off).
    Throughput,
    /// The tracer's BPF run time per program (statistics on; the throughput is not kept).
    BpfCost,
}

/// One pingpong run under `config`, recording its throughput or the tracer's BPF counters.
fn run_once(
    config: &mut Config,
    workloads: &Workloads,
    seconds: f64,
    measure: Measure,
) -> anyhow::Result<()> {
    let pingpong = |seconds| match config.workload {
        Workload::Native => pingpong_run(util::cmd(workloads.native), seconds),
        Workload::Python => {
            let mut command = util::cmd(PYTHON);
            command.arg(workloads.python);
            pingpong_run(command, seconds)
        }
    };
    let Some(spec) = &config.tracer else {
        let run = pingpong(seconds)?;
        config.runs.push(run);
        return Ok(());
    };
    let tracer = Running::start(spec, |pid| !bpf_stats::owned_by(pid).is_empty())?;
    if measure == Measure::Throughput {
        let result = pingpong(seconds);
        tracer.stop()?;
        config.runs.push(result?);
        return Ok(());
    }
    let owned = bpf_stats::owned_by(tracer.pid());
    let start: Vec<_> = bpf_stats::snapshot()?
        .into_iter()
        .filter(|p| owned.contains(&p.id))
        .collect();
    let result = pingpong(seconds);
    let end = bpf_stats::snapshot()?;
    tracer.stop()?;
    config.bpf_round_trips += result?.round_trips;
    bpf_stats::add_deltas(&mut config.bpf, &start, &end);
    Ok(())
}

/// Run a pingpong `command` for `seconds` and parse its JSON line.
fn pingpong_run(mut command: std::process::Command, seconds: f64) -> anyhow::Result<PingPong> {
    let out = util::output(command.arg("-d").arg(seconds.to_string()))?;
    let json: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("parsing pingpong output {out:?}"))?;
    let field = |name: &str| {
        json.get(name)
            .and_then(Value::as_f64)
            .with_context(|| format!("pingpong output lacks {name}: {out:?}"))
    };
    Ok(PingPong {
        round_trips: field("round_trips")? as u64,
        round_trips_per_sec: field("round_trips_per_sec")?,
        involuntary_switches: field("involuntary_switches").unwrap_or(0.0) as u64,
    })
}
