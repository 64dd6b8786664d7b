//! Tests of `cli`.

use super::*;

fn profile(args: &[&str]) -> ProfileArgs {
    let mut argv = vec!["stallwatch", "profile"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("parse").command {
        Command::Profile(p) => p,
        other => panic!("parsed as {other:?}"),
    }
}

fn watch(args: &[&str]) -> WatchArgs {
    let mut argv = vec!["stallwatch", "watch"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("parse").command {
        Command::Watch(w) => w,
        other => panic!("parsed as {other:?}"),
    }
}

/// Check that watch's defaults are the issue's (5 s threshold, 1 s interval, host-wide)
/// and its capture keeps only waits in flight, with user registers.
#[test]
fn watch_defaults_and_capture() {
    let w = watch(&[]);
    assert_eq!(w.threshold, Duration::from_secs(5));
    assert_eq!(w.interval, Duration::from_secs(1));
    assert!(w.pids.is_empty() && !w.once && !w.json && !w.exit_on_deadlock);
    let config = watch(&["-p", "1,2", "--threshold", "500ms"]).capture_config();
    assert_eq!(config.pids, [1, 2]);
    assert!(config.in_flight_only && config.user_regs);
    assert!(Cli::try_parse_from(["stallwatch", "watch", "--threshold", "soon"]).is_err());
}

/// Check that durations accept the units users type and reject nonsense.
#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("-1").is_err());
    assert!(parse_duration("soon").is_err());
}

/// Check that states parse from letters, `all` and masks.
#[test]
fn states_parse() {
    assert_eq!(parse_states("S,D"), Ok(state::DEFAULT_MASK));
    assert_eq!(parse_states("r"), Ok(state::RUNNABLE));
    assert_eq!(parse_states("all"), Ok(state::ALL));
    assert_eq!(parse_states("3"), Ok(state::SLEEPING | state::DISK));
    assert!(parse_states("X").is_err());
    assert!(parse_states("0").is_err());
}

/// Check that bcc-style flags map onto the capture configuration.
#[test]
fn bcc_flags_map_to_capture_config() {
    let p = profile(&[
        "-p", "1,2", "-p", "3", "-t", "9", "-m", "10", "-M", "20", "-U", "-u",
    ]);
    let c = p.capture_config();
    assert_eq!(c.pids, vec![1, 2, 3]);
    assert_eq!(c.tids, vec![9]);
    assert_eq!((c.min_block_us, c.max_block_us), (10, Some(20)));
    assert!(c.user_stacks && !c.kernel_stacks);
    assert_eq!(c.thread_kinds, ThreadKinds::UserOnly);
    assert!(!c.filter_processes);
}

/// Check that a command after `--` restricts tracing to it.
#[test]
fn command_enables_process_filter() {
    let p = profile(&["--", "sleep", "1"]);
    assert_eq!(p.command, vec!["sleep", "1"]);
    assert!(p.capture_config().filter_processes);
}

/// Check that output formats come from extensions, then --format, else an error.
#[test]
fn output_formats_from_extension_or_flag() {
    let o = profile(&["-o", "a.svg", "-o", "b.folded"])
        .outputs()
        .unwrap();
    assert_eq!(o.files[0].1, Format::Svg);
    assert_eq!(o.files[1].1, Format::Folded);
    let o = profile(&["-o", "a.out", "--format", "svg"])
        .outputs()
        .unwrap();
    assert_eq!(o.files[0].1, Format::Svg);
    assert!(profile(&["-o", "a.out"]).outputs().is_err());
}

/// Check that contradictory flags are usage errors, and `-m` above `-M` is one too.
#[test]
fn conflicting_flags_are_rejected() {
    let argv = ["stallwatch", "profile", "-U", "-K"];
    assert!(Cli::try_parse_from(argv).is_err());
    assert!(
        profile(&["-m", "10", "-M", "5"])
            .block_range_error()
            .is_some()
    );
    assert!(
        profile(&["-m", "5", "-M", "5"])
            .block_range_error()
            .is_none()
    );
    assert!(profile(&["-m", "5"]).block_range_error().is_none());
}

/// Check that `report` takes a file and a profile recording's output options, and tells
/// which of them a watch recording cannot use.
#[test]
fn report_takes_a_file_and_output_options() {
    let argv = [
        "stallwatch",
        "report",
        "r.swrec",
        "-o",
        "a.svg",
        "--wait-leaf",
    ];
    let Command::Report(r) = Cli::try_parse_from(argv).expect("parse").command else {
        panic!("not report");
    };
    assert_eq!(r.file, std::path::Path::new("r.swrec"));
    assert_eq!(r.output.profile_only_flag(), Some("--wait-leaf"));
    let argv = ["stallwatch", "report", "r.swrec", "--json", "-o", "a.jsonl"];
    let Command::Report(r) = Cli::try_parse_from(argv).expect("parse").command else {
        panic!("not report");
    };
    assert!(r.json);
    assert_eq!(r.output.profile_only_flag(), None);
    assert!(Cli::try_parse_from(["stallwatch", "report"]).is_err());
}

/// Check that `--unwind` defaults to auto, takes fp and dwarf, and reaches the capture
/// configuration with the copy size; watch never copies stacks.
#[test]
fn unwind_mode_maps_to_capture_config() {
    let c = profile(&[]).capture_config();
    assert_eq!(c.unwind, UnwindMode::Auto);
    assert_eq!(c.stack_copy_bytes, tracer_common::DEFAULT_STACK_COPY_BYTES);
    let c = profile(&["--unwind", "dwarf", "--stack-copy-bytes", "8192"]).capture_config();
    assert_eq!((c.unwind, c.stack_copy_bytes), (UnwindMode::Dwarf, 8192));
    assert_eq!(
        profile(&["--unwind", "fp"]).capture_config().unwind,
        UnwindMode::Fp
    );
    assert!(Cli::try_parse_from(["stallwatch", "profile", "--unwind", "lbr"]).is_err());
    assert_eq!(watch(&[]).capture_config().unwind, UnwindMode::Fp);
}
