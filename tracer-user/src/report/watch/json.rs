//! `watch` reports for scripts: one JSON object per scan, one per line (JSON Lines).
//!
//! The layout is documented in `docs/json-schema.md` and versioned by
//! [`super::SCHEMA_VERSION`]. It is built by hand rather than by deriving `Serialize` on the
//! stall model so that the model can change without silently changing the format, and so
//! that values JSON cannot carry exactly are written as strings: addresses and instruction
//! pointers are 64-bit and JSON numbers are doubles in most consumers (exact only up to
//! 2^53), so they are hex strings (`"0x7f3a10000010"`). Absent values are `null`, never
//! left out, so a consumer can tell "unknown" from "old schema".

use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use serde_json::{Map, Value, json};

use super::{
    Resolved, SCHEMA_VERSION, WatchReport, describe_resource, edge_resource, explanation, futex_op,
    hex, kind_name, ns_to_ms, owner_source_name, peer_pid, resource_type, syscall_name,
    timing_name,
};
use crate::{
    model::{BlockedThread, Cycle, Finding, Frame, FrameKind, Origin, Reason, RuntimeWaitKind},
    stall::peer_chain::{Hop, chain},
};

/// What JSON says for a process whose name is unknown (`docs/json-schema.md`).
const UNKNOWN_PROCESS_NAME: &str = "?";

/// The report as one JSON object (see `docs/json-schema.md`).
pub(crate) fn to_json(report: &WatchReport) -> Value {
    let losses: Map<String, Value> = report
        .losses
        .iter()
        .map(|(what, n)| (what.name().to_owned(), json!(n)))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "elapsed_s": millis(report.elapsed) as f64 / 1e3,
        "timestamp": rfc3339_utc(report.wall_clock),
        "threshold_ms": millis(report.threshold),
        "final": report.is_final,
        "restated": report.restated,
        "threads": report.new_findings.iter().map(|f| thread_json(report, f)).collect::<Vec<_>>(),
        "resolved": report.resolved.iter().map(|r| resolved_json(report, r)).collect::<Vec<_>>(),
        "cycles": report.new_cycles.iter().map(|c| cycle_json(report, c)).collect::<Vec<_>>(),
        "runtimes": runtimes_json(report),
        "losses": losses,
    })
}

/// Writes the report as one compact JSON line, ending in `\n`.
pub(crate) fn write_json_line(report: &WatchReport, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &to_json(report))?;
    out.write_all(b"\n")
}

