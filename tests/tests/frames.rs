//! Which user frames `stallwatch profile` shows: none that is not a return address into code
//! (a frame-pointer walk gone astray), and names a stripped binary has only in its detached
//! debug file, found by `.gnu_debuglink` or build id.
//!
//! Root only (BPF); run with `--test-threads=1` (`cargo xtask test`). The debug-directory cases
//! run the tracer in a private mount namespace with a test directory bind-mounted over
//! `/usr/lib/debug` (`nodebug::ReplacedDebugDir`), so the host's files are never touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use stallwatch_tests::{
    TempDir,
    folded::{self, FoldedLine},
    nodebug::ReplacedDebugDir,
    require_bpf,
    tracer::{self, EXIT_TIMEOUT},
};

/// The workload: blocks `WAIT_MS` in `debuglink_only_wait`, a static function.
const WORKLOAD_BIN: &str = env!("DEBUGLINK_WAIT_BIN");
/// Its name (and comm).
const WORKLOAD: &str = "debuglink_wait";
/// The function only the debug file names.
const HIDDEN_FUNCTION: &str = "debuglink_only_wait";
/// How long the workload blocks.
const WAIT_MS: u64 = 300;

/// Runs `stallwatch profile -U [EXTRA] -- COMMAND` to its end; its folded lines.
fn profile(extra: &[&str], command: &[&str]) -> Vec<FoldedLine> {
    let mut args = vec!["profile", "-U"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    let out = tracer::run(&args, EXIT_TIMEOUT);
    out.assert_code(0);
    let lines = folded::parse(&out.stdout);
    assert!(
        !lines.is_empty(),
        "no line for {command:?}; stderr:\n{}",
        out.stderr
    );
    lines
}

/// Runs `tool ARGS`, panicking on failure.
fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (binutils): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stripped copy of the workload and its split-off debug file.
struct Stripped {
    dir: TempDir,
    binary: PathBuf,
    /// Where the debug file was made; tests move it where the tracer should find it.
    debug: PathBuf,
    /// Build id in hex.
    build_id: String,
}

impl Stripped {
    /// Copies the workload, splits its debug information off and strips it; with
    /// `debuglink`, the copy names the debug file in `.gnu_debuglink`.
    fn new(label: &str, debuglink: bool) -> Self {
        let dir = TempDir::new(label);
        let binary = dir.join(WORKLOAD);
        let store = dir.join("store");
        fs::create_dir(&store).expect("store dir");
        let debug = store.join(format!("{WORKLOAD}.debug"));
        fs::copy(WORKLOAD_BIN, &binary).expect("copying the workload");
        let (bin, dbg) = (path_str(&binary), path_str(&debug));
        run_tool("objcopy", &["--only-keep-debug", bin, dbg]);
        run_tool("strip", &["--strip-debug", "--strip-unneeded", bin]);
        if debuglink {
            run_tool("objcopy", &[&format!("--add-gnu-debuglink={dbg}"), bin]);
        }
        let notes = run_tool("readelf", &["-n", bin]);
        let build_id = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .unwrap_or_else(|| panic!("no build id in {bin}:\n{notes}"))
            .to_owned();
        // Otherwise the test could pass without any debug file.
        let bytes = fs::read(&binary).expect("reading the stripped copy");
        assert!(
            !bytes
                .windows(HIDDEN_FUNCTION.len())
                .any(|w| w == HIDDEN_FUNCTION.as_bytes()),
            "the stripped copy still names {HIDDEN_FUNCTION}"
        );
        Self {
            dir,
            binary,
            debug,
            build_id,
        }
    }

    /// Moves the debug file to `to` (creating its directory).
    fn move_debug(&mut self, to: PathBuf) {
        fs::create_dir_all(to.parent().expect("a directory")).expect("debug file directory");
        fs::rename(&self.debug, &to).expect("moving the debug file");
        self.debug = to;
    }

    /// The command running the copy.
    fn command(&self) -> [String; 2] {
        [path_str(&self.binary).to_owned(), WAIT_MS.to_string()]
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The workload's lines (its comm is the first frame).
fn workload_lines(lines: &[FoldedLine]) -> Vec<&FoldedLine> {
    lines
        .iter()
        .filter(|l| l.frames.first().is_some_and(|c| c == WORKLOAD))
        .collect()
}

/// Panics unless the workload's wait is charged to a stack naming the hidden function.
fn assert_named(lines: &[FoldedLine], case: &str) {
    let ours = workload_lines(lines);
    let named: Vec<&&FoldedLine> = ours
        .iter()
        .filter(|l| l.frames.iter().any(|f| f == HIDDEN_FUNCTION))
        .collect();
    assert!(
        folded::total_us(named.iter().copied().copied()) >= WAIT_MS * 1000 * 9 / 10,
        "{case}: the wait is not charged to {HIDDEN_FUNCTION}:\n{}",
        folded::dump(ours, 20)
    );
    assert!(
        named.iter().all(|l| l.frames.iter().any(|f| f == "main")),
        "{case}: main is not named:\n{}",
        folded::dump(named.into_iter().copied(), 20)
    );
}

/// Panics unless the workload's innermost frame is `debuglink_wait+0x...` and no frame names
/// the hidden function.
fn assert_unnamed(lines: &[FoldedLine], case: &str) {
    let ours = workload_lines(lines);
    let innermost_offsets = ours
        .iter()
        .filter(|l| {
            l.frames
                .last()
                .is_some_and(|f| f.starts_with(&format!("{WORKLOAD}+0x")))
        })
        .copied();
    assert!(
        folded::total_us(innermost_offsets) >= WAIT_MS * 1000 * 9 / 10,
        "{case}: the wait is not charged to a {WORKLOAD}+0x... frame:\n{}",
        folded::dump(ours.iter().copied(), 20)
    );
    assert!(
        !ours
            .iter()
            .any(|l| l.frames.iter().any(|f| f.contains(HIDDEN_FUNCTION))),
        "{case}: {HIDDEN_FUNCTION} named without its debug file:\n{}",
        folded::dump(ours, 20)
    );
}

/// Check that `profile -- sleep 0.5` shows no `[unknown 0x...]` user frame (the sleep's own
/// nanoseconds read as a return address by a frame-pointer walk through glibc), still charges
/// the sleep to a stack with `clock_nanosleep`, and counts every frame it dropped: the
/// recorded raw stacks minus the frames shown add up to the summary's loss counters.
#[test]
fn sleep_shows_no_frame_outside_code_and_counts_drops() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("frames-sleep");
    let record = dir.join("sleep.jsonl");
    let lines = profile(&["--record", path_str(&record)], &["sleep", "0.5"]);
    let sleep: Vec<&FoldedLine> = lines
        .iter()
        .filter(|l| l.frames.first().is_some_and(|c| c == "sleep"))
        .collect();
    let dump = folded::dump(sleep.iter().copied(), 20);
    assert!(
        !sleep
            .iter()
            .any(|l| l.frames.iter().any(|f| f.starts_with("[unknown 0x"))),
        "a sleep frame is no code address:\n{dump}"
    );
    let in_nanosleep = sleep
        .iter()
        .filter(|l| l.frames.iter().any(|f| f.contains("nanosleep")))
        .copied();
    assert!(
        folded::total_us(in_nanosleep) >= 450_000,
        "the sleep is not charged to nanosleep:\n{dump}"
    );

    // The recording holds the raw stacks as BPF walked them and the frames shown.
    let text = fs::read_to_string(&record).expect("recording written");
    let capture: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("recording line is JSON"))
        .find(|v| v["type"] == "capture")
        .expect("a capture line");
    let (mut cut, mut after) = (0u64, 0u64);
    for sample in capture["samples"].as_array().expect("samples") {
        let Some(raw) = sample["sample"]["user_stack"]["Frames"].as_array() else {
            continue;
        };
        let raw: Vec<u64> = raw.iter().map(|a| a.as_u64().expect("address")).collect();
        let shown: Vec<u64> = sample["user"]
            .as_array()
            .expect("user frames")
            .iter()
            .map(|f| f["addr"].as_u64().expect("frame address"))
            .collect();
        let kept = raw.iter().take_while(|a| shown.contains(a)).count();
        assert!(
            shown.iter().all(|a| raw[..kept].contains(a)),
            "frames shown are not a prefix of the raw stack {raw:x?}: {shown:x?}"
        );
        if kept < raw.len() {
            cut += 1;
            after += (raw.len() - kept - 1) as u64;
        }
    }
    let counters = &capture["counters"];
    println!("raw stacks cut: {cut}, frames after a bad one: {after}; counters: {counters}");
    assert_eq!(counters["user_frames_outside_code"].as_u64(), Some(cut));
    assert_eq!(
        counters["user_frames_after_bad_frame"].as_u64(),
        Some(after)
    );
}

/// Check that a stripped binary's static function is named through its `.gnu_debuglink`, with
/// the debug file next to the binary, in `.debug/` beside it, or under `/usr/lib/debug` plus
/// the binary's directory; and that without the debug file it is `debuglink_wait+0x...`.
#[test]
fn stripped_binary_is_named_through_its_debug_link() {
    if !require_bpf() {
        return;
    }
    let mut copy = Stripped::new("frames-debuglink", true);
    let command = copy.command();
    let command = [command[0].as_str(), command[1].as_str()];
    let bin_dir = copy.dir.path().to_owned();
    let name = format!("{WORKLOAD}.debug");

    copy.move_debug(bin_dir.join(&name));
    assert_named(&profile(&[], &command), "next to the binary");

    copy.move_debug(bin_dir.join(".debug").join(&name));
    assert_named(&profile(&[], &command), "in .debug/");

    let debug_root = TempDir::new("frames-debugroot");
    let relative = bin_dir.strip_prefix("/").expect("absolute temp dir");
    copy.move_debug(debug_root.path().join(relative).join(&name));
    {
        let _replaced = ReplacedDebugDir::new(debug_root.path());
        assert_named(&profile(&[], &command), "under /usr/lib/debug");
    }

    // Moved away (and the host's /usr/lib/debug replaced by an empty directory).
    let away = TempDir::new("frames-away");
    copy.move_debug(away.join(&name));
    let empty = TempDir::new("frames-empty");
    let _replaced = ReplacedDebugDir::new(empty.path());
    assert_unnamed(&profile(&[], &command), "without the debug file");
}

/// Check that a stripped binary without a debug link is named through its build id
/// (`/usr/lib/debug/.build-id/xx/yyyy.debug`), also when the binary was deleted while it ran
/// (the tracer then reads it through `/proc/self/fd/N`).
#[test]
fn stripped_binary_is_named_through_its_build_id() {
    if !require_bpf() {
        return;
    }
    let mut copy = Stripped::new("frames-buildid", false);
    let debug_root = TempDir::new("frames-buildid-root");
    let (first, rest) = copy.build_id.split_at(2);
    let in_build_id_dir = debug_root
        .path()
        .join(".build-id")
        .join(first)
        .join(format!("{rest}.debug"));
    println!("build id {}: {}", copy.build_id, in_build_id_dir.display());
    copy.move_debug(in_build_id_dir);
    let _replaced = ReplacedDebugDir::new(debug_root.path());
    let command = copy.command();
    assert_named(
        &profile(&[], &[command[0].as_str(), command[1].as_str()]),
        "by build id",
    );

    // Deleted while it waits: `rm` runs 100 ms into the workload's 300 ms wait.
    let script = format!(
        "{bin} {WAIT_MS} & sleep 0.1; rm {bin}; wait",
        bin = command[0]
    );
    let lines = profile(&[], &["sh", "-c", &script]);
    assert!(!copy.binary.exists(), "the binary was not deleted");
    assert_named(&lines, "by build id, deleted binary");
}
