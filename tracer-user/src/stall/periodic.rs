//! Periodic waits: a thread whose waits on the same resource keep ending by themselves is
//! healthy, however long each one lasts.
//!
//! A client receiving with a socket timeout (`SO_RCVTIMEO` is not in the syscall's arguments,
//! so its `recv` looks indefinite) gets `EAGAIN` every few seconds and receives again; a worker
//! reading a connection that carries a heartbeat wakes at every beat. With a threshold shorter
//! than the period each of these waits crosses it, and each is a new wait (a new start time):
//! without memory, a healthy program would be reported once per period.
//!
//! So `watch` remembers, per thread and resource (the call's kind and its fd or futex address),
//! the waits past the threshold it saw end: a wait is ended when a later scan no longer finds
//! it blocked (the kernel side does not record how a wait ended; the thread waiting on the same
//! resource again is what shows the end was a normal one). A wait that follows at least
//! [`MIN_ENDED_BEFORE`] ended waits on the same resource is periodic, `idle` with the count and
//! the period, as long as it has not lasted more than [`HANG_FACTOR`] times as long as those
//! waits typically did: then it is judged as any wait (a real hang on a connection that used
//! to be periodic is still reported).
//!
//! Pure: scans come in with their clock readings, as everything the reporter folds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::{Finding, Reason, Timing, Verdict, WaitKey, WaitKind};

/// Ended waits on the same resource that make the next one periodic. One is enough: the first
/// wait past the threshold may be reported (nothing can say yet that it will end), every later
/// one is not, so a periodic wait is reported at most once.
const MIN_ENDED_BEFORE: usize = 1;
/// A wait lasting more than this many times the typical length of the ended ones is no longer
/// periodic.
const HANG_FACTOR: u64 = 3;
/// Ended waits kept per resource (the typical length and period are their medians).
const KEEP_ENDED: usize = 8;
/// A resource whose last wait ended this long ago is forgotten (its thread may be gone).
const FORGET_AFTER_NS: u64 = 600_000_000_000;

/// What a wait waits on: the thread, the call's kind, and its fd or futex address.
type ResourceKey = (u32, WaitKind, u64);

/// A wait past the threshold that was seen to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndedWait {
    start_ns: u64,
    /// From its start to the first scan that no longer saw it, or to the start of the next
    /// wait on its resource if that was earlier: at least as long as it lasted.
    length_ns: u64,
}

/// A wait seen blocked at the last scan.
#[derive(Clone, Copy, Debug)]
struct OpenWait {
    resource: ResourceKey,
}

/// The waits past the threshold each thread had on each resource, across scans.
#[derive(Debug, Default)]
pub(crate) struct PeriodicWaits {
    open: BTreeMap<WaitKey, OpenWait>,
    ended: BTreeMap<ResourceKey, VecDeque<EndedWait>>,
}

impl PeriodicWaits {
    /// Folds in one scan at `now_ns`: the waits of the last scan not in `blocked` ended; each
    /// `stall` (an indefinite wait; not a lock cycle, a stalled process or a blocked event
    /// loop, whose waits do not end by themselves) that follows ended waits on the same
    /// resource and has not lasted far longer than they did becomes `idle` with
    /// [`Reason::Periodic`]. Idle waits keep their own reason (waiting for connections, for
    /// input...), which says more.
    pub(crate) fn apply(
        &mut self,
        findings: &mut [Finding],
        blocked: &BTreeSet<WaitKey>,
        now_ns: u64,
    ) {
        let gone: Vec<WaitKey> = self
            .open
            .keys()
            .filter(|k| !blocked.contains(k))
            .copied()
            .collect();
        // A wait ended at the latest when the next one on its resource began.
        let next_start: BTreeMap<ResourceKey, u64> = findings
            .iter()
            .filter_map(|f| Some((resource_of(f)?, f.thread.since_ns)))
            .collect();
        for key in gone {
            let open = self.open.remove(&key).expect("key just listed");
            let ended_by_ns = next_start
                .get(&open.resource)
                .filter(|&&next| next > key.1)
                .map_or(now_ns, |&next| next.min(now_ns));
            let history = self.ended.entry(open.resource).or_default();
            history.push_back(EndedWait {
                start_ns: key.1,
                length_ns: ended_by_ns.saturating_sub(key.1),
            });
            while history.len() > KEEP_ENDED {
                history.pop_front();
            }
        }
        self.ended.retain(|_, history| {
            history
                .back()
                .is_some_and(|w| now_ns.saturating_sub(w.start_ns + w.length_ns) < FORGET_AFTER_NS)
        });
        for finding in findings.iter_mut() {
            let Some(resource) = resource_of(finding) else {
                continue;
            };
            let key = finding.thread.key();
            self.open.insert(key, OpenWait { resource });
            if finding.verdict != Verdict::Stall || finding.timing != Timing::Indefinite {
                continue;
            }
            let Some(history) = self.ended.get(&resource) else {
                continue;
            };
            let earlier: Vec<&EndedWait> = history
                .iter()
                .filter(|w| w.start_ns < finding.thread.since_ns)
                .collect();
            if earlier.len() < MIN_ENDED_BEFORE {
                continue;
            }
            let typical_length_ns = median(earlier.iter().map(|w| w.length_ns).collect());
            if finding.thread.blocked_for_ns > HANG_FACTOR * typical_length_ns {
                continue;
            }
            let mut starts: Vec<u64> = earlier.iter().map(|w| w.start_ns).collect();
            starts.push(finding.thread.since_ns);
            let period_ns = median(starts.windows(2).map(|s| s[1] - s[0]).collect());
            finding.verdict = Verdict::Idle;
            finding.reason = Reason::Periodic {
                ended_before: earlier.len() as u32,
                period_ms: ns_to_ms(period_ns),
                typical_wait_ms: ns_to_ms(typical_length_ns),
            };
        }
    }
}

