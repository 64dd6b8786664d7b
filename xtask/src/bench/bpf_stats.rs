//! Per-program BPF run time from the kernel's own accounting: with
//! `kernel.bpf_stats_enabled=1`, `bpftool prog show -j` reports `run_time_ns` and `run_cnt`
//! for every loaded program. A tracer's programs are the ones its process holds open.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::util;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One loaded program's counters.
#[derive(Clone, Debug)]
pub(super) struct Prog {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Run time and run count summed per program name.
pub(super) type Totals = BTreeMap<String, (u64, u64)>;

/// All loaded programs.
pub(super) fn snapshot() -> anyhow::Result<Vec<Prog>> {
    let json = util::output(util::cmd("bpftool").args(["prog", "show", "-j"]))?;
    parse(&json)
}

/// Parse `bpftool prog show -j` output.
fn parse(json: &str) -> anyhow::Result<Vec<Prog>> {
    let value: Value = serde_json::from_str(json).context("parsing bpftool JSON")?;
    let progs = value.as_array().context("bpftool JSON is not a list")?;
    Ok(progs
        .iter()
        .filter_map(|p| {
            Some(Prog {
                id: p.get("id")?.as_u64()?,
                name: p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                run_time_ns: p.get("run_time_ns").and_then(Value::as_u64).unwrap_or(0),
                run_cnt: p.get("run_cnt").and_then(Value::as_u64).unwrap_or(0),
            })
        })
        .collect())
}

/// Ids of the BPF programs process `pid` holds open: each program fd's
/// `/proc/PID/fdinfo/FD` has a `prog_id:` line. This tells a tracer's programs apart from
/// ones other tools load at the same time.
pub(super) fn owned_by(pid: u32) -> BTreeSet<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// Add to `totals` what each program in `start` ran until `end`. Programs missing from `end`
/// (transient ones, such as bpftool's own iterator) are ignored.
pub(super) fn add_deltas(totals: &mut Totals, start: &[Prog], end: &[Prog]) {
    for s in start {
        if let Some(e) = end.iter().find(|e| e.id == s.id) {
            let entry = totals.entry(s.name.clone()).or_default();
            entry.0 += e.run_time_ns.saturating_sub(s.run_time_ns);
            entry.1 += e.run_cnt.saturating_sub(s.run_cnt);
        }
    }
}

/// Sets `kernel.bpf_stats_enabled` and restores the previous value when dropped.
pub(super) struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    /// Turns the statistics on or off until the value is dropped.
    pub(super) fn set(on: bool) -> anyhow::Result<Self> {
        let previous =
            fs::read_to_string(STATS_SYSCTL).with_context(|| format!("reading {STATS_SYSCTL}"))?;
        let value = if on { "1" } else { "0" };
        fs::write(STATS_SYSCTL, value)
            .with_context(|| format!("writing {value} to {STATS_SYSCTL}"))?;
        Ok(StatsEnabled {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(err) = fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore {STATS_SYSCTL} to {}: {err}",
                self.previous
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that deltas are summed by name and programs that vanished are skipped.
    #[test]
    fn deltas_sum_by_name_and_skip_vanished_programs() {
        let json = r#"[{"id":1,"name":"sched_switch","run_time_ns":100,"run_cnt":2},
                       {"id":2,"name":"sys_enter"},
                       {"id":3,"name":"pid_iter","run_time_ns":5,"run_cnt":1}]"#;
        let start = parse(json).unwrap();
        let end = parse(
            r#"[{"id":1,"name":"sched_switch","run_time_ns":400,"run_cnt":5},
                {"id":2,"name":"sys_enter","run_time_ns":30,"run_cnt":3}]"#,
        )
        .unwrap();
        let mut totals = Totals::new();
        add_deltas(&mut totals, &start, &end);
        add_deltas(&mut totals, &start, &end);
        assert_eq!(totals["sched_switch"], (600, 6));
        assert_eq!(totals["sys_enter"], (60, 6));
        assert!(!totals.contains_key("pid_iter"));
    }
}
