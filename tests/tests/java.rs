//! `stallwatch watch` on real deadlocked Java programs (OpenJDK's HotSpot), checked against
//! `jstack`'s own "Found one Java-level deadlock". Root only.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, compile_java, require_bpf,
    tracer::{Tracer, run},
    watch_report::{WatchOutput, cycle_edges},
    watch_workloads::RunningWorkload,
};

/// How long a JVM may take to start and deadlock.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Below a second: JDK 17 re-parks a monitor's first waiter about once a second, so its
/// native wait never lasts longer (the runtime's lock wait is what the analysis holds on to).
const THRESHOLD: &str = "300ms";
/// How many `--once` snapshots may miss the re-parking waiters.
const ONCE_TRIES: usize = 20;

/// One waiter of jstack's deadlock report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JstackWait {
    /// Its kernel tid (jstack's `nid`).
    tid: u32,
    /// The lock object's address.
    object: u64,
    /// The lock object's class.
    class: String,
    /// The owner's kernel tid.
    owner_tid: u32,
}

/// Starts `class` with the JVM options `options` and waits until both its threads hold their
/// first lock.
fn start(class: &str, options: &[&str], dir: &TempDir) -> RunningWorkload {
    let classpath = dir.path().to_str().expect("UTF-8 temp path");
    let mut args = options.to_vec();
    args.extend(["-cp", classpath, class]);
    let workload = RunningWorkload::spawn(Path::new("java"), &args);
    workload.wait_for("ready", STARTUP_TIMEOUT);
    workload
}

/// `jstack PID`, retried until it reports the deadlock; its waiters by name, with tids, and
/// its whole text.
fn jstack_deadlock(pid: u32) -> (Vec<JstackWait>, String) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let out = Command::new("jstack")
            .arg(pid.to_string())
            .output()
            .expect("jstack");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Found one Java-level deadlock") {
            println!("{}", &text[text.find("Found one").unwrap_or(0)..]);
            return (parse_jstack(&text), text);
        }
        assert!(
            Instant::now() < deadline,
            "jstack found no deadlock:\n{text}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// The hex number after `prefix` in `line`.
fn hex_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The class after `(a ` or `, a ` up to `)` in `line`.
fn class_in(line: &str) -> Option<String> {
    let start = line.find(", a ").or_else(|| line.find("(a "))?;
    let rest = &line[start..];
    let rest = &rest[rest.find("a ")? + 2..];
    Some(rest[..rest.find(')')?].to_owned())
}

/// jstack's deadlock section: `"NAME":` then `waiting to lock monitor M (object O, a C),` or
/// `waiting for ownable synchronizer O, (a C),` then `which is held by "OWNER"`; names map
/// to tids by the thread dump's `"NAME" #N ... nid=0xTID` lines.
fn parse_jstack(text: &str) -> Vec<JstackWait> {
    let tids: BTreeMap<String, u32> = text
        .lines()
        .filter(|l| l.starts_with('"') && l.contains(" nid=0x"))
        .filter_map(|l| {
            let name = l[1..].split('"').next()?.to_owned();
            Some((name, hex_after(l, " nid=0x")? as u32))
        })
        .collect();
    let section = &text[text
        .find("Found one Java-level deadlock")
        .expect("deadlock")..];
    let section = &section[..section
        .find("Java stack information")
        .unwrap_or(section.len())];
    let lines: Vec<&str> = section.lines().collect();
    let mut waits = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix('"').and_then(|l| l.strip_suffix("\":")) else {
            continue;
        };
        let waiting = lines[i + 1];
        let object = hex_after(waiting, "(object 0x")
            .or_else(|| hex_after(waiting, "ownable synchronizer 0x"))
            .expect("object address");
        let owner = lines[i + 2]
            .split('"')
            .nth(1)
            .expect("which is held by \"OWNER\"");
        waits.push(JstackWait {
            tid: tids[name],
            object,
            class: class_in(waiting).expect("class"),
            owner_tid: tids[owner],
        });
    }
    waits
}

/// Checks that `report` has the cycle jstack found, edge by edge: the waiter, the owner, and
/// the lock as `CLASS 0xOBJECT`.
fn assert_same_cycle(report: &WatchOutput, jstack: &[JstackWait]) {
    assert_eq!(jstack.len(), 2, "an ABBA deadlock: {jstack:?}");
    let cycle = report
        .cycles()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no cycle:\n{}", report.dump()));
    let mut edges = cycle_edges(cycle);
    edges.sort_unstable();
    let mut expected: Vec<(u32, u32)> = jstack.iter().map(|w| (w.tid, w.owner_tid)).collect();
    expected.sort_unstable();
    assert_eq!(edges, expected, "cycle:\n{}", report.dump());
    for wait in jstack {
        let edge = cycle["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["tid"].as_u64() == Some(u64::from(wait.tid)))
            .expect("edge of the waiter");
        assert_eq!(
            edge["waits_for_resource"].as_str(),
            Some(format!("{} 0x{:x}", wait.class, wait.object).as_str()),
            "{edge}"
        );
    }
    for wait in jstack {
        let verdicts: Vec<String> = report
            .thread(wait.tid)
            .iter()
            .filter_map(|t| t["verdict"].as_str().map(str::to_owned))
            .collect();
        assert!(verdicts.iter().any(|v| v == "deadlock"), "{verdicts:?}");
        let owner_source: Vec<&Value> = report
            .thread(wait.tid)
            .into_iter()
            .map(|t| &t["resource"]["owner_source"])
            .collect();
        assert!(
            owner_source
                .iter()
                .all(|s| s.as_str() == Some("runtime_lock")),
            "{owner_source:?}"
        );
    }
}

/// The methods of thread `tid`'s stack in jstack's thread dump, innermost first: the
/// `at pkg.Class.method(...)` lines after its `"NAME" #N ... nid=0xTID` line.
fn jstack_methods(text: &str, tid: u32) -> Vec<String> {
    let nid = format!(" nid=0x{tid:x} ");
    text.lines()
        .skip_while(|l| !(l.starts_with('"') && l.contains(&nid)))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("at "))
        .filter_map(|l| l.split('(').next().map(str::to_owned))
        .collect()
}

