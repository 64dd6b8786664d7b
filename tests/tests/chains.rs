//! `stallwatch watch -p CLIENT` on a client waiting for replies from a server in another
//! process, on TCP loopback: the server is inspected read-only as the process at the other
//! end, and the client's verdict follows it. A server whose handlers wait behind a deadlock
//! makes the clients stalls whose chain ends in that deadlock (exit status 10: the server is
//! not watched); a server that read the request and sits idle in `select` holds it, as a
//! blocking queue pop does: the clients are idle (exit status 0). Root only.

use std::{thread, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, peer_chain_bin, require_bpf,
    tracer::run,
    watch_report::cycle_edges,
    watch_workloads::{
        ONCE_TIMEOUT, READY, RunningWorkload, once_json, peer_chain, wait_until_blocked_in,
    },
};

/// How long the clients are left blocked before `watch` looks: past its 1 s threshold.
const BLOCKED_BEFORE_WATCH: Duration = Duration::from_millis(1600);
/// x86_64 `futex`.
const SYS_FUTEX: i64 = 202;

/// Starts the server in `mode` and a client of it, both READY.
fn server_and_client(mode: &str) -> (RunningWorkload, RunningWorkload) {
    let server = RunningWorkload::spawn(peer_chain_bin(), &[mode, "--timeout-s", "60"]);
    server.wait_for(READY, Duration::from_secs(20));
    let port = server.port().to_string();
    let client = RunningWorkload::spawn(
        peer_chain_bin(),
        &[
            peer_chain::CLIENT,
            peer_chain::PORT_ARG,
            &port,
            "--timeout-s",
            "60",
        ],
    );
    client.wait_for(READY, Duration::from_secs(20));
    (server, client)
}

