//! Grouping for the text report: problems blocked the same way on the same thing under one
//! headline (a pool of 40 workers stuck on one socket is one problem, not 40), idle threads of
//! a process in one line per kind of wait.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    WatchReport, describe_call, describe_resource, fmt_ns, join_nums, peer_pid, plural,
    stack_lines, thread_names, why,
};
use crate::model::{FdType, Finding, Verdict};

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
        [only] => chain_lines(out, report, only),
        [first, ..] => peer_lines(out, report, first),
        [] => {}
    }
    distinct_stacks(out, &g.members);
}

/// Longest wait chain followed.
const MAX_CHAIN: usize = 8;

/// The chain of threads a thread waits on, as far as the report knows them: `-> waits for
/// "pool_0" (tid 1236), blocked in recvfrom on 10.0.0.5:443 for 31.0 s`, one line per hop,
/// until a thread that waits on no other thread (or one already named: a cycle).
fn chain_lines(out: &mut String, report: &WatchReport, f: &Finding) {
    let mut seen = vec![f.thread.tid];
    let mut current = f;
    for _ in 0..MAX_CHAIN {
        let Some(owner) = current.owner else {
            peer_lines(out, report, current);
            return;
        };
        let Some(next) = report.finding(current.thread.pid, owner.tid) else {
            return;
        };
        let relation = if owner.source.is_join() {
            "waits for"
        } else {
            "waits for the holder"
        };
        let _ = writeln!(
            out,
            "  -> {relation} \"{}\" (tid {}), blocked in {} on {} for {}",
            next.thread.name(),
            next.thread.tid,
            describe_call(&next.thread),
            describe_resource(next),
            fmt_ns(next.thread.blocked_for_ns)
        );
        if seen.contains(&next.thread.tid) {
            return;
        }
        seen.push(next.thread.tid);
        current = next;
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

/// Where a wait on a pipe or a local socket leads when the process at the other end has
/// problems of its own in this report: `-> the other end is process 2000 (server), where
/// "worker-1" (tid 2003) is in a deadlock`, naming its most severe problem (and how many more
/// it has).
fn peer_lines(out: &mut String, report: &WatchReport, f: &Finding) {
    let Some(pid) = peer_pid(f).filter(|&p| p != f.thread.pid) else {
        return;
    };
    let mut problems: Vec<&Finding> = report
        .new_findings
        .iter()
        .filter(|g| g.thread.pid == pid && g.verdict.is_problem())
        .collect();
    problems.sort_by_key(|g| (g.verdict, g.thread.tid));
    let Some(worst) = problems.first() else {
        return;
    };
    let more = match problems.len() - 1 {
        0 => String::new(),
        n => format!(
            " (and {} blocked there)",
            plural(n, "more thread", "more threads")
        ),
    };
    let _ = writeln!(
        out,
        "  -> the other end is {}, where \"{}\" (tid {}) is {}: blocked in {} on {} for {}{more}",
        report.process_label(pid),
        worst.thread.name(),
        worst.thread.tid,
        worst.verdict.name(),
        describe_call(&worst.thread),
        describe_resource(worst),
        fmt_ns(worst.thread.blocked_for_ns),
    );
}
