//! When did a sleeping thread go to sleep, on the `CLOCK_MONOTONIC` timescale?
//!
//! `watch` reports "blocked for 12.3 s" for waits that began before it attached, so it needs
//! the start of a wait that no trace event saw. `/proc/PID/task/TID/sched` has two candidates:
//!
//! - schedstats' `sleep_start` / `block_start`: set when the thread is dequeued to sleep,
//!   cleared on wakeup. Exact, but only printed when `kernel.sched_schedstats=1` (and the
//!   kernel has `CONFIG_SCHEDSTATS`); we never flip that sysctl ourselves. These are read
//!   from the run queue's `rq->clock` (`sched_clock_cpu()`), which is taken here to be
//!   `CLOCK_MONOTONIC` without correction; that could not be checked on the development
//!   machine, whose kernel has no schedstats.
//! - `se.exec_start`: when the thread was last accounted on a CPU, which for a thread that
//!   is asleep is the moment it went to sleep. Always there, but on the run queue's
//!   *task* clock, `rq->clock_task`.
//!
//! `rq->clock_task` is not `CLOCK_MONOTONIC`. It is per CPU and stops while the CPU
//! serves interrupts (with `CONFIG_IRQ_TIME_ACCOUNTING`) or while the hypervisor runs another
//! guest (steal time, with paravirt steal accounting). Measured on the development VM
//! (Firecracker, Linux 6.18, 2 vCPUs, uptime ~41 min): a thread that read `CLOCK_MONOTONIC`
//! and then blocked in `read()` showed `exec_start` 553 ms behind that reading on CPU 0 and
//! 775 ms behind on CPU 1, reproducible to within 0.2 ms over repeated runs, each matching
//! that CPU's steal time in `/proc/stat` (56 and 79 ticks: 560 and 790 ms), and growing as
//! steal accrued (553 -> 555 ms over a minute of builds; CPU 1 went from ~0.79 s to ~1.05 s
//! within minutes once three CPU hogs ran on the two vCPUs, again equal to its steal time).
//! So the offset is per CPU, grows with the machine's uptime, can jump quickly on a
//! contended host, and is far too large to ignore (on a busy VM it reaches minutes).
//!
//! Correction: [`SchedClockCalibration`] measures each CPU's offset the same way the
//! experiment did: a helper thread pinned to that CPU reads `CLOCK_MONOTONIC`, blocks in
//! `read()` on a pipe, and its own `exec_start` is compared with that reading (best of three,
//! since any delay between the reading and the block only makes the offset look smaller).
//! A thread's `exec_start` plus the offset of the CPU it last ran on (`stat` field 39) is its
//! sleep start in `CLOCK_MONOTONIC`. The remaining error is the steal/IRQ time that CPU
//! accrued between the thread falling asleep and the calibration, which makes the estimate
//! slightly late (the wait looks shorter than it is), never early; for long waits on a
//! contended VM that can add up (steal running at 10% makes a 10 s wait look ~1 s shorter).
//! Offsets are re-measured when older than [`SchedClockCalibration::DEFAULT_MAX_AGE`]. In the
//! tests, a thread blocked for ~0.1 s was dated within 2-16 µs of its own `CLOCK_MONOTONIC`
//! reading, idle or with CPU hogs running, against ~0.8-1.05 s off uncorrected.
//!
//! Pinning needs the CPU to be in our affinity mask (a container's cpuset may exclude it);
//! where it is not, the uncorrected `exec_start` is returned as [`Exactness::LastRan`].

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Write},
    os::fd::{FromRawFd, OwnedFd},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use super::{InspectError, threads::ProcThread};
use crate::clock::monotonic_ns;

/// How [`blocked_since_ns`] got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exactness {
    /// From schedstats `sleep_start`/`block_start`: the moment of the dequeue.
    SleepStart,
    /// From `se.exec_start` plus the measured offset of the thread's CPU: at most that CPU's
    /// steal/IRQ time since the thread fell asleep too late (typically well under 1%).
    LastRanCalibrated,
    /// From `se.exec_start` alone (no offset measurable for its CPU): too early by that
    /// CPU's accumulated steal/IRQ time, which can be seconds or more.
    LastRan,
}

