//! Tests of `folded`.

use super::*;
use crate::model::{FrameKind, OffCpuSample, Waker};

/// A named frame.
fn f(name: &str) -> Frame {
    Frame {
        addr: 0x1000,
        name: Some(name.into()),
        ..Frame::default()
    }
}

/// A resolved sample of pid 100 / tid 101 "worker" with the given frames (innermost
/// first) and time.
fn sample(user: &[&str], kernel: &[&str], total_ns: u64) -> ResolvedSample {
    ResolvedSample {
        sample: OffCpuSample {
            pid: 100,
            tid: 101,
            comm: "worker".into(),
            user_stack: RawStack::Frames(vec![0; user.len()]),
            kernel_stack: RawStack::Frames(vec![0; kernel.len()]),
            state: Some(ThreadState::Sleeping),
            total_ns,
            count: 1,
            max_ns: total_ns,
            ..OffCpuSample::default()
        },
        process_name: "server".into(),
        user: user.iter().map(|n| f(n)).collect(),
        kernel: kernel.iter().map(|n| f(n)).collect(),
        ..ResolvedSample::default()
    }
}

fn futex_sample() -> ResolvedSample {
    let mut s = sample(
        &["pthread_cond_wait", "main"],
        &["schedule", "futex_wait", "do_syscall_64"],
        2_000_000,
    );
    s.sample.call = Some(SyscallCall {
        kind: WaitKind::Futex,
        nr: syscalls::SYS_FUTEX,
        resource: 0x7f00_1000,
        detail: 128 | 9, // FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG
        timeout: 0,
    });
    s
}

/// Check that the default layout is bcc `offcputime -f -d`: comm, user outermost
/// first, `-`, kernel outermost first, value in microseconds.
#[test]
fn default_layout_matches_bcc_offcputime() {
    let lines = folded_lines(&[futex_sample()], &FoldedOptions::default());
    assert_eq!(
        lines,
        ["worker;main;pthread_cond_wait;-;do_syscall_64;futex_wait;schedule 2000"]
    );
}

/// Check that process_root prefixes `PROCNAME (PID)`.
#[test]
fn process_root_prefixes_process_frame() {
    let opts = FoldedOptions {
        process_root: true,
        ..FoldedOptions::default()
    };
    let lines = folded_lines(&[sample(&["main"], &["schedule"], 1000)], &opts);
    assert_eq!(lines, ["server (100);worker;main;-;schedule 1"]);
}

/// Check that wait_leaf appends kind, futex command and resource label.
#[test]
fn wait_leaf_appends_kind_futex_op_and_label() {
    let opts = FoldedOptions {
        wait_leaf: true,
        ..FoldedOptions::default()
    };
    let lines = folded_lines(&[futex_sample()], &opts);
    assert_eq!(
        lines,
        [
            "worker;main;pthread_cond_wait;-;do_syscall_64;futex_wait;schedule;\
          [futex];[FUTEX_WAIT_BITSET];[uaddr=0x7f001000] 2000"
        ]
    );
    let mut other = sample(&["main"], &["schedule"], 1000);
    other.sample.call = None;
    assert_eq!(
        folded_lines(&[other], &opts),
        ["worker;main;-;schedule;[other] 1"]
    );
}

