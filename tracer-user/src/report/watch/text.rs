//! `watch` reports for people, printed as each scan finds something.
//!
//! The reader wants the worst news first and no repetition: deadlocks come first in the
//! jstack layout Java developers already know (who waits for what, held by whom, then the
//! stacks), then other problems with threads blocked the same way on the same thing merged
//! into one headline (a pool of 40 workers stuck on one socket is one problem, not 40), then
//! idle threads, listed only when they may help explain a problem in the same process.
//! Every line that starts a finding begins with the verdict name, so the text greps like the
//! JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use groups::{group_block, groups, idle_groups, idle_line};

use super::{
    Resolved, WatchReport, describe_call, describe_resource, edge_resource, named_thread, why,
};
use crate::model::{Cycle, Finding, Frame, FrameKind, Origin, Timing, Verdict};

/// Renders one report: a time stamp line, then per process the deadlocks, the other problem
/// findings and the idle threads, then resolved waits and losses.
/// Returns an empty string for a non-final report with nothing in it.
pub(crate) fn render_text(report: &WatchReport) -> String {
    if report.has_no_threads() && report.losses.is_empty() && !report.is_final {
        return String::new();
    }
    let mut out = String::new();
    if report.restated {
        still_open_summary(&mut out, report);
        return out;
    }
    stamp_line(&mut out, report);
    if report.has_no_threads() && report.is_final {
        let _ = writeln!(
            out,
            "No stalls past the threshold ({}) were found.",
            fmt_ns(duration_ns(report.threshold))
        );
    }
    for pid in pids(report) {
        process_block(&mut out, report, pid);
    }
    let mut resolved: Vec<&Resolved> = report.resolved.iter().collect();
    resolved.sort_by_key(|r| (r.pid, r.tid));
    for r in resolved {
        resolved_line(&mut out, report, r);
    }
    losses_line(&mut out, report);
    out
}

/// `Lost: ...` when the kernel side counted losses.
fn losses_line(out: &mut String, report: &WatchReport) {
    if !report.losses.is_empty() {
        let lost: Vec<String> = report
            .losses
            .iter()
            .map(|(what, n)| format!("{} {n}", what.name()))
            .collect();
        let _ = writeln!(
            out,
            "Lost: {} (some waits or stacks may be missing)",
            lost.join(", ")
        );
    }
}

/// The end of a live watch: what is still stuck, one line per process and verdict, without
/// the stacks already printed when each was reported.
fn still_open_summary(out: &mut String, report: &WatchReport) {
    let problems: Vec<&Finding> = report
        .new_findings
        .iter()
        .filter(|f| f.verdict.is_problem())
        .collect();
    let _ = write!(out, "[+{:.1}s] (final) ", report.elapsed.as_secs_f64());
    let idle = report.new_findings.len() - problems.len();
    if problems.is_empty() && idle > 0 {
        let _ = writeln!(
            out,
            "no problem is open now ({} idle past the threshold).",
            plural(idle, "thread", "threads")
        );
    } else if problems.is_empty() {
        let _ = writeln!(out, "nothing is blocked past the threshold now.");
    } else {
        // Threads and cycles of processes not watched are there as links of a chain only.
        let watched = problems
            .iter()
            .filter(|f| report.is_watched(f.thread.pid))
            .count();
        let cycles = report
            .new_cycles
            .iter()
            .filter(|c| report.is_watched(c.pid))
            .count();
        let _ = writeln!(
            out,
            "still blocked at exit: {}, {}:",
            plural(watched, "thread", "threads"),
            plural(cycles, "deadlock", "deadlocks")
        );
    }
    let mut by_process: BTreeMap<(bool, u32, Verdict), Vec<&Finding>> = BTreeMap::new();
    for f in problems {
        let pid = f.thread.pid;
        by_process
            .entry((!report.is_watched(pid), pid, f.verdict))
            .or_default()
            .push(f);
    }
    for ((_, pid, verdict), members) in by_process {
        let _ = writeln!(
            out,
            "  {}{}: {}: {}",
            report.process_label(pid),
            not_watched(report, pid),
            verdict.name(),
            thread_names(&members)
        );
    }
    losses_line(out, report);
}

