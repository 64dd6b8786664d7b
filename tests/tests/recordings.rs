//! `--record` and `stallwatch report`: a recording made by a real run renders exactly what the
//! run printed. Root only (the recording runs are real). Also the (ignored) test that makes the
//! recorded inputs of `tracer-user`'s golden-file tests.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use stallwatch_tests::{
    TempDir, deadlock_abba_bin, offcpu_sites_bin, recv_stall_bin, require_bpf,
    tracer::{EXIT_TIMEOUT, RunOutput, Tracer, run},
    watch_report::WatchOutput,
    watch_workloads::{DELAY_MS_ARG, READY, RunningWorkload, abba, asyncio, attach_watch},
    workload_file,
};

/// How long a run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Long enough for `watch` to attach before the workload blocks.
const ATTACH_DELAY_MS: &str = "3000";

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// `stallwatch report ARGS`, which must succeed.
fn report(args: &[&str]) -> RunOutput {
    let mut argv = vec!["report"];
    argv.extend_from_slice(args);
    let output = run(argv, RUN_TIMEOUT);
    output.assert_code(0);
    output
}

/// Starts `watch -p PID --record FILE ARGS` and waits until it is attached, before the
/// workload is `READY` (so the recording covers the wait forming).
fn record_watch(workload: &RunningWorkload, record: &Path, args: &[&str]) -> Tracer {
    let mut argv = vec!["--record", path_str(record)];
    argv.extend_from_slice(args);
    attach_watch(workload, &argv, READY)
}

/// Check that a live watch of a real deadlock, recorded, renders with `stallwatch report` to
/// the very JSON Lines the live run wrote, and that its text names the deadlock; and that a
/// `--once` dump renders to the very text it printed.
#[test]
fn watch_recording_renders_identically() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("record-watch");
    let (record, live) = (dir.join("watch.swrec"), dir.join("live.jsonl"));
    let workload = RunningWorkload::spawn(deadlock_abba_bin(), &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let args = [
        "--threshold",
        "1s",
        "--interval",
        "200ms",
        "-d",
        "6s",
        "--json",
        "-o",
        path_str(&live),
    ];
    let result = record_watch(&workload, &record, &args).wait(RUN_TIMEOUT);
    result.assert_code(11);
    let replayed = dir.join("replayed.jsonl");
    let output = report(&[path_str(&record), "--json", "-o", path_str(&replayed)]);
    let (live_text, replayed_text) = (read(&live), read(&replayed));
    assert!(
        !WatchOutput::parse(&live_text).cycles().is_empty(),
        "no deadlock recorded:\n{live_text}"
    );
    assert_eq!(
        replayed_text, live_text,
        "replayed JSON differs from the live run's"
    );
    assert!(
        output
            .stderr
            .starts_with("Recording of \"stallwatch watch -p "),
        "{}",
        output.stderr
    );
    let text = report(&[path_str(&record)]).stdout;
    assert!(text.contains("Found one deadlock in process"), "{text}");
    // A profile's output options make no sense for a watch recording: a usage error.
    run(["report", path_str(&record), "--wait-leaf"], RUN_TIMEOUT).assert_code(2);

    let once_record = dir.join("once.swrec");
    let pid = workload.pid().to_string();
    let once = run(
        [
            "watch",
            "-p",
            &pid,
            "--once",
            "--threshold",
            "1s",
            "--record",
            path_str(&once_record),
        ],
        RUN_TIMEOUT,
    );
    once.assert_code(11);
    assert_eq!(report(&[path_str(&once_record)]).stdout, once.stdout);
}

/// Check that a recorded profile renders with `stallwatch report` to the same folded stacks,
/// summary JSON and summary text as the live run, flame graph included, and that an output
/// that cannot be written is exit status 6.
#[test]
fn profile_recording_renders_identically() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("record-profile");
    let record = dir.join("profile.swrec");
    let outputs = |prefix: &str| {
        [
            dir.join(&format!("{prefix}.folded")),
            dir.join(&format!("{prefix}.json")),
            dir.join(&format!("{prefix}.svg")),
        ]
    };
    let [folded, json, svg] = outputs("live");
    let live = run(
        [
            "profile",
            "--wait-leaf",
            "--record",
            path_str(&record),
            "-o",
            path_str(&folded),
            "-o",
            path_str(&svg),
            "--summary-json",
            path_str(&json),
            "--",
            path_str(offcpu_sites_bin()),
            "--no-wait",
            "--iterations",
            "10",
        ],
        EXIT_TIMEOUT,
    );
    live.assert_code(0);
    let [r_folded, r_json, r_svg] = outputs("replayed");
    let replayed = report(&[
        path_str(&record),
        "--wait-leaf",
        "-o",
        path_str(&r_folded),
        "-o",
        path_str(&r_svg),
        "--summary-json",
        path_str(&r_json),
    ]);
    for (a, b) in [(&folded, &r_folded), (&json, &r_json), (&svg, &r_svg)] {
        assert_eq!(
            read(b),
            read(a),
            "{} differs from {}",
            b.display(),
            a.display()
        );
    }
    assert!(!read(&folded).is_empty());
    assert_eq!(summary_text(&replayed.stderr), summary_text(&live.stderr));
    let unwritable = run(
        [
            "report",
            path_str(&record),
            "--json",
            "-o",
            "/nonexistent/x",
        ],
        RUN_TIMEOUT,
    );
    unwritable.assert_code(6);
}