/// Check that runnable time always ends in `[runnable]` (and no wait kind), and
/// still-blocked waits always end in `[still blocked]`, so neither merges with blocked time.
#[test]
fn runnable_and_still_blocked_get_leaves_without_wait_leaf() {
    let blocked = sample(&["main"], &["schedule"], 1000);
    let mut runnable = blocked.clone();
    runnable.sample.state = Some(ThreadState::Runnable);
    runnable.sample.call = Some(SyscallCall {
        kind: WaitKind::Futex,
        ..SyscallCall::default()
    });
    let mut still = blocked.clone();
    still.sample.still_blocked = true;
    let lines = folded_lines(&[blocked, runnable, still], &FoldedOptions::default());
    assert_eq!(
        lines,
        [
            "worker;main;-;schedule 1",
            "worker;main;-;schedule;[runnable] 1",
            "worker;main;-;schedule;[still blocked] 1",
        ]
    );
    let opts = FoldedOptions {
        wait_leaf: true,
        ..FoldedOptions::default()
    };
    let mut still = sample(&["main"], &["schedule"], 1000);
    still.sample.still_blocked = true;
    still.sample.call = Some(SyscallCall {
        kind: WaitKind::Sleep,
        nr: 230,
        ..SyscallCall::default()
    });
    assert_eq!(
        folded_lines(&[still], &opts),
        ["worker;main;-;schedule;[sleep];[still blocked] 1"]
    );
}

/// Check that identical stacks merge (ns summed before rounding) and lines sort.
#[test]
fn identical_stacks_merge_and_sort() {
    let a = sample(&["main"], &["schedule"], 400);
    let b = sample(&["aaa"], &["schedule"], 3_000);
    let lines = folded_lines(&[a.clone(), b, a.clone(), a], &FoldedOptions::default());
    // 3 x 400 ns = 1.2 us -> 1, not 3 x 0.
    assert_eq!(
        lines,
        ["worker;aaa;-;schedule 3", "worker;main;-;schedule 1"]
    );
}

/// Check microsecond rounding: to nearest, half up, never 0 for non-zero time, and
/// zero-time samples dropped.
#[test]
fn values_round_to_nearest_microsecond() {
    assert_eq!(ns_to_us(0), 0);
    assert_eq!(ns_to_us(1), 1);
    assert_eq!(ns_to_us(1_499), 1);
    assert_eq!(ns_to_us(1_500), 2);
    assert_eq!(ns_to_us(2_499), 2);
    assert_eq!(ns_to_us(u64::MAX), u64::MAX / 1000);
    let zero = sample(&["main"], &["schedule"], 0);
    assert!(folded_lines(&[zero], &FoldedOptions::default()).is_empty());
}

/// Check that lost stacks print `[missed user stack]` / `[missed kernel stack]`.
#[test]
fn missed_stacks_are_marked() {
    let mut s = sample(&[], &[], 1000);
    s.sample.user_stack = RawStack::Missed;
    s.sample.kernel_stack = RawStack::Missed;
    assert_eq!(
        folded_lines(&[s], &FoldedOptions::default()),
        ["worker;[missed user stack];-;[missed kernel stack] 1"]
    );
}

/// Check that a kernel thread (no user stack) keeps the `-` delimiter, and that user-only
/// or kernel-only output and a disabled delimiter drop it.
#[test]
fn kernel_thread_and_single_stack_kinds() {
    let mut s = sample(&[], &["schedule", "kthread"], 5_000);
    s.sample.user_stack = RawStack::None;
    s.sample.comm = "kworker/0:1".into();
    assert_eq!(
        folded_lines(std::slice::from_ref(&s), &FoldedOptions::default()),
        ["kworker/0:1;-;kthread;schedule 5"]
    );
    let kernel_only = FoldedOptions {
        user_stacks: false,
        ..FoldedOptions::default()
    };
    assert_eq!(
        folded_lines(std::slice::from_ref(&s), &kernel_only),
        ["kworker/0:1;kthread;schedule 5"]
    );
    let user_only = FoldedOptions {
        kernel_stacks: false,
        ..FoldedOptions::default()
    };
    let u = sample(&["read", "main"], &["schedule"], 1000);
    assert_eq!(
        folded_lines(std::slice::from_ref(&u), &user_only),
        ["worker;main;read 1"]
    );
    let no_delim = FoldedOptions {
        delimiter: false,
        ..FoldedOptions::default()
    };
    assert_eq!(
        folded_lines(&[u], &no_delim),
        ["worker;main;read;schedule 1"]
    );
}

