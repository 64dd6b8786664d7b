//! Golden files rendered from recorded inputs: recordings of real runs on real workloads
//! (`tests/records/`, made by the ignored test `regenerate_recorded_inputs` of the
//! `stallwatch-tests` crate) replayed through the pure stages, compared whole with
//! `tests/golden/`. They cover watch's text and JSON (a deadlock with its join behind it, four
//! stalls grouped by their peer and resolved, a blocked event loop, a `--once` dump of a PI
//! deadlock, the final restatements) and profile's folded stacks and summary.

use super::*;
use crate::{cli::OutputArgs, golden};

/// Renders the watch recording `name` as text and as JSON, against `NAME.txt` and
/// `NAME.jsonl`.
fn check_watch(name: &str) {
    let path = golden::record(&format!("{name}.swrec"));
    let text = render_watch(&path, false).expect("text");
    golden::assert_golden(&format!("{name}.txt"), &text);
    let json = render_watch(&path, true).expect("JSON");
    golden::assert_golden(&format!("{name}.jsonl"), &json);
}

/// Check the jstack-style deadlock report, the join blocked behind it, and the final
/// restatement of a live watch of a deadlock forming.
#[test]
fn watch_deadlock_renders_as_recorded() {
    check_watch("watch-deadlock");
    let text = render_watch(&golden::record("watch-deadlock.swrec"), false).unwrap();
    assert!(text.contains("Found one deadlock in process"), "{text}");
    assert!(text.contains("blocked_by_deadlock: "), "{text}");
    assert!(text.contains("(final) still blocked at exit: 3 threads, 1 deadlock:"));
}

/// Check four stalls on one peer grouped under one headline, the idle server, and their
/// resolution when the process was killed.
#[test]
fn watch_recv_stall_renders_as_recorded() {
    check_watch("watch-recv-stall");
    let text = render_watch(&golden::record("watch-recv-stall.swrec"), false).unwrap();
    assert!(text.contains("stall: 4 threads blocked in recvfrom on 127.0.0.1:"));
    assert_eq!(text.matches("resolved: thread").count(), 4, "{text}");
}

/// Check an asyncio loop blocked in time.sleep.
#[test]
fn watch_event_loop_renders_as_recorded() {
    check_watch("watch-event-loop");
    let text = render_watch(&golden::record("watch-event-loop.swrec"), false).unwrap();
    assert!(text.contains("event_loop_blocked: thread "), "{text}");
}

/// Check a `--once` dump of a PI deadlock that formed before watch: the parked thread
/// explained, the other's owner from the PI word, no cycle invented.
#[test]
fn watch_once_pi_renders_as_recorded() {
    check_watch("watch-once-pi");
    let text = render_watch(&golden::record("watch-once-pi.swrec"), false).unwrap();
    assert!(text.contains("parked for ever by glibc"), "{text}");
    assert!(!text.contains("Found one deadlock"), "{text}");
}

/// Check a profile recording's folded stacks (bcc's layout, and with process roots and wait
/// leaves) and its summary, text and JSON.
#[test]
fn profile_renders_as_recorded() {
    let Recording::Profile {
        run,
        user_stacks,
        kernel_stacks,
        ..
    } = record::read(&golden::record("profile-sites.swrec")).expect("read")
    else {
        panic!("not a profile recording");
    };
    let folded = |args: OutputArgs| {
        let outputs = args.outputs(user_stacks, kernel_stacks).expect("outputs");
        let mut lines = crate::export::folded::folded_lines(&run.samples, &outputs.folded);
        lines.push(String::new());
        lines.join("\n")
    };
    let plain = OutputArgs::default();
    let leaves = OutputArgs {
        process_root: true,
        wait_leaf: true,
        ..plain.clone()
    };
    golden::assert_golden("profile-sites.folded", &folded(plain));
    golden::assert_golden("profile-sites.leaves.folded", &folded(leaves));
    let summary = profile::summary(&run);
    golden::assert_golden("profile-sites.summary.txt", &summary.render_text(10));
    let json = serde_json::to_string_pretty(&summary).expect("JSON") + "\n";
    golden::assert_golden("profile-sites.summary.json", &json);
}

/// Check that a recording of another format version, or not a recording at all, is refused
/// with what is wrong with it.
#[test]
fn other_versions_and_garbage_are_refused() {
    let dir = std::env::temp_dir().join(format!("sw-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let future = write(
        "future.swrec",
        "{\"type\":\"header\",\"format\":\"stallwatch-record\",\"format_version\":99}\n",
    );
    assert!(matches!(
        record::read(&future).err(),
        Some(RecordError::Version { found: 99, .. })
    ));
    let folded = write("out.folded", "a;b 1\n");
    assert!(matches!(
        record::read(&folded).err(),
        Some(RecordError::Malformed { line: 1, .. })
    ));
    let empty = write("empty.swrec", "");
    assert!(matches!(
        record::read(&empty).err(),
        Some(RecordError::Order { .. })
    ));
    assert!(matches!(
        record::read(&dir.join("missing")).err(),
        Some(RecordError::Read { .. })
    ));
    let recorded = std::fs::read_to_string(golden::record("watch-deadlock.swrec")).unwrap();
    let without_stacks: String = recorded
        .lines()
        .filter(|l| !l.starts_with("{\"type\":\"stacks\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let no_stacks = write("no-stacks.swrec", &without_stacks);
    assert!(matches!(
        record::read(&no_stacks).err(),
        Some(RecordError::Order { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}
