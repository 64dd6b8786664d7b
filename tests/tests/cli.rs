//! Exit codes, output formats and the summary JSON of `stallwatch profile`.

use std::{fs, os::unix::process::CommandExt, process::Command, time::Duration};

use serde_json::Value;
use stallwatch_tests::{
    TempDir, folded, require_bpf,
    sites::{pid_filter, trace_sites},
    stallwatch_bin,
    tracer::{EXIT_TIMEOUT, run},
    workload::SLEEP,
};

/// Check that an unknown option is a usage error (exit code 2); needs no privileges.
#[test]
fn unknown_option_exits_2() {
    let output = run(["profile", "--no-such-option"], EXIT_TIMEOUT);
    output.assert_code(2);
    assert!(!output.started_tracing());
}

/// Check that a minimum wait above the maximum is a usage error (exit code 2) with a one-line
/// message naming both, before anything is traced; needs no privileges.
#[test]
fn min_above_max_block_exits_2() {
    let output = run(["profile", "-m", "10", "-M", "5", "-d", "1s"], EXIT_TIMEOUT);
    output.assert_code(2);
    assert!(!output.started_tracing());
    let lines: Vec<_> = output.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line:\n{}", output.stderr);
    assert!(
        lines[0].contains("(10)") && lines[0].contains("(5)"),
        "{}",
        lines[0]
    );
}

/// Check that `report` on a file that is not a recording, or is missing, exits with code 8 and
/// one line saying what is wrong; needs no privileges.
#[test]
fn report_of_no_recording_exits_8() {
    let dir = TempDir::new("report-garbage");
    let garbage = dir.join("out.folded");
    fs::write(&garbage, "a;b 1\n").expect("writing a folded file");
    for path in [garbage.as_path(), dir.join("missing").as_path()] {
        let output = run(["report".as_ref(), path.as_os_str()], EXIT_TIMEOUT);
        output.assert_code(8);
        assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
        assert!(
            output.stderr.contains(&*path.to_string_lossy()),
            "{}",
            output.stderr
        );
    }
}

/// Check that a pid that does not exist exits with code 5 and a one-line message.
#[test]
fn missing_pid_exits_5_with_one_line() {
    if !require_bpf() {
        return;
    }
    let output = run(["profile", "-p", "999999999", "-d", "5s"], EXIT_TIMEOUT);
    output.assert_code(5);
    assert!(
        !output.started_tracing(),
        "traced anyway:\n{}",
        output.stderr
    );
    let lines: Vec<_> = output
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "stderr is not one line:\n{}", output.stderr);
    assert!(
        lines[0].contains("999999999"),
        "message does not name the pid: {}",
        lines[0]
    );
}

/// Check that an unwritable output path exits with code 6 before tracing starts.
#[test]
fn unwritable_output_exits_6_before_tracing() {
    if !require_bpf() {
        return;
    }
    let output = run(
        ["profile", "-d", "10s", "-o", "/nonexistent-dir/x.folded"],
        EXIT_TIMEOUT,
    );
    output.assert_code(6);
    assert!(
        !output.started_tracing(),
        "traced anyway:\n{}",
        output.stderr
    );
    assert!(
        output.elapsed < Duration::from_secs(10),
        "exited only after the trace duration ({:?})",
        output.elapsed
    );
}