/// Check the bcc offwaketime layout: target, `--`, waker kernel innermost first, `-`,
/// waker user innermost first, waker comm.
#[test]
fn waker_layout_matches_bcc_offwaketime() {
    let mut s = sample(
        &["pthread_cond_wait", "main"],
        &["schedule", "futex_wait"],
        7_000,
    );
    s.sample.waker = Some(Waker {
        pid: 200,
        tid: 201,
        comm: "producer".into(),
        kernel_stack: RawStack::Frames(vec![0, 0]),
        user_stack: RawStack::Frames(vec![0, 0]),
    });
    s.waker_kernel = vec![f("try_to_wake_up"), f("futex_wake")];
    s.waker_user = vec![f("pthread_cond_signal"), f("produce")];
    assert_eq!(
        folded_lines(std::slice::from_ref(&s), &FoldedOptions::default()),
        ["worker;main;pthread_cond_wait;-;futex_wait;schedule;--;\
          try_to_wake_up;futex_wake;-;pthread_cond_signal;produce;producer 7"]
    );
    // A waker whose user stack was lost, with the wait leaf in front of `--`.
    s.sample.waker.as_mut().unwrap().user_stack = RawStack::Missed;
    // A futex wait whose syscall number (and so its op) was not recorded.
    s.sample.call = Some(SyscallCall {
        kind: WaitKind::Futex,
        nr: 0,
        resource: 0x10,
        detail: 0,
        timeout: 0,
    });
    let opts = FoldedOptions {
        wait_leaf: true,
        ..FoldedOptions::default()
    };
    assert_eq!(
        folded_lines(&[s], &opts),
        [
            "worker;main;pthread_cond_wait;-;futex_wait;schedule;[futex];[uaddr=0x10];--;\
          try_to_wake_up;futex_wake;-;[missed user stack];producer 7"
        ]
    );
}

/// Check that `;` and newlines in comms and names never split frames.
#[test]
fn semicolons_in_names_are_sanitized() {
    let mut s = sample(&["operator;()", "main"], &["schedule"], 1000);
    s.sample.comm = "we;ird\n".into();
    s.process_name = "a;b".into();
    let opts = FoldedOptions {
        process_root: true,
        ..FoldedOptions::default()
    };
    assert_eq!(
        folded_lines(&[s], &opts),
        ["a:b (100);we:ird ;main;operator:();-;schedule 1"]
    );
}

/// Check that source lines and inlined markers reach the folded frames.
#[test]
fn source_lines_and_inlined_frames() {
    let mut s = sample(&[], &[], 1000);
    s.sample.kernel_stack = RawStack::None;
    s.user = vec![
        Frame {
            name: Some("lock_slow".into()),
            file: Some("/src/mutex.rs".into()),
            line: Some(7),
            inlined: true,
            ..Frame::default()
        },
        Frame {
            name: Some("main".into()),
            file: Some("/src/main.rs".into()),
            line: Some(3),
            ..Frame::default()
        },
        Frame {
            module: Some("/lib/libc.so.6".into()),
            offset: 0x29d90,
            ..Frame::default()
        },
    ];
    s.sample.user_stack = RawStack::Frames(vec![0; 3]);
    let opts = FoldedOptions {
        source_lines: true,
        ..FoldedOptions::default()
    };
    assert_eq!(
        folded_lines(&[s], &opts),
        ["worker;libc.so.6+0x29d90;main [main.rs:3];lock_slow (inlined) [mutex.rs:7];- 1"]
    );
}

/// Check that write_folded writes one line per entry.
#[test]
fn write_folded_terminates_lines() {
    let mut out = Vec::new();
    write_folded(&["a;b 1".into(), "c 2".into()], &mut out).unwrap();
    assert_eq!(out, b"a;b 1\nc 2\n");
}