/// One blocked thread with its verdict.
fn thread_json(report: &WatchReport, f: &Finding) -> Value {
    let t = &f.thread;
    let mut thread = json!({
        "pid": t.pid,
        "tid": t.tid,
        "comm": t.comm,
        "process_name": process_name(report, t.pid),
        "blocked_for_ms": ns_to_ms(t.blocked_for_ns),
        "origin": match t.origin {
            Origin::Traced => "traced",
            Origin::Snapshot => "snapshot",
        },
        "since_exact": t.origin == Origin::Traced,
        "state": t.state.letter().to_string(),
        "event_loop": f.event_loop,
        "wchan": t.wchan,
        "wait": {
            "syscall": syscall_name(t),
            "syscall_nr": t.call.map(|c| c.nr),
            "futex_op": futex_op(t),
            "kind": kind_name(t),
            "timing": timing_name(f.timing),
        },
        "resource": resource_json(f),
        "user_stack": t
            .user_stack
            .iter()
            .filter(|frame| language_of(frame).is_none())
            .map(frame_json)
            .collect::<Vec<_>>(),
        "kernel_stack": t.kernel_stack.iter().map(frame_json).collect::<Vec<_>>(),
        "verdict": f.verdict.name(),
        "explanation": explanation(f),
        "watched": report.is_watched(t.pid),
        "chain": chain_json(report, f),
    });
    let Value::Object(fields) = &mut thread else {
        unreachable!("json! of an object literal is an object")
    };
    fields.insert("runtime".to_owned(), runtime_thread_json(t));
    for frame in &t.user_stack {
        if let Some(language) = language_of(frame) {
            let key = format!("{language}_stack");
            let stack = fields.entry(key).or_insert_with(|| json!([]));
            if let Value::Array(frames) = stack {
                frames.push(json!({
                    "function": frame.name,
                    "file": frame.file,
                    "line": frame.line,
                }));
            }
        }
    }
    if let (
        Reason::EventLoopInFrames {
            library: Some(library),
            blocking_call,
            ..
        },
        Some(fields),
    ) = (&f.reason, thread.as_object_mut())
    {
        fields.insert("event_loop_library".into(), json!(library));
        fields.insert("blocking_call".into(), json!(blocking_call));
    }
    if let (
        Reason::AllThreadsWait {
            result_waiter: Some(waiter),
            ..
        },
        Some(fields),
    ) = (&f.reason, thread.as_object_mut())
    {
        fields.insert("result_waiter_tid".into(), json!(waiter.tid));
    }
    if let (
        Reason::Periodic {
            ended_before,
            period_ms,
            typical_wait_ms,
        },
        Some(fields),
    ) = (&f.reason, thread.as_object_mut())
    {
        fields.insert(
            "periodic".into(),
            json!({
                "ended_before": ended_before,
                "period_ms": period_ms,
                "typical_wait_ms": typical_wait_ms,
            }),
        );
    }
    if let (Reason::GreenThreadsBlocked { green_threads }, Some(fields)) =
        (&f.reason, thread.as_object_mut())
    {
        let green = serde_json::to_value(green_threads).unwrap_or(Value::Null);
        fields.insert("green_threads".into(), green);
    }
    thread
}

/// The language of an interpreted frame (`python` for a `cpython` frame), which names its
/// JSON stack (`python_stack`); `None` for native, JIT and kernel frames.
fn language_of(frame: &Frame) -> Option<&'static str> {
    match &frame.kind {
        FrameKind::Interpreted { runtime } => Some(match runtime.as_str() {
            "cpython" => "python",
            "hotspot" => "java",
            "ghc" => "haskell",
            _ => "interpreted",
        }),
        _ => None,
    }
}

/// What the thread's runtime read about it, `null` if nothing.
fn runtime_thread_json(t: &BlockedThread) -> Value {
    let Some(r) = &t.runtime else {
        return Value::Null;
    };
    json!({
        "runtime": r.runtime,
        "thread_name": r.name,
        "wait": r.wait.as_ref().map(|w| json!({
            "kind": runtime_wait_kind_name(w.kind),
            "class": w.class,
            "object": hex(w.object),
            "owner_tid": w.owner_tid,
        })),
        "event_loop": r.event_loop,
        "task": r.task,
    })
}

/// `lock`, `ownerless_lock`, `join`, `condition`, `green_threads`, `result`.
fn runtime_wait_kind_name(kind: RuntimeWaitKind) -> &'static str {
    match kind {
        RuntimeWaitKind::Lock => "lock",
        RuntimeWaitKind::OwnerlessLock => "ownerless_lock",
        RuntimeWaitKind::Join => "join",
        RuntimeWaitKind::Condition => "condition",
        RuntimeWaitKind::GreenThreads => "green_threads",
        RuntimeWaitKind::Result => "result",
    }
}

/// What the runtimes read about the report's processes.
fn runtimes_json(report: &WatchReport) -> Vec<Value> {
    report
        .runtime_views
        .iter()
        .flat_map(|(pid, views)| {
            views.iter().map(move |v| {
                json!({
                    "pid": pid,
                    "runtime": v.runtime,
                    "version": v.version,
                    "interpreters": v.interpreters,
                    "green_threads": v.green_threads.iter().map(|g| json!({
                        "id": g.id,
                        "label": g.label,
                        "state": serde_json::to_value(&g.state).unwrap_or(Value::Null),
                    })).collect::<Vec<_>>(),
                })
            })
        })
        .collect()
}

