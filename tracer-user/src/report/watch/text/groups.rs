//! Grouping for the text report: problems blocked the same way on the same thing under one
//! headline (a pool of 40 workers stuck on one socket is one problem, not 40), idle threads of
//! a process in one line per kind of wait.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    WatchReport, describe_call, describe_resource, fmt_ns, join_nums, plural, stack_lines,
    thread_names, why,
};
use crate::{
    model::{FdType, Finding, Verdict},
    stall::peer_chain::{Hop, chain},
};

/// Problem findings blocked the same way on the same thing, with the same verdict.
pub(super) struct Group<'a> {
    verdict: Verdict,
    call: String,
    resource: String,
    /// Longest blocked first.
    members: Vec<&'a Finding>,
}

/// Groups findings by (verdict, call, resource); groups ordered by verdict severity, then
/// longest wait.
pub(super) fn groups<'a>(findings: impl Iterator<Item = &'a Finding>) -> Vec<Group<'a>> {
    let mut by_key: BTreeMap<(Verdict, String, String), Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        let key = (f.verdict, describe_call(&f.thread), group_resource(f));
        by_key.entry(key).or_default().push(f);
    }
    let mut groups: Vec<Group> = by_key
        .into_iter()
        .map(|((verdict, call, resource), mut members)| {
            members.sort_by_key(|f| (std::cmp::Reverse(f.thread.blocked_for_ns), f.thread.tid));
            Group {
                verdict,
                call,
                resource,
                members,
            }
        })
        .collect();
    groups.sort_by_key(|g| (g.verdict, std::cmp::Reverse(longest_ns(g))));
    groups
}

/// What a group's threads wait on: a socket's peer address, so that every connection to the
/// same server groups together (`4 threads blocked in recvfrom on 127.0.0.1:5432`), else the
/// full resource description.
fn group_resource(f: &Finding) -> String {
    match &f.thread.fd {
        Some(fd) if fd.fd_type == FdType::Socket => fd
            .peer()
            .map_or_else(|| describe_resource(f), str::to_owned),
        _ => describe_resource(f),
    }
}

/// The longest wait of a group.
fn longest_ns(g: &Group) -> u64 {
    g.members.first().map_or(0, |f| f.thread.blocked_for_ns)
}

/// A group: headline, threads, explanations, the wait chain, stacks.
pub(super) fn group_block(out: &mut String, report: &WatchReport, g: &Group) {
    let subject = match g.members.as_slice() {
        [only] => format!("thread {} ({})", only.thread.tid, only.thread.name()),
        many => format!("{} threads", many.len()),
    };
    let _ = writeln!(
        out,
        "{}: {subject} blocked in {} on {} for {}{}",
        g.verdict.name(),
        g.call,
        g.resource,
        fmt_ns(longest_ns(g)),
        verdict_meaning(g.verdict)
    );
    if g.members.len() > 1 {
        let threads: Vec<String> = g
            .members
            .iter()
            .map(|f| {
                format!(
                    "{} ({}, {})",
                    f.thread.tid,
                    f.thread.name(),
                    fmt_ns(f.thread.blocked_for_ns)
                )
            })
            .collect();
        let _ = writeln!(out, "  threads: {}", threads.join(", "));
    }
    why_lines(out, &g.members);
    match g.members.as_slice() {
        [only] => chain_lines(out, report, only, true),
        [first, ..] => chain_lines(out, report, first, false),
        [] => {}
    }
    distinct_stacks(out, &g.members);
}

/// The chain of threads a thread waits on, as far as the report knows them
/// (`stall::peer_chain::chain`), one line per link: `-> waits for the holder "abba-b" (tid
/// 1236), blocked in futex FUTEX_WAIT on mutex 0x55.. held by tid 1235 for 14.2 s`; into the
/// process at the other end of a pipe or local socket: `-> waits for a reply from process
/// 2000 (server): "handler-0" (tid 2003) and 1 more thread there are blocked_by_deadlock,
/// blocked in ...`. For a group of several threads (`whole` false) only a chain that starts
/// at the other end of their shared connection is shown (their lock owners may differ).
fn chain_lines(out: &mut String, report: &WatchReport, f: &Finding, whole: bool) {
    let links = chain(&report.new_findings, f);
    if !whole && links.first().is_none_or(|l| l.hop != Hop::Peer) {
        return;
    }
    let mut previous = f;
    for link in &links {
        let next = link.finding;
        let t = &next.thread;
        let who = format!("\"{}\" (tid {})", t.name(), t.tid);
        // Threads of another process than the start's are not in its headline: say what
        // they are.
        let verdict = if t.pid == f.thread.pid && link.hop != Hop::Peer {
            String::new()
        } else {
            format!(" {}:", next.verdict.name())
        };
        let head = match link.hop {
            Hop::Peer => {
                let (are, there) = match link.alike {
                    0 => ("is", String::new()),
                    n => (
                        "are",
                        format!(" and {} there", plural(n, "more thread", "more threads")),
                    ),
                };
                format!(
                    "waits for {} {}: {who}{there} {are}{verdict}",
                    awaited(previous),
                    report.process_label(t.pid)
                )
            }
            Hop::Holder => format!("waits for the holder {who},{verdict}"),
            Hop::Joined => format!("waits for {who},{verdict}"),
        };
        let cycle = if link.closes_cycle && links.iter().any(|l| l.hop == Hop::Peer) {
            ": the cycle closes here"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  -> {head} blocked in {} on {} for {}{cycle}",
            describe_call(t),
            describe_resource(next),
            fmt_ns(t.blocked_for_ns)
        );
        previous = next;
    }
}