/// `[+12.0s] 5 threads past 5.0 s, 1 new deadlock, 1 resolved (final)`.
fn stamp_line(out: &mut String, report: &WatchReport) {
    let mut parts = Vec::new();
    let watched = |pid: u32| report.is_watched(pid);
    let threads = report
        .new_findings
        .iter()
        .filter(|f| watched(f.thread.pid))
        .count();
    let cycles = report.new_cycles.iter().filter(|c| watched(c.pid)).count();
    if threads > 0 {
        parts.push(format!(
            "{} past {}",
            plural(threads, "thread", "threads"),
            fmt_ns(duration_ns(report.threshold))
        ));
    }
    if cycles > 0 {
        parts.push(plural(cycles, "new deadlock", "new deadlocks"));
    }
    if !report.peer_processes.is_empty() {
        parts.push(format!(
            "leading into {}",
            plural(
                report.peer_processes.len(),
                "process not watched",
                "processes not watched"
            )
        ));
    }
    if !report.resolved.is_empty() {
        parts.push(format!("{} resolved", report.resolved.len()));
    }
    if parts.is_empty() {
        parts.push("nothing new".to_owned());
    }
    let _ = writeln!(
        out,
        "[+{:.1}s] {}{}",
        report.elapsed.as_secs_f64(),
        parts.join(", "),
        if report.is_final { " (final)" } else { "" }
    );
}

/// Every pid with a finding or a cycle, ascending, the watched processes first (the ones not
/// watched are there because a watched thread's wait chain leads into them).
fn pids(report: &WatchReport) -> Vec<u32> {
    let mut pids: Vec<u32> = report
        .new_findings
        .iter()
        .map(|f| f.thread.pid)
        .chain(report.new_cycles.iter().map(|c| c.pid))
        .collect();
    pids.sort_unstable_by_key(|&pid| (!report.is_watched(pid), pid));
    pids.dedup();
    pids
}

/// One process: its cycles, then its other problems grouped, then its idle threads.
fn process_block(out: &mut String, report: &WatchReport, pid: u32) {
    let cycles: Vec<&Cycle> = report.new_cycles.iter().filter(|c| c.pid == pid).collect();
    for cycle in &cycles {
        cycle_block(out, report, cycle);
    }
    let in_cycle = |tid: u32| cycles.iter().any(|c| c.edges.iter().any(|e| e.tid == tid));
    let rest: Vec<&Finding> = report
        .new_findings
        .iter()
        .filter(|f| f.thread.pid == pid && !in_cycle(f.thread.tid))
        .collect();
    let problems = groups(rest.iter().copied().filter(|f| f.verdict.is_problem()));
    let idle = idle_groups(rest.iter().copied().filter(|f| !f.verdict.is_problem()));
    // What to show is the caller's choice: a live watch passes idle threads only beside a
    // problem of their process, `--once` (a dump) passes every blocked thread.
    if problems.is_empty() && idle.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{} {}{}:",
        if cycles.is_empty() { "In" } else { "Also in" },
        report.process_label(pid),
        not_watched(report, pid)
    );
    for g in &problems {
        group_block(out, report, g);
    }
    for (key, members) in &idle {
        idle_line(out, key, members);
    }
}

/// What a process not watched is doing in the report: ` (not watched: a watched thread
/// waits on it)`.
fn not_watched(report: &WatchReport, pid: u32) -> &'static str {
    if report.is_watched(pid) {
        ""
    } else {
        " (not watched: a watched thread waits on it)"
    }
}

/// A deadlock in the jstack layout: one line per edge, then the stacks of its threads.
fn cycle_block(out: &mut String, report: &WatchReport, cycle: &Cycle) {
    let _ = writeln!(
        out,
        "Found one deadlock in {}{}:",
        report.process_label(cycle.pid),
        not_watched(report, cycle.pid)
    );
    let who = |tid: u32| {
        let comm = report.finding(cycle.pid, tid).map(|f| f.thread.name());
        named_thread(tid, comm)
    };
    for e in &cycle.edges {
        let _ = writeln!(
            out,
            "  {}: waiting for {}, held by {}",
            who(e.tid),
            edge_resource(e, report.finding(cycle.pid, e.tid)),
            who(e.owner.tid)
        );
    }
    let _ = writeln!(out, "Stacks of the threads listed above:");
    for e in &cycle.edges {
        match report.finding(cycle.pid, e.tid) {
            Some(f) => {
                thread_header(out, f);
                stack_lines(out, f);
            }
            None => {
                let _ = writeln!(out, "  tid {}: not in this report", e.tid);
            }
        }
    }
}