/// What the thread waits on; every key present, `null` when not applicable or unknown.
fn resource_json(f: &Finding) -> Value {
    let t = &f.thread;
    let futex = t.futex.as_ref();
    let fd = t.fd.as_ref();
    let owner = f.owner;
    json!({
        "type": resource_type(t),
        "futex_uaddr": futex.map(|w| hex(w.uaddr)),
        "futex_word": futex.and_then(|w| w.word()),
        "lock_uaddr": futex.and_then(|w| w.refused_pi_lock).map(|r| hex(r.uaddr)),
        "owner_tid": owner.map(|o| o.tid),
        "owner_source": owner.map(|o| owner_source_name(o.source)),
        "fd": fd.map(|d| d.fd),
        "fd_type": fd.map(|d| d.fd_type.name()),
        "local": fd.and_then(|d| d.local()),
        "peer": fd.and_then(|d| d.peer()),
        "external": fd.map(|d| d.reachable_from_outside()),
        "peer_pid": peer_pid(f),
        "peer_tid": f.peer.and_then(|p| p.tid),
        "description": describe_resource(f),
    })
}

/// The wait chain from `f`: each thread beyond it that it waits on, through peer processes
/// and lock holders, as `stall::peer_chain::chain` walks it.
fn chain_json(report: &WatchReport, f: &Finding) -> Vec<Value> {
    chain(&report.new_findings, f)
        .iter()
        .map(|link| {
            let g = link.finding;
            json!({
                "pid": g.thread.pid,
                "process_name": process_name(report, g.thread.pid),
                "tid": g.thread.tid,
                "comm": g.thread.comm,
                "via": match link.hop {
                    Hop::Peer => "peer",
                    Hop::Holder => "holder",
                    Hop::Joined => "joined",
                },
                "verdict": g.verdict.name(),
                "resource": describe_resource(g),
                "blocked_for_ms": ns_to_ms(g.thread.blocked_for_ns),
                "alike_threads": link.alike,
                "closes_cycle": link.closes_cycle,
            })
        })
        .collect()
}

/// One stack frame; `ip` as a hex string.
fn frame_json(frame: &Frame) -> Value {
    json!({
        "ip": hex(frame.addr),
        "symbol": frame.name,
        "module": frame.module,
        "offset": frame.offset,
        "file": frame.file,
        "line": frame.line,
        "inlined": frame.inlined,
        "kind": frame.kind.name(),
    })
}

/// One deadlock cycle.
fn cycle_json(report: &WatchReport, c: &Cycle) -> Value {
    let edges: Vec<Value> = c
        .edges
        .iter()
        .map(|e| {
            json!({
                "tid": e.tid,
                "comm": report.finding(c.pid, e.tid).map(|f| f.thread.comm.as_str()),
                "waits_for_resource": edge_resource(e, report.finding(c.pid, e.tid)),
                "owner_tid": e.owner.tid,
            })
        })
        .collect();
    json!({
        "pid": c.pid,
        "process_name": process_name(report, c.pid),
        "watched": report.is_watched(c.pid),
        "edges": edges,
    })
}

/// One wait that ended.
fn resolved_json(report: &WatchReport, r: &Resolved) -> Value {
    json!({
        "pid": r.pid,
        "tid": r.tid,
        "comm": r.comm,
        "process_name": process_name(report, r.pid),
        "verdict": r.verdict.name(),
        "blocked_for_ms": ns_to_ms(r.blocked_for_ns),
    })
}

