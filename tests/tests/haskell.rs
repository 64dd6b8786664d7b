//! `stallwatch watch` on a GHC `-threaded` program whose Haskell threads deadlock on MVars
//! (`workloads/mvar_deadlock.hs`, built here with the installed `ghc`): z-decoded Haskell
//! names in the stacks, the GHC runtime's verdict on the main OS thread, and the green
//! threads read from the RTS. Root only; needs `ghc` (`cargo xtask setup` installs it).

use std::{
    collections::BTreeMap,
    env,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use stallwatch_tests::{
    REQUIRE_BPF_ENV, TempDir, require_bpf,
    tracer::{Tracer, run},
    watch_report::{WatchOutput, user_symbols},
    watch_workloads::RunningWorkload,
    workload_file,
};

/// How long a watch run may take in all.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the workload may take to build and start.
const STARTUP: Duration = Duration::from_secs(60);
/// How long the threads are left blocked before `watch` looks: past its threshold, and past
/// the RTS's idle GC (0.3 s), after which its ticker stops too.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long `profile` traces the workload.
const PROFILED: Duration = Duration::from_secs(3);
/// `watch --threshold`.
const THRESHOLD: &str = "500ms";

/// `ghc`'s path, or `None` after printing why the test is skipped; a missing `ghc` fails when
/// `STALLWATCH_REQUIRE_BPF=1` (CI, where `cargo xtask setup` installs it).
fn ghc() -> Option<PathBuf> {
    let found = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("ghc"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "ghc is not installed (cargo xtask setup installs it)";
        assert!(
            env::var(REQUIRE_BPF_ENV).map_or(true, |v| v != "1"),
            "{REQUIRE_BPF_ENV}=1 but {why}"
        );
        eprintln!("skipped: {why}");
    }
    found
}

/// Builds `workloads/mvar_deadlock.hs` with `ghc -threaded` into `dir`, printing the version.
fn build_workload(ghc: &Path, dir: &TempDir) -> PathBuf {
    let version = Command::new(ghc)
        .arg("--numeric-version")
        .output()
        .expect("running ghc --numeric-version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    println!("GHC version: {version}");
    let program = dir.join("mvar_deadlock");
    let status = Command::new(ghc)
        .args(["-threaded", "-O0", "-v0", "-outputdir"])
        .arg(dir.path())
        .arg("-o")
        .arg(&program)
        .arg(workload_file("mvar_deadlock.hs"))
        .status()
        .expect("running ghc");
    assert!(status.success(), "ghc failed: {status}");
    program
}

/// The workload's Haskell thread ids by role (`green main 4`).
fn green_ids(workload: &RunningWorkload) -> BTreeMap<String, u64> {
    workload
        .lines()
        .iter()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["green", role, id] => Some((role.to_owned(), id.parse().ok()?)),
            _ => None,
        })
        .collect()
}