/// Per-CPU offsets `CLOCK_MONOTONIC - rq->clock_task`, measured on demand and cached.
#[derive(Debug)]
pub(crate) struct SchedClockCalibration {
    max_age: Duration,
    /// CPU -> (when measured, offset ns or None if it could not be measured).
    offsets: HashMap<u32, (Instant, Option<i64>)>,
}

impl Default for SchedClockCalibration {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_AGE)
    }
}

impl SchedClockCalibration {
    /// How long a measured offset is reused. Offsets grow with steal/IRQ time, i.e. by at
    /// most this much times the CPU's steal fraction between measurements.
    pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);

    /// An empty calibration whose offsets are re-measured when older than `max_age`.
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            offsets: HashMap::new(),
        }
    }

    /// The offset (`CLOCK_MONOTONIC - rq->clock_task`, ns) of `cpu`, measuring it if it is
    /// not cached or too old (a few ms). `None` if it cannot be measured (CPU outside our
    /// affinity mask or offline, no `/proc/thread-self/sched`).
    pub(crate) fn offset_ns(&mut self, cpu: u32) -> Option<i64> {
        if let Some(&(at, offset)) = self.offsets.get(&cpu)
            && at.elapsed() < self.max_age
        {
            return offset;
        }
        let offset = measure_cpu_offset_ns(cpu).ok();
        self.offsets.insert(cpu, (Instant::now(), offset));
        offset
    }
}

/// Process-wide calibration used by [`blocked_since_ns`].
static SHARED_CALIBRATION: LazyLock<Mutex<SchedClockCalibration>> =
    LazyLock::new(|| Mutex::new(SchedClockCalibration::default()));

/// Best estimate of when `thread` went to sleep, in `CLOCK_MONOTONIC` ns, with how it was
/// obtained. `None` for a thread that is running or runnable (`R`), dead, or whose `sched`
/// file was unreadable. Uses a process-wide [`SchedClockCalibration`].
pub(crate) fn blocked_since_ns(thread: &ProcThread) -> Option<(u64, Exactness)> {
    let mut calibration = SHARED_CALIBRATION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    blocked_since_ns_with(thread, &mut calibration)
}

/// [`blocked_since_ns`] with a caller-owned calibration.
pub(crate) fn blocked_since_ns_with(
    thread: &ProcThread,
    calibration: &mut SchedClockCalibration,
) -> Option<(u64, Exactness)> {
    if matches!(thread.state, 'R' | 'X' | 'x' | 'Z') {
        return None;
    }
    if let Some(start) = thread.sleep_start_ns {
        return Some((start, Exactness::SleepStart));
    }
    let last_ran = thread.last_ran_ns?;
    match thread.cpu.and_then(|cpu| calibration.offset_ns(cpu)) {
        Some(offset) => Some((
            last_ran.saturating_add_signed(offset),
            Exactness::LastRanCalibrated,
        )),
        None => Some((last_ran, Exactness::LastRan)),
    }
}

