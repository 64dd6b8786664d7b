//! Tests of the unwinder against real blocked threads: one of this test process, and a
//! C program built with frame pointers that blocks in glibc (which has none).

use std::io::Write;
use std::os::fd::RawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::model::StackCopy;
use crate::symbolize::Symbolizer;

const MAX_FRAMES: usize = 64;

/// ip and sp of a thread blocked in a syscall, from `/proc/PID/task/TID/syscall`
/// (`nr arg1..arg6 sp pc` in hex), once it is in syscall `nr`.
fn blocked_regs(pid: u32, tid: u32, nr: u64) -> UserRegs {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&path).expect("read syscall file");
        let fields: Vec<&str> = text.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        if fields.len() == 9 && fields[0].parse::<u64>().ok() == Some(nr) {
            return UserRegs {
                ip: hex(fields[8]).expect("pc"),
                sp: hex(fields[7]).expect("sp"),
                bp: None,
            };
        }
        assert!(Instant::now() < deadline, "never blocked in {nr}: {text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Symbolized function names of `addrs` (unknown frames as "?").
fn names(pid: u32, addrs: &[u64]) -> Vec<String> {
    Symbolizer::new()
        .user(&mut Procs::new(), pid, addrs)
        .into_iter()
        .map(|f| f.name.unwrap_or_else(|| "?".into()))
        .collect()
}

/// Index of the first name containing `needle`, after `from`.
fn position(names: &[String], needle: &str, from: usize) -> Option<usize> {
    names[from..]
        .iter()
        .position(|n| n.contains(needle))
        .map(|i| i + from)
}

/// Asserts that `needles` appear in `names` in this order.
fn assert_in_order(names: &[String], needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        let Some(i) = position(names, needle, from) else {
            panic!("{needle} missing after frame {from} in {names:#?}");
        };
        from = i + 1;
    }
}

#[inline(never)]
fn unwind_test_inner(fd: RawFd) -> isize {
    let mut byte = [0u8; 1];
    // SAFETY: reads one byte into a live one-byte buffer.
    let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
    std::hint::black_box(&byte);
    std::hint::black_box(n)
}

#[inline(never)]
fn unwind_test_middle(fd: RawFd) -> isize {
    let n = unwind_test_inner(std::hint::black_box(fd));
    std::hint::black_box(n)
}

#[inline(never)]
fn unwind_test_outer(fd: RawFd) -> isize {
    let n = unwind_test_middle(std::hint::black_box(fd));
    std::hint::black_box(n)
}

/// A pipe as (read end, write end).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// A thread of this process blocked in read(2) under three Rust frames unwinds, without
/// rbp, through libc's read into those frames, innermost first.
#[test]
fn unwinds_own_thread_blocked_in_read() {
    let (read_fd, write_fd) = pipe();
    let (tid_tx, tid_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
        unwind_test_outer(read_fd)
    });
    let pid = std::process::id();
    let tid = tid_rx.recv().unwrap();
    let regs = blocked_regs(pid, tid, libc::SYS_read as u64);
    let result = Unwinder::default().unwind(&mut Procs::new(), pid, regs, MAX_FRAMES);
    // SAFETY: writes one byte from a live buffer, then closes fds this test owns.
    unsafe {
        libc::write(write_fd, b"x".as_ptr().cast(), 1);
    }
    assert_eq!(reader.join().unwrap(), 1);
    // SAFETY: both fds are owned by this test and no longer used.
    unsafe {
        libc::close(read_fd);
        libc::close(write_fd);
    }
    let addrs = result.expect("unwind");
    assert_eq!(addrs[0], regs.ip);
    let names = names(pid, &addrs);
    let inner = position(&names, "unwind_test_inner", 0).expect("inner frame");
    assert!(
        inner > 0,
        "libc's read should be below our frames: {names:#?}"
    );
    assert_in_order(
        &names,
        &[
            "unwind_test_inner",
            "unwind_test_middle",
            "unwind_test_outer",
        ],
    );
}

const C_PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
volatile int sink;

__attribute__((noinline)) void caller_of_lock(pthread_mutex_t *m) {
    pthread_mutex_lock(m);
    sink++;
}

__attribute__((noinline)) void middle_of_lock(pthread_mutex_t *m) {
    caller_of_lock(m);
    sink++;
}

__attribute__((noinline)) void outer_of_lock(pthread_mutex_t *m) {
    middle_of_lock(m);
    sink++;
}

int main(void) {
    pthread_mutex_lock(&lock);
    puts("locked");
    fflush(stdout);
    outer_of_lock(&lock); /* relocking a normal mutex blocks forever */
    return sink;
}
"#;

/// Builds [`C_PROGRAM`] with frame pointers and starts it.
fn spawn_c_program(dir: &std::path::Path) -> Child {
    let source = dir.join("lock.c");
    let binary = dir.join("lock");
    std::fs::File::create(&source)
        .and_then(|mut f| f.write_all(C_PROGRAM.as_bytes()))
        .expect("write C source");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed");
    Command::new(&binary)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start C program")
}

