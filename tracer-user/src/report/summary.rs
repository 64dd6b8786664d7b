//! The end-of-run summary: totals per process, wait kind and thread, plus the loss counters.
//!
//! Blocked time (S, D and other states) and runnable time (waiting for a CPU) are different
//! problems with different fixes, so they are never added together: every total here is
//! blocked time, and runnable time is one separate number. Waits still in progress when the
//! trace ended are blocked time too (charged up to the end) and are also shown on their own,
//! since their real length is unknown. The same struct serializes to JSON for scripts.

use std::{collections::HashMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use crate::model::{Capture, Counters, LossReason, ThreadState, WaitKind};

/// Totals of one capture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// How long the trace ran.
    pub duration_ms: u64,
    /// Blocked off-CPU time (not runnable), including `still_blocked_us`.
    pub blocked_us: u64,
    /// Time spent runnable but off-CPU (preempted, waiting for a CPU).
    pub runnable_us: u64,
    /// Blocked time of waits still in progress at the end (part of `blocked_us`).
    pub still_blocked_us: u64,
    /// Number of blocked waits.
    pub waits: u64,
    /// Blocked time per process, largest first.
    pub processes: Vec<ProcessTotal>,
    /// Blocked time per wait kind, largest first.
    pub wait_kinds: Vec<KindTotal>,
    /// Blocked time per thread, largest first.
    pub threads: Vec<ThreadTotal>,
    /// Kernel-side counters as captured.
    pub counters: Counters,
    /// Non-zero loss counters.
    pub losses: Vec<Loss>,
}

/// Blocked time of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessTotal {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub name: String,
    /// Blocked off-CPU time.
    pub offcpu_us: u64,
    /// Number of blocked waits.
    pub waits: u64,
}

/// Blocked time of one wait kind (`futex`, `epoll`, ... `other`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KindTotal {
    /// Wait kind name, as in the folded `[KIND]` leaf.
    pub kind: String,
    /// Blocked off-CPU time.
    pub offcpu_us: u64,
    /// Number of blocked waits.
    pub waits: u64,
}

/// Blocked time of one thread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThreadTotal {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Blocked off-CPU time.
    pub offcpu_us: u64,
    /// Number of blocked waits.
    pub waits: u64,
}

/// One kind of loss and how often it happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Loss {
    /// What was lost, e.g. "stack map full".
    pub reason: String,
    /// How many times.
    pub count: u64,
    /// What to do about it.
    #[serde(default)]
    pub hint: String,
}

/// Accumulator: nanoseconds and waits.
#[derive(Clone, Copy, Default)]
struct Acc {
    ns: u64,
    waits: u64,
}

impl Acc {
    fn add(&mut self, ns: u64, waits: u64) {
        self.ns = self.ns.saturating_add(ns);
        self.waits = self.waits.saturating_add(waits);
    }
}

impl Summary {
    /// Totals of `capture`. Process names come from the capture, else `process_name`, else
    /// the comm of the process' main thread (or any of its threads).
    pub(crate) fn from_capture(
        capture: &Capture,
        process_name: impl Fn(u32) -> Option<String>,
    ) -> Self {
        let (mut blocked, mut runnable, mut still) = (Acc::default(), 0u64, 0u64);
        let mut by_pid: HashMap<u32, Acc> = HashMap::new();
        let mut by_kind: HashMap<&'static str, Acc> = HashMap::new();
        let mut by_tid: HashMap<(u32, u32), (Acc, &str)> = HashMap::new();
        let mut comm_of_pid: HashMap<u32, &str> = HashMap::new();

        for s in &capture.samples {
            // The main thread's comm names the process; any thread's will do otherwise.
            if s.tid == s.pid || !comm_of_pid.contains_key(&s.pid) {
                comm_of_pid.insert(s.pid, &s.comm);
            }
            if s.state == Some(ThreadState::Runnable) {
                runnable = runnable.saturating_add(s.total_ns);
                continue;
            }
            blocked.add(s.total_ns, s.count);
            if s.still_blocked {
                still = still.saturating_add(s.total_ns);
            }
            by_pid.entry(s.pid).or_default().add(s.total_ns, s.count);
            by_kind
                .entry(s.call.map_or(WaitKind::Other, |c| c.kind).name())
                .or_default()
                .add(s.total_ns, s.count);
            by_tid
                .entry((s.pid, s.tid))
                .or_insert((Acc::default(), &s.comm))
                .0
                .add(s.total_ns, s.count);
        }

        let mut processes: Vec<ProcessTotal> = by_pid
            .into_iter()
            .map(|(pid, acc)| ProcessTotal {
                pid,
                name: capture
                    .process_names
                    .get(&pid)
                    .cloned()
                    .or_else(|| process_name(pid))
                    .or_else(|| comm_of_pid.get(&pid).map(|c| c.to_string()))
                    .unwrap_or_default(),
                offcpu_us: ns_to_us(acc.ns),
                waits: acc.waits,
            })
            .collect();
        processes.sort_by(|a, b| b.offcpu_us.cmp(&a.offcpu_us).then(a.pid.cmp(&b.pid)));

        let mut wait_kinds: Vec<KindTotal> = by_kind
            .into_iter()
            .map(|(kind, acc)| KindTotal {
                kind: kind.to_owned(),
                offcpu_us: ns_to_us(acc.ns),
                waits: acc.waits,
            })
            .collect();
        wait_kinds.sort_by(|a, b| {
            b.offcpu_us
                .cmp(&a.offcpu_us)
                .then_with(|| a.kind.cmp(&b.kind))
        });

        let mut threads: Vec<ThreadTotal> = by_tid
            .into_iter()
            .map(|((pid, tid), (acc, comm))| ThreadTotal {
                pid,
                tid,
                comm: comm.to_owned(),
                offcpu_us: ns_to_us(acc.ns),
                waits: acc.waits,
            })
            .collect();
        threads.sort_by(|a, b| {
            b.offcpu_us
                .cmp(&a.offcpu_us)
                .then((a.pid, a.tid).cmp(&(b.pid, b.tid)))
        });

        Summary {
            duration_ms: u64::try_from(capture.duration.as_millis()).unwrap_or(u64::MAX),
            blocked_us: ns_to_us(blocked.ns),
            runnable_us: ns_to_us(runnable),
            still_blocked_us: ns_to_us(still),
            waits: blocked.waits,
            processes,
            wait_kinds,
            threads,
            counters: capture.counters.clone(),
            losses: capture
                .counters
                .losses()
                .into_iter()
                .map(|(reason, count)| Loss {
                    reason: reason.name().to_owned(),
                    hint: loss_hint(reason).to_owned(),
                    count,
                })
                .collect(),
        }
    }