/// Checks that each deadlocked thread's `java_stack` in `report` has the methods jstack
/// prints for it, in its order, innermost first.
fn assert_java_stacks(report: &WatchOutput, jstack: &[JstackWait], jstack_text: &str) {
    for wait in jstack {
        let expected = jstack_methods(jstack_text, wait.tid);
        assert!(
            expected.len() >= 3,
            "jstack's stack of {}: {expected:?}",
            wait.tid
        );
        let stacks: Vec<Vec<String>> = report
            .thread(wait.tid)
            .iter()
            .map(|t| {
                t["java_stack"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["function"].as_str().map(str::to_owned))
                    .collect()
            })
            .collect();
        assert!(
            stacks.contains(&expected),
            "tid {}: jstack {expected:?}, stallwatch {stacks:?}",
            wait.tid
        );
    }
}

/// `watch --once --json` on the deadlocked process (read from /proc only, no BPF), with a
/// threshold longer than the one second after which JDK 17 wakes a monitor's first waiter to
/// park again: neither waiter's own wait ever lasts that long, and the cycle is found only
/// because the HotSpot view names the monitor waiters and `watch` pulls them in. A waiter
/// caught in the microseconds it runs between parks makes a try miss: a few tries.
fn once(pid: u32) -> WatchOutput {
    // The VM's idle threads must have slept past the threshold for its view to be read.
    thread::sleep(Duration::from_millis(2500));
    let pid = pid.to_string();
    let mut last = String::new();
    for _ in 0..ONCE_TRIES {
        let out = run(
            ["watch", "-p", &pid, "--once", "--json", "--threshold", "2s"],
            RUN_TIMEOUT,
        );
        if out.code == Some(11) {
            return WatchOutput::parse(&out.stdout);
        }
        last = out.stdout;
        thread::sleep(Duration::from_millis(250));
    }
    panic!("no deadlock found in {ONCE_TRIES} tries; the last:\n{last}");
}

/// `watch --json` live (BPF) on the deadlocked process, until it reports the deadlock.
fn live(pid: u32, dir: &TempDir) -> WatchOutput {
    let pid = pid.to_string();
    let json = dir.join("watch.json");
    let mut tracer = Tracer::spawn([
        "watch",
        "-p",
        &pid,
        "--json",
        "-o",
        json.to_str().expect("UTF-8 temp path"),
        "--threshold",
        THRESHOLD,
        "--interval",
        "100ms",
        "--exit-on-deadlock",
        "-d",
        "20s",
    ]);
    tracer.wait_tracing();
    let out = tracer.wait(RUN_TIMEOUT);
    out.assert_code(11);
    WatchOutput::read(&json)
}

/// Check that a `synchronized` ABBA deadlock is the deadlock jstack finds: the same two
/// threads (by tid), each waiting for the `java.lang.Object` (same address) the other holds,
/// with `--once` and live; and that each thread's Java stack (interpreted frames) has the
/// methods jstack prints.
#[test]
fn monitor_abba_matches_jstack() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("java-monitor");
    compile_java("MonitorDeadlock", dir.path());
    let workload = start("MonitorDeadlock", &[], &dir);
    let pid = workload.pid();
    let (jstack, text) = jstack_deadlock(pid);
    assert!(
        jstack.iter().all(|w| w.class == "java.lang.Object"),
        "{jstack:?}"
    );
    let report = once(pid);
    assert_same_cycle(&report, &jstack);
    assert_java_stacks(&report, &jstack, &text);
    let report = live(pid, &dir);
    assert_same_cycle(&report, &jstack);
    assert_java_stacks(&report, &jstack, &text);
}

/// Check the Java stacks of compiled code (`-Xcomp`: every method compiled before it runs):
/// the compiled frames, the methods inlined into them and the native method's wrapper
/// (`Unsafe.park`) have the methods jstack prints, for a `ReentrantLock` ABBA deadlock.
#[test]
fn compiled_java_stacks_match_jstack() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("java-compiled");
    compile_java("LockDeadlock", dir.path());
    let workload = start("LockDeadlock", &["-Xcomp"], &dir);
    let pid = workload.pid();
    let (jstack, text) = jstack_deadlock(pid);
    let report = once(pid);
    assert_same_cycle(&report, &jstack);
    assert_java_stacks(&report, &jstack, &text);
}

/// Check that a `ReentrantLock` ABBA deadlock is the deadlock jstack finds: each thread parked
/// for the lock's `NonfairSync` the other owns; and that each thread's Java stack (the native
/// `Unsafe.park` down to `Thread.run`) has the methods jstack prints.
#[test]
fn reentrant_lock_abba_matches_jstack() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("java-lock");
    compile_java("LockDeadlock", dir.path());
    let workload = start("LockDeadlock", &[], &dir);
    let pid = workload.pid();
    let (jstack, text) = jstack_deadlock(pid);
    assert!(
        jstack
            .iter()
            .all(|w| w.class == "java.util.concurrent.locks.ReentrantLock$NonfairSync"),
        "{jstack:?}"
    );
    let report = once(pid);
    assert_same_cycle(&report, &jstack);
    assert_java_stacks(&report, &jstack, &text);
    let report = live(pid, &dir);
    assert_same_cycle(&report, &jstack);
    assert_java_stacks(&report, &jstack, &text);
}
