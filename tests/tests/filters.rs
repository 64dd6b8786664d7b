//! Filters and stack selection not covered by the site tests: `--cgroup`, `-K`/`-U`,
//! `--state R`, and following the forks of `-- COMMAND`. Root only.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use stallwatch_tests::{
    TempDir, folded, require_bpf,
    tracer::{EXIT_TIMEOUT, Tracer, run},
};

/// Runs `stallwatch profile ARGS -o FILE -- sh -c SCRIPT` and returns the folded lines.
fn trace_script(args: &[&str], script: &str) -> Vec<folded::FoldedLine> {
    let dir = TempDir::new("filters");
    let out = dir.join("out.folded");
    let out_arg = out.display().to_string();
    let mut argv = vec!["profile", "-o", &out_arg];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--", "sh", "-c", script]);
    let output = run(argv, EXIT_TIMEOUT);
    output.assert_code(0);
    folded::read(&out)
}

/// Check that `-- COMMAND` also traces the processes the command forks (perf's inherit):
/// a `sleep 0.3` child shows up under its own process with about 300 ms in `[sleep]`.
#[test]
fn command_mode_follows_forked_children() {
    if !require_bpf() {
        return;
    }
    let lines = trace_script(&["--process-root", "--wait-leaf"], "sleep 0.3; true");
    let sleep_us: u64 = lines
        .iter()
        .filter(|l| {
            let p = l.parts(true);
            p.process.is_some_and(|pr| pr.starts_with("sleep ("))
                && p.leaf.first().is_some_and(|f| f == "[sleep]")
        })
        .map(|l| l.value_us)
        .sum();
    assert!(
        (285_000..=400_000).contains(&sleep_us),
        "forked `sleep 0.3` child traced for {sleep_us} us:\n{}",
        folded::dump(&lines, 20)
    );
}

/// Check that `-K` records kernel stacks only (no user frames, no delimiter) and `-U` user
/// stacks only (no kernel frames such as `schedule`).
#[test]
fn stack_kind_flags_select_stacks() {
    if !require_bpf() {
        return;
    }
    let kernel_only = trace_script(&["-K"], "sleep 0.1");
    assert!(!kernel_only.is_empty(), "-K traced nothing");
    for line in &kernel_only {
        assert!(
            !line.frames.iter().any(|f| f == "-"),
            "-K line has the user/kernel delimiter: {:?}",
            line.frames
        );
        assert!(
            line.frames.iter().any(|f| f.contains("schedule")),
            "-K line without kernel scheduler frames: {:?}",
            line.frames
        );
    }
    let user_only = trace_script(&["-U"], "sleep 0.1");
    assert!(!user_only.is_empty(), "-U traced nothing");
    for line in &user_only {
        assert!(
            !line
                .frames
                .iter()
                .any(|f| f == "-" || f.contains("schedule")),
            "-U line with kernel frames or delimiter: {:?}",
            line.frames
        );
    }
}

/// Check that `--state R` reports preemption (runnable) time apart, as `[runnable]` leaves,
/// and that the default state set (S,D) reports none: two CPU hogs share one CPU, so each
/// is preempted while runnable.
#[test]
fn runnable_state_is_reported_apart() {
    if !require_bpf() {
        return;
    }
    let hogs = "taskset -c 0 sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done' & \
                taskset -c 0 sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done' & wait";
    let runnable_us = |lines: &[folded::FoldedLine]| -> u64 {
        lines
            .iter()
            .filter(|l| l.frames.last().is_some_and(|f| f == "[runnable]"))
            .map(|l| l.value_us)
            .sum()
    };
    let with_r = trace_script(&["--state", "R"], hogs);
    assert!(
        runnable_us(&with_r) > 10_000,
        "--state R: only {} us of [runnable] time for two hogs on one CPU:\n{}",
        runnable_us(&with_r),
        folded::dump(&with_r, 20)
    );
    assert!(
        with_r
            .iter()
            .all(|l| l.frames.last().is_some_and(|f| f == "[runnable]")),
        "--state R recorded a non-runnable wait"
    );
    let default = trace_script(&[], hogs);
    assert_eq!(
        runnable_us(&default),
        0,
        "default states recorded runnable time"
    );
}

/// Check that `--cgroup DIR` traces the threads of that cgroup v2 group only: a sleeper moved
/// into a fresh group is seen, one outside is not.
#[test]
fn cgroup_filter_traces_only_that_group() {
    if !require_bpf() {
        return;
    }
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|r| std::path::Path::new(r).join("cgroup.procs").exists())
        .expect("a cgroup v2 hierarchy (cgroup.procs) under /sys/fs/cgroup");
    let group =
        std::path::PathBuf::from(root).join(format!("stallwatch-test-{}", std::process::id()));
    std::fs::create_dir_all(&group).expect("create test cgroup");
    let dir = TempDir::new("cgroup");
    let out = dir.join("out.folded");
    let mut tracer = Tracer::spawn([
        "profile".as_ref(),
        "--process-root".as_ref(),
        "--cgroup".as_ref(),
        group.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    tracer.wait_tracing();
    let procs = group.join("cgroup.procs");
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}; exec sleep 0.4", procs.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sleeper inside the group");
    let outside = Command::new("sleep")
        .arg("0.4")
        .spawn()
        .expect("spawn sleeper outside");
    let (inside_pid, outside_pid) = (inside.id(), outside.id());
    for mut child in [inside, outside] {
        assert!(child.wait().expect("wait sleeper").success());
    }
    std::thread::sleep(Duration::from_millis(100));
    let output = tracer.stop(libc::SIGINT);
    let _ = std::fs::remove_dir(&group);
    output.assert_code(0);
    let lines = folded::read(&out);
    let pids: Vec<Option<u32>> = lines.iter().map(|l| l.process_pid()).collect();
    assert!(
        pids.contains(&Some(inside_pid)),
        "sleeper {inside_pid} in the group not traced:\n{}",
        folded::dump(&lines, 20)
    );
    assert!(
        pids.iter().all(|&p| p == Some(inside_pid)),
        "processes outside the group traced (outside sleeper {outside_pid}): {pids:?}"
    );
}