/// Measures `CLOCK_MONOTONIC - rq->clock_task` on `cpu` (see the module docs): best of three
/// block-and-compare rounds of a helper thread pinned to `cpu`.
pub(crate) fn measure_cpu_offset_ns(cpu: u32) -> Result<i64, InspectError> {
    const ROUNDS: usize = 3;
    let (read_end, write_end) = pipe()?;
    let mut write_end = File::from(write_end);
    let before_block_ns = Arc::new(AtomicU64::new(0));
    let (tid_tx, tid_rx) = mpsc::channel::<Result<i32, std::io::Error>>();

    let helper_before_block = Arc::clone(&before_block_ns);
    let helper = thread::Builder::new()
        .name("sw-clock-cal".into())
        .spawn(move || {
            if let Err(e) = pin_to_cpu(cpu) {
                let _ = tid_tx.send(Err(e));
                return;
            }
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(Ok(unsafe { libc::gettid() }));
            let mut read_end = File::from(read_end);
            let mut byte = [0u8; 1];
            for _ in 0..ROUNDS {
                helper_before_block.store(monotonic_ns(), Ordering::SeqCst);
                if read_end.read_exact(&mut byte).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| InspectError::io("/proc/thread-self", e))?;

    let result = (|| {
        let tid = match tid_rx.recv() {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => return Err(InspectError::io("sched_setaffinity", e)),
            Err(_) => {
                return Err(InspectError::Malformed {
                    path: "/proc/thread-self".into(),
                    what: "calibration thread ended early",
                });
            }
        };
        let dir = format!("/proc/self/task/{tid}");
        let mut best: Option<i64> = None;
        for _ in 0..ROUNDS {
            wait_until_asleep(&dir)?;
            let sched = super::read_text(&format!("{dir}/sched"))?;
            let exec_start = super::threads::parse_sched(&sched).exec_start_ns.ok_or(
                InspectError::Malformed {
                    path: format!("{dir}/sched").into(),
                    what: "se.exec_start",
                },
            )?;
            let before = before_block_ns.load(Ordering::SeqCst);
            let offset = before as i64 - exec_start as i64;
            best = Some(best.map_or(offset, |b| b.max(offset)));
            write_end
                .write_all(&[1])
                .map_err(|e| InspectError::io("pipe", e))?;
        }
        best.ok_or(InspectError::Malformed {
            path: dir.into(),
            what: "no calibration round",
        })
    })();
    // Unblocks the helper if we bailed out early (its reads see EOF).
    drop(write_end);
    let _ = helper.join();
    result
}

/// Waits (up to 1 s) until thread `dir` sleeps, then a little more so that its dequeue (which
/// sets `exec_start`) has certainly finished after the state changed.
fn wait_until_asleep(dir: &str) -> Result<(), InspectError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let stat = super::read_text(&format!("{dir}/stat"))?;
        let state = super::threads::parse_state(&stat);
        if state == Some('S') {
            thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(InspectError::Malformed {
                path: format!("{dir}/stat").into(),
                what: "calibration thread never went to sleep",
            });
        }
        thread::sleep(Duration::from_micros(100));
    }
}

fn pin_to_cpu(cpu: u32) -> std::io::Result<()> {
    let cpu = cpu as usize;
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu is within the set's bounds (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed; 0 = the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), InspectError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(InspectError::io("pipe2", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::threads::ProcSyscall;

    fn thread_with(state: char, cpu: Option<u32>, last_ran: Option<u64>) -> ProcThread {
        ProcThread {
            pid: 1,
            tid: 1,
            comm: "x".into(),
            state,
            cpu,
            syscall: ProcSyscall::Unknown,
            wchan: None,
            kernel_stack: Vec::new(),
            last_ran_ns: last_ran,
            sleep_start_ns: None,
            run_count: None,
            cpu_time_ns: None,
            kernel_thread: false,
        }
    }

    #[test]
    fn running_threads_have_no_sleep_start() {
        let mut cal = SchedClockCalibration::default();
        assert_eq!(
            blocked_since_ns_with(&thread_with('R', Some(0), Some(5)), &mut cal),
            None
        );
    }

    #[test]
    fn schedstats_win_and_unknown_cpu_falls_back_to_raw() {
        let mut cal = SchedClockCalibration::default();
        let mut t = thread_with('S', None, Some(5));
        assert_eq!(
            blocked_since_ns_with(&t, &mut cal),
            Some((5, Exactness::LastRan))
        );
        t.sleep_start_ns = Some(7);
        assert_eq!(
            blocked_since_ns_with(&t, &mut cal),
            Some((7, Exactness::SleepStart))
        );
    }

    #[test]
    fn offsets_are_measured_and_stable() {
        let mut cal = SchedClockCalibration::new(Duration::ZERO);
        let a = cal.offset_ns(0).expect("CPU 0 offset");
        let b = cal.offset_ns(0).expect("CPU 0 offset");
        eprintln!("CPU 0: CLOCK_MONOTONIC - rq->clock_task = {a} ns, then {b} ns");
        // Two measurements a few ms apart differ by the steal/IRQ time in between plus
        // scheduling noise: far below a millisecond on an idle machine, allow 5 ms.
        assert!((a - b).abs() < 5_000_000, "{a} vs {b}");
        assert!(a >= -1_000_000, "task clock ahead of CLOCK_MONOTONIC: {a}");
        assert_eq!(cal.offset_ns(u32::MAX - 1), None);
    }
}