/// Check that two client threads waiting for replies from a server whose handler threads
/// wait for a mutex held by a deadlocked worker are stalls naming the server
/// (`resource.peer_pid`), with a chain through a handler and both workers that closes the
/// cycle; the server's deadlock is reported as not watched, its idle threads are not listed,
/// and the exit status is 10 (the client's stall, not the server's deadlock). The text report
/// shows the chain under the clients' headline.
#[test]
fn clients_of_a_deadlocked_server_lead_into_its_deadlock() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("chains-deadlock");
    let (server, client) = server_and_client(peer_chain::SERVER_DEADLOCK);
    let handlers: Vec<u32> = peer_chain::HANDLERS.map(|h| server.tid(h)).to_vec();
    for handler in peer_chain::HANDLERS {
        wait_until_blocked_in(&server, handler, &[SYS_FUTEX], Duration::from_secs(10));
    }
    thread::sleep(BLOCKED_BEFORE_WATCH);
    let (worker_1, worker_2) = (
        server.tid(peer_chain::WORKER_1),
        server.tid(peer_chain::WORKER_2),
    );

    let (result, report) = once_json(client.pid(), &dir.join("watch.jsonl"));
    result.assert_code(10);
    for role in peer_chain::CLIENTS {
        let tid = client.tid(role);
        let t = report.thread_with(tid, "stall");
        assert_eq!(t["resource"]["peer_pid"], server.pid(), "{t:#}");
        // Which handler serves which connection cannot be known: no peer thread.
        assert!(t["resource"]["peer_tid"].is_null(), "{t:#}");
        assert_eq!(t["watched"], true, "{t:#}");
        let chain: Vec<&Value> = t["chain"]
            .as_array()
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        let tids: Vec<u64> = chain.iter().filter_map(|l| l["tid"].as_u64()).collect();
        // A handler (which one serves this connection cannot be known), then the worker
        // holding M, then the other worker, then back to the first: the cycle.
        assert_eq!(chain.len(), 4, "{t:#}");
        assert_eq!(chain[0]["via"], "peer", "{t:#}");
        assert_eq!(chain[0]["pid"], server.pid(), "{t:#}");
        assert_eq!(chain[0]["verdict"], "blocked_by_deadlock", "{t:#}");
        assert!(handlers.contains(&(tids[0] as u32)), "{t:#}");
        assert_eq!(chain[0]["alike_threads"], 1, "{t:#}");
        assert_eq!(
            tids[1..],
            [
                u64::from(worker_1),
                u64::from(worker_2),
                u64::from(worker_1)
            ],
            "{t:#}"
        );
        assert!(
            chain[1..].iter().all(|l| l["verdict"] == "deadlock"),
            "{t:#}"
        );
        assert_eq!(chain[3]["closes_cycle"], true, "{t:#}");
        let explanation = t["explanation"].as_str().unwrap_or_default();
        assert!(
            explanation.contains(&format!(
                "pid {} at the other end is blocked itself",
                server.pid()
            )),
            "{t:#}"
        );
    }
    // The server's cycle is reported, as not watched.
    let cycles = report.cycles();
    let cycle = cycles
        .iter()
        .find(|c| c["pid"] == server.pid())
        .unwrap_or_else(|| panic!("no cycle in the server:\n{}", report.dump()));
    assert_eq!(cycle["watched"], false, "{cycle:#}");
    let mut members: Vec<u32> = cycle_edges(cycle).into_iter().map(|e| e.0).collect();
    members.sort_unstable();
    let mut workers = vec![worker_1, worker_2];
    workers.sort_unstable();
    assert_eq!(members, workers, "{cycle:#}");
    // The server's idle threads (main joining, the acceptor) are not listed.
    for idle in [server.pid(), server.tid("acceptor")] {
        assert!(report.thread(idle).is_empty(), "{}", report.dump());
    }

    let pid = client.pid().to_string();
    let text = run(
        ["watch", "-p", &pid, "--once", "--threshold", "1s"],
        ONCE_TIMEOUT,
    );
    text.assert_code(10);
    let server_label = format!("process {} (peer_chain)", server.pid());
    for expected in [
        format!("  -> waits for a reply from {server_label}: \"handler-"),
        format!("  -> waits for the holder \"worker-1\" (tid {worker_1}), deadlock:"),
        format!("  -> waits for the holder \"worker-2\" (tid {worker_2}), deadlock:"),
        "the cycle closes here\n".to_owned(),
        format!(
            "Found one deadlock in {server_label} (not watched: a watched thread waits on it):"
        ),
    ] {
        assert!(
            text.stdout.contains(&expected),
            "{expected:?} not in:\n{}",
            text.stdout
        );
    }
}

/// Check that clients whose requests a local server read and holds while it sits idle in
/// `select` (a blocking queue pop with nothing to pop) are idle, not stalls: no problem,
/// exit status 0, the server (single-threaded) named as peer process and thread. The twin
/// whose request is never read is `fdwaits::unanswered_request_is_a_stall_naming_the_peer`.
#[test]
fn request_held_by_an_idle_server_is_idle() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("chains-hold");
    let (server, client) = server_and_client(peer_chain::SERVER_HOLD);
    thread::sleep(BLOCKED_BEFORE_WATCH);

    let (result, report) = once_json(client.pid(), &dir.join("watch.jsonl"));
    assert!(report.problems().is_empty(), "{}", report.dump());
    result.assert_code(0);
    for role in peer_chain::CLIENTS {
        let listed = report.thread(client.tid(role));
        assert!(!listed.is_empty(), "{role} not listed:\n{}", report.dump());
        for t in listed {
            assert_eq!(t["verdict"], "idle", "{t:#}");
            assert_eq!(t["resource"]["peer_pid"], server.pid(), "{t:#}");
            assert_eq!(t["resource"]["peer_tid"], server.pid(), "{t:#}");
            let explanation = t["explanation"].as_str().unwrap_or_default();
            assert!(
                explanation.contains(&format!("was read by pid {}", server.pid())),
                "{t:#}"
            );
        }
    }
    // The server's own thread is not listed: it is not watched.
    assert!(report.thread(server.pid()).is_empty(), "{}", report.dump());
}