/// Check the folded output of a mixed capture against the golden file
/// (`UPDATE_GOLDEN=1` rewrites it).
#[test]
fn folded_output_matches_golden_file() {
    let mut runnable = sample(&["sched_yield", "main"], &["schedule"], 250_000);
    runnable.sample.state = Some(ThreadState::Runnable);
    let mut kthread = sample(&[], &["schedule", "worker_thread", "kthread"], 9_999_500);
    kthread.sample.user_stack = RawStack::None;
    kthread.sample.pid = 7;
    kthread.sample.comm = "kworker/u8:2".into();
    kthread.process_name = "kworker/u8:2".into();
    let mut epoll = sample(
        &["epoll_wait", "event_loop", "main"],
        &["schedule"],
        1_234_567,
    );
    epoll.sample.call = Some(SyscallCall {
        kind: WaitKind::Epoll,
        nr: 232,
        resource: 5,
        detail: 0,
        timeout: 0,
    });
    let samples = [futex_sample(), runnable, kthread, epoll];
    let opts = FoldedOptions {
        process_root: true,
        wait_leaf: true,
        ..FoldedOptions::default()
    };
    let mut out = Vec::new();
    write_folded(&folded_lines(&samples, &opts), &mut out).unwrap();
    let got = String::from_utf8(out).unwrap();
    crate::golden::assert_golden("offcpu.folded", &got);
}

/// Check that a named frame folds to its name, with inline and source-line decorations.
#[test]
fn folded_name_of_named_frame_has_inline_and_line_suffixes() {
    let f = Frame {
        addr: 0x1000,
        name: Some("std::sync::Mutex<T>::lock".into()),
        module: Some("/usr/bin/app".into()),
        offset: 4,
        file: Some("/src/lib/mutex.rs".into()),
        line: Some(42),
        inlined: true,
        kind: FrameKind::Native,
    };
    assert_eq!(frame_name(&f, false), "std::sync::Mutex<T>::lock (inlined)");
    assert_eq!(
        frame_name(&f, true),
        "std::sync::Mutex<T>::lock (inlined) [mutex.rs:42]"
    );
}

/// Check that unnamed frames fold to module+offset, or to the address without a module.
#[test]
fn folded_name_of_unknown_frame_is_module_offset_or_address() {
    let f = Frame {
        addr: 0x7f00_0000_1234,
        module: Some("/usr/lib/libfoo.so.1".into()),
        offset: 0x1234,
        ..Frame::default()
    };
    assert_eq!(frame_name(&f, true), "libfoo.so.1+0x1234");
    let f = Frame {
        addr: 0xdead,
        ..Frame::default()
    };
    assert_eq!(frame_name(&f, false), "[unknown 0xdead]");
}

/// Check that `;` and line breaks never reach a folded frame.
#[test]
fn folded_name_replaces_semicolons_and_newlines() {
    let f = Frame {
        name: Some("a;b\nc".into()),
        ..Frame::default()
    };
    assert_eq!(frame_name(&f, false), "a:b c");
}

/// Check that an interpreted frame folds to `function (file:line)` with the file's base name,
/// with or without `source_lines`, and to its bare name without a file.
#[test]
fn folded_name_of_interpreted_frame_has_file_and_line() {
    let python = FrameKind::Interpreted {
        runtime: "cpython".into(),
    };
    let f = Frame {
        file: Some("/srv/app/worker.py".into()),
        line: Some(17),
        ..Frame::named("Worker.wait_for_job", python.clone())
    };
    assert_eq!(frame_name(&f, false), "Worker.wait_for_job (worker.py:17)");
    assert_eq!(frame_name(&f, true), "Worker.wait_for_job (worker.py:17)");
    let no_line = Frame { line: None, ..f };
    assert_eq!(
        frame_name(&no_line, false),
        "Worker.wait_for_job (worker.py)"
    );
    assert_eq!(
        frame_name(&Frame::named("[python 0x10]", python), false),
        "[python 0x10]"
    );
}