/// Check that `watch --once` on a GHC program deadlocked on MVars shows decoded Haskell names,
/// says the main OS thread's Haskell threads are all blocked (a stall) with the green threads
/// and their states (text and JSON), and keeps the RTS's own threads idle.
#[test]
fn ghc_mvar_deadlock_is_reported() {
    if !require_bpf() {
        return;
    }
    let Some(ghc) = ghc() else {
        return;
    };
    let dir = TempDir::new("haskell");
    let program = build_workload(&ghc, &dir);
    let workload = RunningWorkload::spawn(&program, &[]);
    workload.wait_for("ready", STARTUP);
    std::thread::sleep(SETTLE);
    let ids = green_ids(&workload);
    let pid = workload.pid().to_string();

    let out = dir.join("once.jsonl");
    let args = ["watch", "-p", &pid, "--once", "--threshold", THRESHOLD];
    let json_args = [&args[..], &["--json", "-o", out.to_str().expect("UTF-8")]].concat();
    run(&json_args, RUN_TIMEOUT).assert_code(10);
    let report = WatchOutput::read(&out);
    let main_tid: u32 = pid.parse().expect("pid");
    let main = report
        .thread(main_tid)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no main thread in\n{}", report.dump()))
        .clone();
    assert_eq!(main["verdict"], "stall", "{}", report.dump());
    let explanation = main["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains("every Haskell thread is blocked"),
        "{explanation}"
    );
    let symbols = user_symbols(&main);
    assert!(
        symbols.iter().any(|s| s == "scheduleWaitThread"),
        "main OS thread not in the RTS scheduler: {symbols:?}"
    );

    // The green threads: main and both lockers blocked on MVars, the sleeper in a foreign
    // call; ids as the program printed them.
    let green: BTreeMap<u64, String> = main["green_threads"]
        .as_array()
        .unwrap_or_else(|| panic!("no green threads: {main}"))
        .iter()
        .map(|t| {
            let id = t["id"].as_u64().expect("id");
            (id, t["state"].as_str().unwrap_or("other").to_owned())
        })
        .collect();
    for role in ["main", "lock-a", "lock-b"] {
        assert_eq!(
            green.get(&ids[role]).map(String::as_str),
            Some("blocked_on_mvar"),
            "{role} (#{}) in {green:?}",
            ids[role]
        );
    }
    assert_eq!(
        green.get(&ids["ffi"]).map(String::as_str),
        Some("foreign_call"),
        "{green:?}"
    );
    let on_mvars = green.values().filter(|s| *s == "blocked_on_mvar").count();
    assert_eq!(
        on_mvars, 3,
        "exactly the three deadlocked threads: {green:?}"
    );

    // z-decoded Haskell names: the I/O manager's OS thread is in epoll_wait called from
    // base's GHC.Event.EPoll, and no z-encoded name is left anywhere.
    let all_symbols: Vec<String> = report
        .threads()
        .into_iter()
        .flat_map(user_symbols)
        .collect();
    assert!(
        all_symbols.iter().any(|s| s.starts_with("base:GHC.Event.")),
        "no decoded Haskell frame in {all_symbols:?}"
    );
    assert!(
        !all_symbols.iter().any(|s| s.contains("GHCzi")),
        "a z-encoded name was left: {all_symbols:?}"
    );
    let problems: Vec<u64> = report
        .problems()
        .iter()
        .filter_map(|t| t["tid"].as_u64())
        .collect();
    assert_eq!(problems, [u64::from(main_tid)], "only main is a problem");

    let text = run(args, RUN_TIMEOUT);
    text.assert_code(10);
    let expected = format!(
        "3 blocked on an MVar (#{}, #{}, #{})",
        ids["main"], ids["lock-a"], ids["lock-b"]
    );
    assert!(
        text.stdout.contains(&expected) && text.stdout.contains("Haskell threads:"),
        "text report lacks {expected:?}:\n{}",
        text.stdout
    );
}

/// Check that `profile` folds decoded Haskell names: the workload runs under it from the
/// start, so its I/O and timer managers' waits (in `epoll_wait`/`poll`, called from `base`'s
/// `GHC.Event` modules) are recorded, and no z-encoded name is left.
#[test]
fn ghc_profile_folds_decoded_names() {
    if !require_bpf() {
        return;
    }
    let Some(ghc) = ghc() else {
        return;
    };
    let dir = TempDir::new("haskell-profile");
    let program = build_workload(&ghc, &dir);
    let out = dir.join("out.folded");
    // The workload's output goes to a file: it outlives the profile, and must not hold the
    // profile's stdout and stderr open.
    let printed = dir.join("workload.out");
    let script = format!(
        "exec '{}' > '{}' 2>&1",
        program.display(),
        printed.display()
    );
    // `profile -- COMMAND` traces until the command exits, which this one never does: stop the
    // profile with SIGINT after a while instead.
    let tracer = Tracer::spawn([
        "profile",
        "-o",
        out.to_str().expect("UTF-8"),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    std::thread::sleep(PROFILED);
    let output = tracer.stop(libc::SIGINT);
    // The deadlocked workload outlives the profile: stop it.
    let pid = std::fs::read_to_string(&printed)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.parse::<i32>().ok());
    if let Some(pid) = pid {
        // SAFETY: kill has no memory preconditions; the pid is the workload's.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    output.assert_code(0);
    assert!(pid.is_some(), "the workload printed no pid");
    let folded = std::fs::read_to_string(&out).expect("reading the folded output");
    assert!(
        folded.contains(";base:GHC.Event."),
        "no decoded Haskell frame in the folded output:\n{folded}"
    );
    assert!(
        !folded.contains("GHCzi"),
        "a z-encoded name was left:\n{folded}"
    );
}