/// Check that an unprivileged user gets exit code 3 (needs root to switch to `nobody`).
#[test]
fn unprivileged_user_exits_3() {
    if !require_bpf() {
        return;
    }
    let mut command = Command::new(stallwatch_bin());
    command.args(["profile", "-d", "1s"]).uid(65534).gid(65534);
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: cannot run stallwatch as nobody: {e}");
            return;
        }
    };
    assert_eq!(
        output.status.code(),
        Some(3),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Check that `-o x.svg` writes a well-formed flame graph next to a folded file that inferno
/// renders too.
#[test]
fn svg_and_folded_outputs_render() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("svg-outputs");
    let svg_path = dir.join("out.svg");
    let svg_arg = svg_path.display().to_string();
    let trace = trace_sites("svg", 20, pid_filter, &["-o", &svg_arg], libc::SIGINT);
    let svg = fs::read_to_string(&svg_path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; stderr:\n{}",
            svg_path.display(),
            trace.output.stderr
        )
    });
    let trimmed = svg.trim();
    assert!(
        trimmed.starts_with("<?xml") || trimmed.starts_with("<svg"),
        "SVG starts with {:?}",
        &trimmed[..trimmed.len().min(80)]
    );
    assert!(trimmed.ends_with("</svg>"), "SVG does not end with </svg>");
    assert!(
        svg.contains("site_nanosleep"),
        "SVG does not mention site_nanosleep"
    );

    let text = fs::read_to_string(trace.dir.join("out.folded")).expect("folded output");
    let mut rendered = Vec::new();
    inferno::flamegraph::from_lines(
        &mut inferno::flamegraph::Options::default(),
        text.lines(),
        &mut rendered,
    )
    .unwrap_or_else(|e| panic!("inferno cannot render the folded output: {e}"));
    let rendered = String::from_utf8(rendered).expect("inferno writes UTF-8");
    assert!(rendered.contains("site_nanosleep"));
}

/// Check that `--summary-json` has every documented field, lists losses, and that its totals
/// agree with the folded output written in the same run.
#[test]
fn summary_json_agrees_with_folded() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("summary");
    let summary_path = dir.join("summary.json");
    let summary_arg = summary_path.display().to_string();
    let trace = trace_sites(
        "summary",
        20,
        pid_filter,
        &["--summary-json", &summary_arg],
        libc::SIGINT,
    );
    let text = fs::read_to_string(&summary_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", summary_path.display()));
    let summary: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{text}"));
    let field = |name: &str| -> &Value {
        summary
            .get(name)
            .unwrap_or_else(|| panic!("summary has no {name:?}:\n{text}"))
    };
    let number = |name: &str| -> u64 {
        field(name)
            .as_u64()
            .unwrap_or_else(|| panic!("summary {name:?} is not a count:\n{text}"))
    };
    for name in ["processes", "wait_kinds", "threads", "losses"] {
        assert!(
            field(name).is_array(),
            "summary {name:?} is not a list:\n{text}"
        );
    }
    assert!(
        field("counters").is_object(),
        "summary counters is not an object"
    );
    assert!(number("duration_ms") > 0);

    let summary_us = number("blocked_us") + number("runnable_us") + number("still_blocked_us");
    let folded_us = folded::total_us(&trace.lines);
    // Each folded line and each summary total is rounded to whole microseconds.
    let rounding = trace.lines.len() as u64 + 3;
    assert!(
        summary_us.abs_diff(folded_us) <= rounding,
        "summary totals {summary_us} us vs folded {folded_us} us ({} lines)\n{text}",
        trace.lines.len()
    );

    let process = field("processes")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(trace.tids.pid)))
        .unwrap_or_else(|| panic!("workload pid missing from summary processes:\n{text}"));
    assert_eq!(process["name"].as_str(), Some("offcpu_sites"), "{text}");

    let sleep_tid = u64::from(trace.tids.tid(SLEEP));
    let thread = field("threads")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"].as_u64() == Some(sleep_tid))
        .unwrap_or_else(|| panic!("{SLEEP} missing from summary threads:\n{text}"));
    assert_eq!(thread["comm"].as_str(), Some(SLEEP));
    let truth = trace.truth.site(SLEEP);
    let thread_us = thread["offcpu_us"].as_u64().expect("thread offcpu_us");
    let thread_waits = thread["waits"].as_u64().expect("thread waits");
    assert!(
        thread_us * 100 >= truth.blocked_us() * 98 && thread_waits >= truth.count,
        "{SLEEP}: summary {thread_us} us in {thread_waits} waits, workload measured {} us in {}",
        truth.blocked_us(),
        truth.count
    );
    for loss in field("losses").as_array().unwrap() {
        assert!(
            loss["reason"].is_string() && loss["count"].is_u64(),
            "malformed loss entry {loss}"
        );
    }
}
