//! Wait chains across processes: a thread waiting on a pipe or a local socket waits on the
//! process at the other end, so that process's state decides its verdict.
//!
//! The per-thread rules judge such a wait by the connection alone: a request sent and nothing
//! received since is a stall, a pipe whose writers are all stuck is a stall. That names the
//! symptom, not the cause: two clients waiting for a reply from a server whose handlers wait
//! for a mutex held by a deadlocked worker are stuck *because of* the deadlock, and a client
//! whose request the server read and holds (a blocking queue pop, a long poll) while the
//! server sits idle waits for work, like a server in `accept`. After the per-thread verdicts:
//!
//! - every finding learns the process at the other end ([`Finding::peer`]) and, where it can
//!   be known, the thread there: the process's only thread, or its one blocked thread whose
//!   own wait is on that other end (the peer socket's inode, the same pipe). A server with a
//!   thread per connection does not say which thread serves which connection, so with several
//!   threads and none blocked on the connection itself the thread stays unknown;
//! - a stall on such a wait (an unanswered request, a unix request unread, no input, a
//!   stuck writer), or a unix client whose peer read everything it sent, whose peer process
//!   has a problem of its own is a stall *behind* it ([`Reason::PeerBlocked`]);
//! - an unanswered request that the peer has read (nothing unread in its receive queue) while
//!   the peer has no problem thread at all is idle ([`Reason::RequestHeldByPeer`]);
//! - a request still unread, or a peer that was not inspected (not in `processes`: it is in
//!   another namespace, or beyond what `watch` follows), keeps the verdict it had.
//!
//! Verdicts change each other (a proxy behind a deadlocked server is a problem its own
//! clients are behind), so the rule runs in rounds until nothing changes, at most
//! [`MAX_ROUNDS`]: chains of that many processes resolve. Waits on one's own process are left
//! to the in-process rules (its threads are in the same report, and its own waiting threads
//! would otherwise count as the problem they wait on).
//!
//! [`chain`] walks from a finding through the peers and lock owners it waits on, for the
//! reports.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{BlockedThread, Finding, PeerRef, ProcessView, Reason, Verdict};

/// Most rounds of [`follow_peers`]: the longest chain of processes that resolves.
const MAX_ROUNDS: usize = 8;
/// Most links [`chain`] walks.
const MAX_LINKS: usize = 12;

