//! rust_mutex_abba: a certain ABBA deadlock on `std::sync::Mutex`, for `stallwatch watch` tests.
//!
//! std's mutex is a bare futex word with no owner tid in it (unlike glibc's `pthread_mutex_t`),
//! so a tracer has to find the cycle from who took which lock, not from the lock word. The
//! mutexes hold `0u64` so no word near the lock looks like a thread id either.
//!
//! Thread `rust-a` takes A then B, `rust-b` takes B then A, with a barrier after the first locks;
//! main blocks forever joining `rust-a`. Output follows the C workloads' protocol
//! (`tests/workloads/watch_common.h`): `pid`, `tid <role>` for main, rust-a, rust-b and watchdog,
//! `lock A 0x..`, `lock B 0x..` (addresses of the `Mutex` objects, whose futex word comes
//! first), then `READY` once both threads sit in the futex syscall. Options: `--delay-ms N`,
//! `--timeout-s N` (a watchdog thread exits the process after N seconds, default 120).

use std::{
    env, fs,
    hint::black_box,
    process,
    sync::{Barrier, Mutex, MutexGuard, PoisonError, mpsc},
    thread::{self, JoinHandle},
    time::Duration,
};

static LOCK_A: Mutex<u64> = Mutex::new(0);
static LOCK_B: Mutex<u64> = Mutex::new(0);
/// main, rust-a and rust-b: after the delay.
static START: Barrier = Barrier::new(3);
/// main, rust-a and rust-b: both first locks taken.
static HELD: Barrier = Barrier::new(3);

/// `futex` on x86_64, what both deadlocked threads block in.
const SYS_FUTEX: i64 = 202;

fn lock(mutex: &'static Mutex<u64>) -> MutexGuard<'static, u64> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// Every lock sits in its own never-inlined function, and `black_box` after the call keeps the
// function a frame on the blocked stack (no tail call). Each also passes its own marker to
// `black_box`: otherwise `rust_take_b` and `rust_lock_b_while_holding_a` compile to identical
// code, and the release build folds them into one symbol.

#[inline(never)]
fn rust_take_a() -> MutexGuard<'static, u64> {
    let guard = lock(&LOCK_A);
    black_box(&guard);
    black_box(1u32);
    guard
}

#[inline(never)]
fn rust_take_b() -> MutexGuard<'static, u64> {
    let guard = lock(&LOCK_B);
    black_box(&guard);
    black_box(2u32);
    guard
}

#[inline(never)]
fn rust_lock_b_while_holding_a() -> MutexGuard<'static, u64> {
    let guard = lock(&LOCK_B);
    black_box(&guard);
    black_box(3u32);
    guard
}

#[inline(never)]
fn rust_lock_a_while_holding_b() -> MutexGuard<'static, u64> {
    let guard = lock(&LOCK_A);
    black_box(&guard);
    black_box(4u32);
    guard
}

#[inline(never)]
fn join_rust_a(handle: JoinHandle<()>) {
    let result = handle.join();
    black_box(&result);
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Syscall number `tid` (a thread of this process) is blocked in, if any.
fn task_syscall_nr(tid: i32) -> Option<i64> {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Waits (up to 5 s) until `tid` sits in syscall `nr`.
fn wait_in_syscall(tid: i32, nr: i64) {
    for _ in 0..500 {
        if task_syscall_nr(tid) == Some(nr) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("thread {tid} never entered syscall {nr}");
}

/// Starts a thread named `role` that reports its tid on `tids`, then runs `body`.
fn spawn_role(
    role: &'static str,
    tids: &mpsc::Sender<(&'static str, i32)>,
    body: fn(),
) -> JoinHandle<()> {
    let tids = tids.clone();
    thread::Builder::new()
        .name(role.to_owned())
        .spawn(move || {
            tids.send((role, gettid()))
                .expect("main is waiting for tids");
            body();
        })
        .unwrap_or_else(|e| panic!("spawning {role}: {e}"))
}

fn rust_a_main() {
    START.wait();
    let a = rust_take_a();
    HELD.wait();
    let b = rust_lock_b_while_holding_a();
    eprintln!("rust-a got B: no deadlock");
    drop((a, b));
}

fn rust_b_main() {
    START.wait();
    let b = rust_take_b();
    HELD.wait();
    let a = rust_lock_a_while_holding_b();
    eprintln!("rust-b got A: no deadlock");
    drop((b, a));
}

fn watchdog_main(timeout: Duration) {
    thread::sleep(timeout);
    eprintln!("rust_mutex_abba: safety timeout, exiting");
    process::exit(124);
}

/// `--delay-ms` and `--timeout-s`.
struct Options {
    delay: Duration,
    timeout: Duration,
}

fn parse_args() -> Options {
    let mut options = Options {
        delay: Duration::ZERO,
        timeout: Duration::from_secs(120),
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--delay-ms" => options.delay = Duration::from_millis(value()),
            "--timeout-s" => options.timeout = Duration::from_secs(value()),
            _ => panic!("unknown argument {arg}"),
        }
    }
    options
}

fn main() {
    let options = parse_args();
    let (tx, rx) = mpsc::channel();
    let timeout = options.timeout;
    thread::Builder::new()
        .name("watchdog".to_owned())
        .spawn({
            let tx = tx.clone();
            move || {
                tx.send(("watchdog", gettid())).expect("main is waiting");
                watchdog_main(timeout);
            }
        })
        .expect("spawning watchdog");
    let rust_a = spawn_role("rust-a", &tx, rust_a_main);
    let _rust_b = spawn_role("rust-b", &tx, rust_b_main);
    // The watchdog keeps its sender forever: take exactly one message per thread.
    let mut tids: Vec<(&str, i32)> = rx.iter().take(3).collect();
    tids.sort();

    println!("pid {}", process::id());
    println!("tid main {}", gettid());
    for (role, tid) in &tids {
        println!("tid {role} {tid}");
    }
    println!("lock A {:p}", &LOCK_A);
    println!("lock B {:p}", &LOCK_B);
    thread::sleep(options.delay);

    START.wait();
    HELD.wait();
    for (role, tid) in &tids {
        if role.starts_with("rust-") {
            wait_in_syscall(*tid, SYS_FUTEX);
        }
    }
    thread::sleep(Duration::from_millis(100));
    println!("READY");

    join_rust_a(rust_a);
}