/// `  "abba-a" tid 1235, state S, blocked for 14.2 s in futex FUTEX_WAIT on mutex ...`.
fn thread_header(out: &mut String, f: &Finding) {
    let t = &f.thread;
    let _ = writeln!(
        out,
        "  \"{}\" tid {}, state {}, blocked for {}{} in {} on {}{}",
        t.name(),
        t.tid,
        t.state.letter(),
        fmt_ns(t.blocked_for_ns),
        origin_note(t.origin),
        describe_call(t),
        describe_resource(f),
        if f.timing == Timing::Timed {
            " (timed)"
        } else {
            ""
        }
    );
}

/// Marks a duration that is only approximate: a wait already running when `watch` attached.
fn origin_note(origin: Origin) -> &'static str {
    match origin {
        Origin::Traced => "",
        Origin::Snapshot => " (approx., began before watch attached)",
    }
}

/// The user frames then the kernel frames of a thread, innermost first, one per line.
fn stack_lines(out: &mut String, f: &Finding) {
    for (label, frames) in [
        ("user", &f.thread.user_stack),
        ("kernel", &f.thread.kernel_stack),
    ] {
        if frames.is_empty() {
            let _ = writeln!(out, "      {label}: no stack");
            continue;
        }
        let _ = writeln!(out, "      {label}:");
        for frame in frames {
            let _ = writeln!(out, "        {}", frame_text(frame));
        }
    }
}

/// `name+0xoff (file:line)`, `name (inlined) (file:line)`, `module+0xoff` or
/// `[unknown 0xaddr]`; file and module as basenames.
fn frame_text(frame: &Frame) -> String {
    let mut s = match (&frame.name, &frame.module) {
        (Some(name), _) if frame.inlined => format!("{name} (inlined)"),
        (Some(name), _) if matches!(frame.kind, FrameKind::Interpreted { .. }) => name.clone(),
        (Some(name), _) => format!("{name}+0x{:x}", frame.offset),
        (None, Some(module)) => format!("{}+0x{:x}", basename(module), frame.offset),
        (None, None) => format!("[unknown 0x{:x}]", frame.addr),
    };
    if let Some(file) = &frame.file {
        match frame.line {
            Some(line) => {
                let _ = write!(s, " ({}:{line})", basename(file));
            }
            None => {
                let _ = write!(s, " ({})", basename(file));
            }
        }
    }
    s
}

/// Last path component.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `pool-0 (1100), pool-1 (1101)`: the threads' names and tids, in the given order.
fn thread_names(members: &[&Finding]) -> String {
    let names: Vec<String> = members
        .iter()
        .map(|f| format!("{} ({})", f.thread.name(), f.thread.tid))
        .collect();
    names.join(", ")
}

/// `resolved: thread 1235 (abba-a) in process 1234 (deadlock_abba) after 14.2 s (was stall)`.
fn resolved_line(out: &mut String, report: &WatchReport, r: &Resolved) {
    let process = match report.process_names.get(&r.pid) {
        Some(name) => format!("{} ({name})", r.pid),
        None => r.pid.to_string(),
    };
    let _ = writeln!(
        out,
        "resolved: thread {} ({}) in process {process} after {} (was {})",
        r.tid,
        r.comm,
        fmt_ns(r.blocked_for_ns),
        r.verdict.name()
    );
}

/// `1 thread`, `3 threads`.
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `1, 2 and 3`.
fn join_nums(nums: &[u32]) -> String {
    let strs: Vec<String> = nums.iter().map(u32::to_string).collect();
    match strs.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => strs.join(""),
    }
}

/// A duration in ns.
fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Human duration: `850 ms`, `14.2 s`, `12 min 5 s`, `3 h 20 min`.
fn fmt_ns(ns: u64) -> String {
    let ms = super::ns_to_ms(ns);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

mod groups;
#[cfg(test)]
mod tests;