/// A C program built with frame pointers, blocked in glibc's lock wait (no frame pointers,
/// rsp-based CFI), unwinds without rbp back into its own frames via the frame-record scan.
#[test]
fn recovers_frame_pointer_callers_of_glibc_without_rbp() {
    let dir = std::env::temp_dir().join(format!("unwind-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = spawn_c_program(&dir);
    let pid = child.id();
    let regs = blocked_regs(pid, pid, libc::SYS_futex as u64);
    let result = Unwinder::default().unwind(&mut Procs::new(), pid, regs, MAX_FRAMES);
    let names = result.as_deref().map(|addrs| names(pid, addrs));
    child.kill().expect("kill C program");
    child.wait().expect("reap C program");
    std::fs::remove_dir_all(&dir).ok();
    let names = names.expect("unwind");
    assert_in_order(
        &names,
        &["caller_of_lock", "middle_of_lock", "outer_of_lock", "main"],
    );
}

/// A pid that does not exist is an error, not a panic or an empty stack.
#[test]
fn bogus_pid_is_an_error() {
    let regs = UserRegs {
        ip: 0x1000,
        sp: 0x2000,
        bp: None,
    };
    let err = Unwinder::default()
        .unwind(&mut Procs::new(), 0x7fff_fff0, regs, MAX_FRAMES)
        .unwrap_err();
    assert!(matches!(err, UnwindError::ProcessGone { .. }), "{err:?}");
}

/// Garbage stack pointers (unmapped, past user space, into zeroed memory) give a short
/// stack, never a panic or a long walk.
#[test]
fn garbage_sp_gives_short_stack() {
    let pid = std::process::id();
    let ip = unwind_test_inner as *const () as usize as u64;
    let zeros = vec![0u64; 16 * 1024];
    let zeros_sp = zeros.as_ptr() as u64;
    let mut unwinder = Unwinder::default();
    let mut procs = Procs::new();
    for sp in [0, 8, 0x1000, u64::MAX - 7, u64::MAX, 1 << 63, zeros_sp] {
        for bp in [None, Some(0), Some(sp), Some(u64::MAX)] {
            let addrs = unwinder
                .unwind(&mut procs, pid, UserRegs { ip, sp, bp }, MAX_FRAMES)
                .expect("unwind of own process");
            assert_eq!(addrs.first(), Some(&ip));
            assert!(addrs.len() <= 2, "sp {sp:#x} bp {bp:?}: {addrs:x?}");
        }
    }
    assert!(
        unwinder
            .unwind(
                &mut procs,
                pid,
                UserRegs {
                    ip,
                    sp: 0,
                    bp: None
                },
                0
            )
            .unwrap()
            .is_empty()
    );
    unwinder.forget(pid);
}

/// The stack bytes of this process from `sp`'s page start, `len` of them, as BPF copies them.
fn copy_own_stack(sp: u64, len: usize) -> (u64, Vec<u8>) {
    use std::os::unix::fs::FileExt as _;
    let start = sp & !4095;
    let mut bytes = vec![0u8; len];
    let mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
    let mut done = 0;
    // A short read past the top of the stack just ends the copy, as in BPF.
    while done < len {
        match mem.read_at(&mut bytes[done..], start + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    bytes.truncate(done & !4095);
    (start, bytes)
}

/// A copy of a blocked thread's stack unwinds into its three Rust frames after the thread
/// has run on and exited (the walk reads the copy, not today's memory), and the same copy
/// zeroed gives no caller.
#[test]
fn unwinds_a_stack_copy_after_the_thread_moved_on() {
    let (read_fd, write_fd) = pipe();
    let (tid_tx, tid_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
        unwind_test_outer(read_fd)
    });
    let pid = std::process::id();
    let tid = tid_rx.recv().unwrap();
    let regs = blocked_regs(pid, tid, libc::SYS_read as u64);
    let (copy_start, bytes) = copy_own_stack(regs.sp, 16 * 1024);
    // SAFETY: writes one byte from a live buffer; the fds are this test's.
    unsafe {
        libc::write(write_fd, b"x".as_ptr().cast(), 1);
    }
    assert_eq!(reader.join().unwrap(), 1);
    // SAFETY: both fds are owned by this test and no longer used.
    unsafe {
        libc::close(read_fd);
        libc::close(write_fd);
    }
    assert!(!bytes.is_empty(), "no stack copied at {:#x}", regs.sp);
    let mut copy = StackCopy {
        site_id: tracer_common::SITE_ID_TAG | 1,
        pid,
        regs,
        frame_pointer_walk: crate::model::RawStack::None,
        copy_start,
        bytes,
    };
    let mut unwinder = Unwinder::default();
    let mut procs = Procs::new();
    let (addrs, reached_root) = unwinder
        .unwind_copy(&mut procs, &copy, MAX_FRAMES)
        .expect("unwind copy");
    assert_eq!(addrs[0], regs.ip);
    assert!(
        reached_root,
        "16 KiB hold this thread's stack up to clone3: {:#?}",
        names(pid, &addrs)
    );
    assert_in_order(
        &names(pid, &addrs),
        &[
            "unwind_test_inner",
            "unwind_test_middle",
            "unwind_test_outer",
        ],
    );
    copy.bytes.fill(0);
    let (zeroed, reached_root) = unwinder
        .unwind_copy(&mut procs, &copy, MAX_FRAMES)
        .expect("unwind zeroed copy");
    assert!(
        zeroed.len() <= 2 && !reached_root,
        "a zeroed copy unwound: {:?}",
        names(pid, &zeroed)
    );
}

/// A copy of a stack that is not this process's (a bogus pid) is an error, not a panic.
#[test]
fn stack_copy_of_a_gone_process_is_an_error() {
    let copy = StackCopy {
        site_id: tracer_common::SITE_ID_TAG | 2,
        pid: 0x7fff_fff0,
        regs: UserRegs {
            ip: 0x1000,
            sp: 0x2000,
            bp: Some(0),
        },
        frame_pointer_walk: crate::model::RawStack::None,
        copy_start: 0x2000,
        bytes: vec![0; 4096],
    };
    let err = Unwinder::default()
        .unwind_copy(&mut Procs::new(), &copy, MAX_FRAMES)
        .unwrap_err();
    assert!(matches!(err, UnwindError::ProcessGone { .. }), "{err:?}");
}