    /// A short block of text for stderr: duration and totals, the `top` processes, wait
    /// kinds, event counts and losses (each with what to do about it).
    pub(crate) fn render_text(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Traced {}: {} blocked off-CPU in {} waits, {} runnable (waiting for a CPU)",
            fmt_us(self.duration_ms.saturating_mul(1000)),
            fmt_us(self.blocked_us),
            self.waits,
            fmt_us(self.runnable_us),
        );
        if self.still_blocked_us > 0 {
            let _ = writeln!(
                out,
                "  of which {} in waits still blocked when the trace ended",
                fmt_us(self.still_blocked_us)
            );
        }
        if !self.processes.is_empty() {
            let shown = self.processes.len().min(top);
            let _ = writeln!(
                out,
                "Blocked time by process (top {shown} of {}):",
                self.processes.len()
            );
            for p in self.processes.iter().take(top) {
                let _ = writeln!(
                    out,
                    "  {:>10}  {:>7} waits  {} ({})",
                    fmt_us(p.offcpu_us),
                    p.waits,
                    p.name,
                    p.pid
                );
            }
        }
        if !self.wait_kinds.is_empty() {
            let _ = writeln!(out, "Blocked time by wait kind:");
            for k in &self.wait_kinds {
                let _ = writeln!(
                    out,
                    "  {:>10}  {:>7} waits  {}",
                    fmt_us(k.offcpu_us),
                    k.waits,
                    k.kind
                );
            }
        }
        let c = &self.counters;
        let copies = match c.sites_shipped {
            0 => String::new(),
            n => format!(", {n} stack copies shipped"),
        };
        let _ = writeln!(
            out,
            "Events: {} waits charged, {} stack memo hits, {} wakers recorded{copies}",
            c.waits_charged, c.stack_memo_hits, c.wakers_recorded
        );
        if self.losses.is_empty() {
            let _ = writeln!(out, "Lost: none");
        } else {
            let _ = writeln!(out, "Lost:");
            for l in &self.losses {
                let _ = writeln!(out, "  {}: {} ({})", l.reason, l.count, l.hint);
            }
        }
        out
    }
}

/// What to do about a loss.
fn loss_hint(reason: LossReason) -> &'static str {
    match reason {
        LossReason::StackMapFull => "raise --stack-storage-size",
        LossReason::ThreadMapFull => "too many threads blocked at once; narrow with -p/-t",
        LossReason::AggregateMapFull => "too many distinct stacks; narrow with -p/-t or raise -m",
        LossReason::KernelStackError => {
            "kernel stack walks failed; those waits show [missed kernel stack]"
        }
        LossReason::UserStackError => {
            "user stack walks failed; those waits show [missed user stack]"
        }
        LossReason::NewProcessNoticeLost => {
            "short-lived processes may show module+offset frames instead of names"
        }
        LossReason::WaitEndNotSeen => "see docs/formats.md",
        LossReason::UserFrameOutsideCode => {
            "frame-pointer walks that went astray (code without frame pointers); \
             those stacks end at the last real frame"
        }
        LossReason::UserFrameAfterBadFrame => "dropped with the bad frame they followed",
        LossReason::PythonStackError => {
            "Python frame chains unreadable or the Python stack store full; \
             those waits show no Python frames"
        }
        LossReason::StackCopyError => {
            "the stack could not be read; those waits show [missed user stack]"
        }
        LossReason::SiteRingFull | LossReason::SiteMapFull | LossReason::SiteMissing => {
            "stack copies not delivered; those waits show [missed user stack]"
        }
        LossReason::SiteNotUnwound => {
            "no CFI for the code; those stacks show their innermost frame only"
        }
        LossReason::SiteProcessGone => {
            "the process exited before its maps were read; those stacks show their innermost frame only"
        }
        LossReason::PythonThreadSearchError => {
            "threads not yet listed could not be looked up in their interpreter; \
             their waits may show no Python frames"
        }
    }
}

/// Nanoseconds to microseconds, rounded to nearest.
fn ns_to_us(ns: u64) -> u64 {
    ns.saturating_add(500) / 1000
}

/// Human duration from microseconds: `850 us`, `12.3 ms`, `4.56 s`.
fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests;