/// The process's name, `"?"` when unknown.
fn process_name(report: &WatchReport, pid: u32) -> &str {
    report.process_name(pid).unwrap_or(UNKNOWN_PROCESS_NAME)
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `2023-11-14T22:13:20.123Z`: RFC 3339, UTC, milliseconds. Times before 1970 are written as
/// the epoch (the wall clock of a scan is never before 1970 on a sane system).
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to dates from 1970 on).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::LossReason,
        report::watch::fixtures::{abba, recv_stalls, report, resolved},
    };

    /// Writes `r` as a JSON line, checks it against the golden file `name` (pretty-printed),
    /// and parses it back.
    fn round_trip(r: &WatchReport, name: &str) -> Value {
        let mut buf = Vec::new();
        write_json_line(r, &mut buf).expect("write to a Vec");
        let line = String::from_utf8(buf).expect("UTF-8");
        assert!(line.ends_with('\n'), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let value: Value = serde_json::from_str(&line).expect("valid JSON");
        let pretty = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
        crate::golden::assert_golden(name, &pretty);
        value
    }

    /// Check the top level: version, times, flags, and losses as an object.
    #[test]
    fn top_level_fields() {
        let mut r = report(Vec::new(), Vec::new());
        r.is_final = true;
        r.losses = vec![
            (LossReason::StackMapFull, 3),
            (LossReason::UserStackError, 1),
        ];
        r.resolved.push(resolved());
        let v = round_trip(&r, "json-top-level.json");
        assert_eq!(v["schema_version"], json!(SCHEMA_VERSION));
        assert_eq!(v["schema_version"], json!(1));
        assert_eq!(v["elapsed_s"], json!(12.0));
        assert_eq!(v["timestamp"], json!("2023-11-14T22:13:20.123Z"));
        assert_eq!(v["threshold_ms"], json!(5000));
        assert_eq!(v["final"], json!(true));
        assert_eq!(v["threads"], json!([]));
        assert_eq!(v["cycles"], json!([]));
        assert_eq!(
            v["losses"],
            json!({"stack map full": 3, "user stack error": 1})
        );
        assert_eq!(
            v["resolved"],
            json!([{
                "pid": 1234, "tid": 1235, "comm": "abba-a", "process_name": "deadlock_abba",
                "verdict": "stall", "blocked_for_ms": 14200,
            }])
        );
    }

    /// Check a deadlocked thread: identity, wait, futex resource with hex addresses and
    /// owner, stacks innermost first with hex ips, and the cycle.
    #[test]
    fn deadlock_thread_and_cycle() {
        let (findings, cycle) = abba();
        let v = round_trip(&report(findings, vec![cycle]), "json-deadlock.json");
        let t = &v["threads"][0];
        assert_eq!(t["pid"], json!(1234));
        assert_eq!(t["tid"], json!(1235));
        assert_eq!(t["comm"], json!("abba-a"));
        assert_eq!(t["process_name"], json!("deadlock_abba"));
        assert_eq!(t["blocked_for_ms"], json!(14200));
        assert_eq!(t["since_exact"], json!(true));
        assert_eq!(t["origin"], json!("traced"));
        assert_eq!(t["state"], json!("S"));
        assert_eq!(t["verdict"], json!("deadlock"));
        assert!(t["explanation"].is_string());
        assert_eq!(
            t["wait"],
            json!({"syscall": "futex", "syscall_nr": 202, "futex_op": "FUTEX_WAIT",
                   "kind": "futex", "timing": "indefinite"})
        );
        let res = &t["resource"];
        assert_eq!(res["type"], json!("futex"));
        assert_eq!(res["futex_uaddr"], json!("0x55d0c0a0"));
        assert_eq!(res["futex_word"], json!(2));
        assert_eq!(res["owner_tid"], json!(1236));
        assert_eq!(res["owner_source"], json!("glibc_mutex"));
        assert_eq!(res["lock_uaddr"], Value::Null);
        assert_eq!(res["fd"], Value::Null);
        assert_eq!(
            res["description"],
            json!("mutex 0x55d0c0a0 held by tid 1236")
        );
        let user = t["user_stack"].as_array().expect("user_stack array");
        let names: Vec<&str> = user.iter().filter_map(|f| f["symbol"].as_str()).collect();
        assert_eq!(names, ["__lll_lock_wait", "pthread_mutex_lock", "lock_b"]);
        assert_eq!(user[0]["ip"], json!("0x7f3a10000010"));
        assert_eq!(user[1]["file"], json!("pthread_mutex_lock.c"));
        assert_eq!(user[1]["line"], json!(80));
        assert_eq!(user[0]["line"], Value::Null);
        assert_eq!(user[0]["inlined"], json!(false));
        assert_eq!(t["kernel_stack"][0]["ip"], json!("0xffffffff81000010"));
        assert_eq!(t["kernel_stack"][0]["symbol"], json!("schedule"));
        assert_eq!(
            v["cycles"],
            json!([{"pid": 1234, "process_name": "deadlock_abba", "watched": true, "edges": [
                {"tid": 1235, "comm": "abba-a", "waits_for_resource": "mutex 0x55d0c0a0", "owner_tid": 1236},
                {"tid": 1236, "comm": "abba-b", "waits_for_resource": "mutex 0x55d0c0e0", "owner_tid": 1235},
            ]}])
        );
    }

    /// Check an fd wait: socket fields, null futex fields, one object per thread (JSON is not
    /// grouped).
    #[test]
    fn socket_stall_thread() {
        let v = round_trip(&report(recv_stalls(), Vec::new()), "json-socket-stall.json");
        assert_eq!(v["threads"].as_array().map(Vec::len), Some(4));
        let t = &v["threads"][3];
        assert_eq!(t["blocked_for_ms"], json!(31000));
        assert_eq!(t["wait"]["syscall"], json!("recvfrom"));
        assert_eq!(t["wait"]["futex_op"], Value::Null);
        assert_eq!(t["wait"]["kind"], json!("recv"));
        let res = &t["resource"];
        assert_eq!(res["type"], json!("fd"));
        assert_eq!(res["fd"], json!(7));
        assert_eq!(res["fd_type"], json!("socket"));
        assert_eq!(res["local"], json!("127.0.0.1:41234"));
        assert_eq!(res["peer"], json!("127.0.0.1:5432"));
        assert_eq!(res["futex_uaddr"], Value::Null);
        assert_eq!(res["owner_tid"], Value::Null);
        assert_eq!(t["kernel_stack"], json!([]));
    }

    /// Check a wait chain into a process not watched: the waiting thread names the peer
    /// process and thread (`peer_pid`, `peer_tid`) and lists each link beyond it, through
    /// the peer's deadlocked thread to where the cycle closes; the peer's threads and cycle
    /// say they were not watched.
    #[test]
    fn chain_into_a_peer_process() {
        use crate::model::PeerRef;
        let mut findings = recv_stalls();
        findings.truncate(1);
        findings[0].peer = Some(PeerRef {
            pid: 1234,
            tid: Some(1235),
        });
        let (abba, cycle) = abba();
        findings.extend(abba);
        let mut r = report(findings, vec![cycle]);
        r.peer_processes.insert(1234);
        let v = to_json(&r);
        let client = &v["threads"][0];
        assert_eq!(client["resource"]["peer_pid"], json!(1234));
        assert_eq!(client["resource"]["peer_tid"], json!(1235));
        assert_eq!(client["watched"], json!(true));
        let links: Vec<(u64, &str, &str, bool)> = client["chain"]
            .as_array()
            .expect("chain array")
            .iter()
            .map(|l| {
                (
                    l["tid"].as_u64().unwrap_or_default(),
                    l["via"].as_str().unwrap_or_default(),
                    l["verdict"].as_str().unwrap_or_default(),
                    l["closes_cycle"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            links,
            [
                (1235, "peer", "deadlock", false),
                (1236, "holder", "deadlock", false),
                (1235, "holder", "deadlock", true),
            ]
        );
        assert_eq!(client["chain"][0]["process_name"], json!("deadlock_abba"));
        assert_eq!(v["threads"][1]["watched"], json!(false));
        assert_eq!(v["cycles"][0]["watched"], json!(false));
    }

    /// Check RFC 3339 formatting at the epoch, a leap day and the end of a year.
    #[test]
    fn rfc3339_dates() {
        let at = |ms: u64| rfc3339_utc(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    }
}
