//! Reading `stallwatch watch --json` output (JSON Lines, docs/json-schema.md) in tests.

use std::path::Path;

use serde_json::Value;

/// Every report line of one watch run.
#[derive(Debug)]
pub struct WatchOutput {
    /// The parsed report objects, in order.
    pub reports: Vec<Value>,
}

impl WatchOutput {
    /// Parses a JSON Lines file; panics on a line that is not JSON.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Self::parse(&text)
    }

    /// Parses JSON Lines text.
    pub fn parse(text: &str) -> Self {
        let reports = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect();
        Self { reports }
    }

    /// Every thread object of every report (a thread can appear in several).
    pub fn threads(&self) -> Vec<&Value> {
        self.reports
            .iter()
            .flat_map(|r| r["threads"].as_array().into_iter().flatten())
            .collect()
    }

    /// The thread objects of `tid`.
    pub fn thread(&self, tid: u32) -> Vec<&Value> {
        self.threads()
            .into_iter()
            .filter(|t| t["tid"].as_u64() == Some(tid as u64))
            .collect()
    }

    /// The first report object of `tid` with verdict `verdict`; panics with the report when
    /// there is none.
    pub fn thread_with(&self, tid: u32, verdict: &str) -> &Value {
        self.thread(tid)
            .into_iter()
            .find(|t| t["verdict"] == verdict)
            .unwrap_or_else(|| panic!("no {verdict} verdict for tid {tid}:\n{}", self.dump()))
    }

    /// Verdicts ever given to `tid`.
    pub fn verdicts(&self, tid: u32) -> Vec<String> {
        self.thread(tid)
            .iter()
            .filter_map(|t| t["verdict"].as_str().map(str::to_string))
            .collect()
    }

    /// Every cycle of every report.
    pub fn cycles(&self) -> Vec<&Value> {
        self.reports
            .iter()
            .flat_map(|r| r["cycles"].as_array().into_iter().flatten())
            .collect()
    }

    /// The distinct cycles (one is reported when found and restated in the final report),
    /// each as its sorted (tid, owner_tid) edges.
    pub fn distinct_cycles(&self) -> Vec<Vec<(u32, u32)>> {
        let mut distinct: Vec<Vec<(u32, u32)>> = self
            .cycles()
            .into_iter()
            .map(|c| {
                let mut edges = cycle_edges(c);
                edges.sort_unstable();
                edges
            })
            .collect();
        distinct.dedup();
        distinct
    }

    /// Threads with a verdict other than idle.
    pub fn problems(&self) -> Vec<&Value> {
        self.threads()
            .into_iter()
            .filter(|t| t["verdict"].as_str() != Some("idle"))
            .collect()
    }

    /// The whole output, for assertion messages.
    pub fn dump(&self) -> String {
        self.reports
            .iter()
            .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// (tid, owner_tid) of each edge of a cycle.
pub fn cycle_edges(cycle: &Value) -> Vec<(u32, u32)> {
    cycle["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["tid"].as_u64().unwrap_or(0) as u32,
                e["owner_tid"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

/// Symbol names of a thread object's user stack, innermost first.
pub fn user_symbols(thread: &Value) -> Vec<String> {
    thread["user_stack"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["symbol"].as_str().map(str::to_string))
        .collect()
}