/// Gives every finding its peer, then the verdicts that follow from the peers' (see the
/// module docs). `processes` holds every process whose threads were inspected.
pub(crate) fn follow_peers(findings: &mut [Finding], processes: &BTreeMap<u32, ProcessView>) {
    let peers: Vec<Option<PeerRef>> = findings
        .iter()
        .map(|f| peer_of(f, findings, processes))
        .collect();
    for (f, peer) in findings.iter_mut().zip(peers) {
        f.peer = peer;
    }
    let own: Vec<(Verdict, Reason)> = findings
        .iter()
        .map(|f| (f.verdict, f.reason.clone()))
        .collect();
    for _ in 0..MAX_ROUNDS {
        let problems = Problems::of(findings);
        let next: Vec<(Verdict, Reason)> = findings
            .iter()
            .zip(&own)
            .map(|(f, (verdict, reason))| {
                chained_verdict(f, *verdict, reason, &problems, processes)
                    .unwrap_or_else(|| (f.verdict, f.reason.clone()))
            })
            .collect();
        let mut changed = false;
        for (f, (verdict, reason)) in findings.iter_mut().zip(next) {
            if f.verdict != verdict || f.reason != reason {
                f.verdict = verdict;
                f.reason = reason;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// The verdict of `f` given its peer's problems, from the verdict and reason its own facts
/// gave; `None` when the peer rule does not apply to it.
fn chained_verdict(
    f: &Finding,
    own_verdict: Verdict,
    own_reason: &Reason,
    problems: &Problems,
    processes: &BTreeMap<u32, ProcessView>,
) -> Option<(Verdict, Reason)> {
    let follows = match own_reason {
        Reason::RequestUnanswered { .. }
        | Reason::RequestUnread { .. }
        | Reason::NoInput
        | Reason::WriterBlocked { .. } => own_verdict == Verdict::Stall,
        // A unix peer that read everything: waiting for it to answer, which it cannot when
        // it is stuck itself.
        Reason::PeerReadEverything => true,
        _ => false,
    };
    if !follows {
        return None;
    }
    let peer = f.peer?;
    if !processes.contains_key(&peer.pid) {
        return Some((own_verdict, own_reason.clone()));
    }
    if let Some(next) = problems.representative(peer) {
        return Some((
            Verdict::Stall,
            Reason::PeerBlocked {
                peer,
                peer_verdict: next.verdict,
                own: Box::new(own_reason.clone()),
            },
        ));
    }
    if own_verdict == Verdict::Idle {
        return Some((own_verdict, own_reason.clone()));
    }
    let local_peer = f
        .thread
        .fd
        .as_ref()
        .and_then(|d| d.socket.as_ref())
        .and_then(|s| s.local_peer);
    let sent_ms_ago = match own_reason {
        Reason::RequestUnanswered { sent_ms_ago } => Some(*sent_ms_ago),
        _ => None,
    };
    match local_peer {
        Some(lp) if lp.unread_bytes == 0 && lp.pid == Some(peer.pid) => Some((
            Verdict::Idle,
            Reason::RequestHeldByPeer { peer, sent_ms_ago },
        )),
        _ => Some((own_verdict, own_reason.clone())),
    }
}

/// The process (and thread, when known) at the other end of what `f` waits on, if that is
/// another process: the writer its verdict names, else the first holder of the other end.
fn peer_of(
    f: &Finding,
    findings: &[Finding],
    processes: &BTreeMap<u32, ProcessView>,
) -> Option<PeerRef> {
    let t = &f.thread;
    let pid = match &f.reason {
        Reason::WaitingForInput { writer } | Reason::WriterBlocked { writer } => Some(writer.pid),
        _ => t.fd.as_ref()?.other_end_pids(t.pid).first().copied(),
    }
    .filter(|&p| p != t.pid)?;
    let only_thread = processes.get(&pid).and_then(|p| match p.tids.as_slice() {
        [only] => Some(*only),
        _ => None,
    });
    let tid = only_thread.or_else(|| {
        let mut at_other_end = findings
            .iter()
            .filter(|g| g.thread.pid == pid && is_other_end(t, &g.thread));
        match (at_other_end.next(), at_other_end.next()) {
            (Some(one), None) => Some(one.thread.tid),
            _ => None,
        }
    });
    Some(PeerRef { pid, tid })
}

/// Whether `peer_thread` waits on the other end of what `thread` waits on: the socket at
/// the other end of its local connection, or the same pipe.
fn is_other_end(thread: &BlockedThread, peer_thread: &BlockedThread) -> bool {
    let (Some(own), Some(theirs)) = (&thread.fd, &peer_thread.fd) else {
        return false;
    };
    match (&own.socket, &theirs.socket) {
        (Some(s), Some(p)) => s.local_peer.is_some_and(|lp| lp.inode == p.inode),
        (None, None) => own.target == theirs.target && !own.pipe_peers.is_empty(),
        _ => false,
    }
}

/// One problem finding, as much as choosing where a chain goes needs.
#[derive(Clone, Copy, Debug)]
struct Problem {
    tid: u32,
    verdict: Verdict,
    owner: Option<u32>,
}

/// The problem findings of each process.
struct Problems(BTreeMap<u32, Vec<Problem>>);

impl Problems {
    fn of(findings: &[Finding]) -> Self {
        let mut by_pid: BTreeMap<u32, Vec<Problem>> = BTreeMap::new();
        for f in findings.iter().filter(|f| f.verdict.is_problem()) {
            by_pid.entry(f.thread.pid).or_default().push(Problem {
                tid: f.thread.tid,
                verdict: f.verdict,
                owner: f.owner.map(|o| o.tid),
            });
        }
        Self(by_pid)
    }

    /// Where a wait on `peer` leads: the peer thread when it is known and has a problem, else
    /// the peer's problem thread where its own chain of waits begins (a thread no other
    /// problem thread of it waits on: a handler waiting for a lock rather than the lock's
    /// holder), most severe first; else (every one is waited on: a bare cycle) its most
    /// severe problem thread. `None` when the peer has no problem thread.
    fn representative(&self, peer: PeerRef) -> Option<Problem> {
        let problems = self.0.get(&peer.pid)?;
        if let Some(known) = peer
            .tid
            .and_then(|tid| problems.iter().find(|p| p.tid == tid))
        {
            return Some(*known);
        }
        let waited_on: BTreeSet<u32> = problems.iter().filter_map(|p| p.owner).collect();
        let by_severity = |p: &&Problem| (p.verdict, p.tid);
        problems
            .iter()
            .filter(|p| !waited_on.contains(&p.tid))
            .min_by_key(by_severity)
            .or_else(|| problems.iter().min_by_key(by_severity))
            .copied()
    }

    /// The other problem threads of `pid` in the same situation as `like`: same verdict,
    /// waiting for the same owner.
    fn alike(&self, pid: u32, like: Problem) -> usize {
        self.0.get(&pid).map_or(0, |problems| {
            problems
                .iter()
                .filter(|p| p.tid != like.tid && p.verdict == like.verdict && p.owner == like.owner)
                .count()
        })
    }
}

/// How one link of a chain is reached from the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hop {
    /// It is at the other end of the previous one's pipe or local socket.
    Peer,
    /// It holds the lock the previous one waits for.
    Holder,
    /// The previous one waits for it to exit.
    Joined,
}

/// One link of a wait chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link<'a> {
    /// The thread reached.
    pub finding: &'a Finding,
    /// How.
    pub hop: Hop,
    /// Other problem threads of its process in the same situation (same verdict, same
    /// owner), for a [`Hop::Peer`] link: "its handler threads".
    pub alike: usize,
    /// It is already in the chain (or is where the chain began): the chain closes a cycle.
    pub closes_cycle: bool,
}

/// The wait chain from `start` through `findings` (a report's, or an analysis's): to the
/// peer process's problem thread when `start` waits on a process with problems, to the holder
/// of the lock it waits for (or the thread it joins) when that thread is among the findings;
/// and on from there, until a thread that waits on nothing known, or one already in the
/// chain (a cycle), at most [`MAX_LINKS`] links.
pub(crate) fn chain<'a>(findings: &'a [Finding], start: &Finding) -> Vec<Link<'a>> {
    let problems = Problems::of(findings);
    let find = |pid: u32, tid: u32| {
        findings
            .iter()
            .find(|f| f.thread.pid == pid && f.thread.tid == tid)
    };
    let mut seen = vec![(start.thread.pid, start.thread.tid)];
    let mut links: Vec<Link<'a>> = Vec::new();
    let mut current = start;
    while links.len() < MAX_LINKS {
        let via_peer = current
            .peer
            .and_then(|peer| Some((problems.representative(peer)?, peer.pid)))
            .and_then(|(next, pid)| {
                let alike = problems.alike(pid, next);
                Some((find(pid, next.tid)?, Hop::Peer, alike))
            });
        let via_owner = || {
            let owner = current.owner?;
            let hop = if owner.source.is_join() {
                Hop::Joined
            } else {
                Hop::Holder
            };
            Some((find(current.thread.pid, owner.tid)?, hop, 0))
        };
        let Some((next, hop, alike)) = via_peer.or_else(via_owner) else {
            break;
        };
        let key = (next.thread.pid, next.thread.tid);
        let closes_cycle = seen.contains(&key);
        links.push(Link {
            finding: next,
            hop,
            alike,
            closes_cycle,
        });
        if closes_cycle {
            break;
        }
        seen.push(key);
        current = next;
    }
    links
}

#[cfg(test)]
mod tests;