/// The resource of a finding's wait, if it is in a followed call.
fn resource_of(finding: &Finding) -> Option<ResourceKey> {
    let call = finding.thread.call?;
    Some((finding.thread.tid, call.kind, call.resource))
}

/// The median of `values` (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn ns_to_ms(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{SyscallCall, WaitingCode},
        stall::fixtures,
    };

    const S: u64 = 1_000_000_000;

    /// A thread of process 1 blocked in `recvfrom` on fd `fd` since `since_ns`, at scan time
    /// `now_ns`, judged `stall` (a request unanswered, or nothing either way yet).
    fn recv(tid: u32, fd: u64, since_ns: u64, now_ns: u64) -> Finding {
        let mut thread = fixtures::futex_thread(1, tid, "client", now_ns - since_ns);
        thread.since_ns = since_ns;
        thread.call = Some(SyscallCall {
            nr: 45,
            kind: WaitKind::Recv,
            resource: fd,
            detail: 0,
            timeout: 0,
        });
        Finding {
            thread,
            code: WaitingCode::Unknown,
            timing: Timing::Indefinite,
            event_loop: false,
            owner: None,
            verdict: Verdict::Stall,
            reason: Reason::NoInput,
            peer: None,
        }
    }

    /// One scan at `now_ns` of the given findings; what they became.
    fn scan(periodic: &mut PeriodicWaits, mut findings: Vec<Finding>, now_ns: u64) -> Vec<Finding> {
        let blocked = findings.iter().map(|f| f.thread.key()).collect();
        periodic.apply(&mut findings, &blocked, now_ns);
        findings
    }

    /// A client receiving with a 3 s socket timeout, threshold 1 s, scans every second: the
    /// recv of each period is seen at +1 s and +2 s of it (+3 s it has ended).
    fn rcvtimeo_scans(periodic: &mut PeriodicWaits, periods: u64) -> Vec<Vec<Finding>> {
        let mut out = Vec::new();
        for p in 0..periods {
            let start = 10 * S + p * 3 * S;
            for at in [1, 2] {
                out.push(scan(
                    periodic,
                    vec![recv(7, 4, start, start + at * S)],
                    start + at * S,
                ));
            }
        }
        out
    }

    /// Check that the first wait is judged as any wait, and that every later one on the same
    /// fd is periodic (`idle`) with the count of ended waits, their period and typical length.
    #[test]
    fn a_recv_with_socket_timeout_is_periodic_from_its_second_wait() {
        let mut periodic = PeriodicWaits::default();
        let scans = rcvtimeo_scans(&mut periodic, 4);
        assert_eq!(scans[0][0].verdict, Verdict::Stall);
        assert_eq!(scans[1][0].verdict, Verdict::Stall);
        for findings in &scans[2..] {
            assert_eq!(findings[0].verdict, Verdict::Idle);
        }
        assert_eq!(
            scans[7][0].reason,
            Reason::Periodic {
                ended_before: 3,
                period_ms: 3_000,
                typical_wait_ms: 3_000,
            }
        );
    }

    /// Check that a wait on a resource that used to be periodic, lasting more than three times
    /// as long as the earlier ones, is judged as any wait again: a real hang is reported.
    #[test]
    fn a_hang_after_periodic_waits_is_not_periodic() {
        let mut periodic = PeriodicWaits::default();
        rcvtimeo_scans(&mut periodic, 3);
        let start = 10 * S + 9 * S;
        let at = |secs: u64, periodic: &mut PeriodicWaits| {
            scan(
                periodic,
                vec![recv(7, 4, start, start + secs * S)],
                start + secs * S,
            )[0]
            .verdict
        };
        assert_eq!(at(5, &mut periodic), Verdict::Idle);
        assert_eq!(at(9, &mut periodic), Verdict::Idle);
        assert_eq!(at(10, &mut periodic), Verdict::Stall);
    }

    /// Check that ended waits count only for the same thread and the same fd, and that a lock
    /// wait or an event-loop verdict is never made periodic.
    #[test]
    fn only_the_same_resource_and_plain_waits() {
        let mut periodic = PeriodicWaits::default();
        rcvtimeo_scans(&mut periodic, 2);
        let start = 20 * S;
        let now = start + S;
        let other_fd = recv(7, 5, start, now);
        let other_thread = recv(8, 4, start, now);
        let mut blocked_loop = recv(7, 4, start, now);
        blocked_loop.verdict = Verdict::EventLoopBlocked;
        let found = scan(&mut periodic, vec![other_fd, other_thread], now);
        assert!(found.iter().all(|f| f.verdict == Verdict::Stall));
        let found = scan(&mut periodic, vec![blocked_loop], now + S);
        assert_eq!(found[0].verdict, Verdict::EventLoopBlocked);
    }

    /// Check that a resource not waited on for a long time is forgotten.
    #[test]
    fn old_history_is_forgotten() {
        let mut periodic = PeriodicWaits::default();
        rcvtimeo_scans(&mut periodic, 2);
        scan(&mut periodic, Vec::new(), 17 * S);
        let start = 20 * S + FORGET_AFTER_NS;
        let found = scan(&mut periodic, vec![recv(7, 4, start, start + S)], start + S);
        assert_eq!(found[0].verdict, Verdict::Stall);
    }
}