/// What a thread waiting on another process awaits from it: input on a pipe, else a reply.
fn awaited(f: &Finding) -> &'static str {
    match f.thread.fd.as_ref().map(|d| d.fd_type) {
        Some(FdType::Pipe | FdType::Fifo) => "input from",
        _ => "a reply from",
    }
}

/// What a verdict means, appended to its headline.
fn verdict_meaning(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Deadlock => "; part of a deadlock cycle, it can never wake",
        Verdict::BlockedByDeadlock => "; it waits on a deadlocked thread and can never wake",
        Verdict::ProcessStalled => {
            "; every thread of the process waits and nothing outside it can wake them"
        }
        Verdict::EventLoopBlocked => {
            "; an event-loop thread stuck outside its poll call: its events are not handled"
        }
        Verdict::Stall => "; an indefinite wait past the threshold",
        Verdict::Idle => "; waiting for work",
    }
}

/// What the findings' reasons add to the headline: once if they all agree, else one line
/// per thread; nothing when the headline already says it all.
fn why_lines(out: &mut String, members: &[&Finding]) {
    let whys: Vec<Option<String>> = members.iter().map(|f| why(f)).collect();
    let Some(first) = whys.first() else {
        return;
    };
    if whys.iter().all(|w| w == first) {
        if let Some(why) = first {
            let _ = writeln!(out, "  why: {why}");
        }
        return;
    }
    for (f, why) in members.iter().zip(&whys) {
        if let Some(why) = why {
            let _ = writeln!(out, "  why ({}): {why}", f.thread.tid);
        }
    }
}

/// One stack per distinct (user, kernel) stack in the group, with the threads sharing it.
fn distinct_stacks(out: &mut String, members: &[&Finding]) {
    let mut distinct: Vec<(&Finding, Vec<u32>)> = Vec::new();
    for f in members {
        let same = distinct.iter_mut().find(|(rep, _)| {
            rep.thread.user_stack == f.thread.user_stack
                && rep.thread.kernel_stack == f.thread.kernel_stack
        });
        match same {
            Some((_, tids)) => tids.push(f.thread.tid),
            None => distinct.push((f, vec![f.thread.tid])),
        }
    }
    for (rep, tids) in &distinct {
        let who = match tids.as_slice() {
            [tid] => format!("thread {tid}"),
            _ if distinct.len() == 1 => format!("all {} threads", tids.len()),
            many => format!("threads {}", join_nums(many)),
        };
        let _ = writeln!(out, "  stack of {who}:");
        stack_lines(out, rep);
    }
}

/// Idle findings of one process by (call, class of resource): a condition variable per
/// worker still makes one line.
pub(super) fn idle_groups<'a>(
    findings: impl Iterator<Item = &'a Finding>,
) -> BTreeMap<(String, String), Vec<&'a Finding>> {
    let mut by_key: BTreeMap<(String, String), Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        let class = match (&f.thread.futex, f.owner) {
            (Some(_), None) => " (no owner known)".to_owned(),
            _ => format!(" on {}", describe_resource(f)),
        };
        by_key
            .entry((describe_call(&f.thread), class))
            .or_default()
            .push(f);
    }
    by_key
}

/// `idle: 3 threads waiting in futex FUTEX_WAIT (no owner known): pool-0 (1100), ...`.
pub(super) fn idle_line(out: &mut String, (call, class): &(String, String), members: &[&Finding]) {
    let mut members = members.to_vec();
    members.sort_by_key(|f| f.thread.tid);
    let _ = writeln!(
        out,
        "idle: {} waiting in {call}{class}: {}",
        plural(members.len(), "thread", "threads"),
        thread_names(&members)
    );
}