/// The end-of-run summary in what `profile` or `report` printed on stderr.
fn summary_text(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("Tracing") && !l.starts_with("Recording of"))
        .filter(|l| !l.starts_with("Wrote "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Where `tracer-user`'s golden-file tests find their recorded inputs.
fn recordings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-user/tests/records")
}

/// Makes the recorded inputs of `tracer-user`'s golden-file tests
/// (`tracer-user/tests/records/*.swrec`) from real runs; their rendered outputs are then
/// rewritten with `UPDATE_GOLDEN=1 cargo test -p tracer-user golden`. Run after a change of
/// the recording format: `sudo -E cargo xtask test -- --ignored regenerate_recorded_inputs`.
#[test]
#[ignore = "rewrites tracer-user/tests/records; run on purpose"]
fn regenerate_recorded_inputs() {
    require_bpf();
    let out = recordings_dir();
    fs::create_dir_all(&out).expect("records dir");
    let watch_args = ["--threshold", "1s", "--interval", "200ms"];

    // A deadlock forming while watched, its join behind it, and the final restatement.
    let workload = RunningWorkload::spawn(deadlock_abba_bin(), &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let record = out.join("watch-deadlock.swrec");
    let mut args = watch_args.to_vec();
    args.extend(["-d", "6s"]);
    record_watch(&workload, &record, &args)
        .wait(RUN_TIMEOUT)
        .assert_code(11);
    drop(workload);

    // Four clients stalled on one silent server, grouped by peer; resolved when killed.
    let mut workload = RunningWorkload::spawn(recv_stall_bin(), &[DELAY_MS_ARG, ATTACH_DELAY_MS]);
    let record = out.join("watch-recv-stall.swrec");
    let tracer = record_watch(&workload, &record, &watch_args);
    workload.wait_for(READY, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(2500));
    workload.kill();
    tracer.wait(RUN_TIMEOUT).assert_code(10);

    // An asyncio loop blocked in time.sleep inside a coroutine.
    let workload = RunningWorkload::spawn_python(
        &workload_file(asyncio::SCRIPT),
        &[asyncio::MODE_SLEEP, asyncio::WARMUP_S_ARG, "4"],
    );
    workload.wait_for(READY, Duration::from_secs(20));
    let pid = workload.pid().to_string();
    let record = out.join("watch-event-loop.swrec");
    let mut argv = vec!["watch", "-p", &pid, "--record", path_str(&record)];
    argv.extend(watch_args);
    argv.extend(["-d", "9s"]);
    run(argv, RUN_TIMEOUT).assert_code(10);
    drop(workload);

    // A PI deadlock that formed before watch: a --once dump from /proc alone.
    let workload = RunningWorkload::spawn(deadlock_abba_bin(), &[abba::PI_FLAG]);
    workload.wait_for(READY, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1500));
    let pid = workload.pid().to_string();
    let record = out.join("watch-once-pi.swrec");
    run(
        [
            "watch",
            "-p",
            &pid,
            "--once",
            "--threshold",
            "1s",
            "--record",
            path_str(&record),
        ],
        RUN_TIMEOUT,
    )
    .assert_code(10);
    drop(workload);

    // A profile of the off-CPU sites workload, run as the command.
    let record = out.join("profile-sites.swrec");
    let output = run(
        [
            "profile",
            "--record",
            path_str(&record),
            "-o",
            "/dev/null",
            "--format",
            "folded",
            "--",
            path_str(offcpu_sites_bin()),
            "--no-wait",
            "--iterations",
            "10",
        ],
        EXIT_TIMEOUT,
    );
    output.assert_code(0);
}
