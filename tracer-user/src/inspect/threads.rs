//! Which threads exist and what one of them is doing, from `/proc/PID/task/TID/`.
//!
//! A stuck thread is recognised from the outside by its state (`S`/`D` in `stat`), the
//! syscall it sits in with its arguments (`syscall`: the fd of a blocked `read`, the futex
//! address of a lock wait), and the kernel function it sleeps in (`wchan`, and `stack` for
//! root). `sched` and `schedstat` tell when it last ran and how many times it has run, which
//! is how `watch` dates a wait that started before it attached and checks later that it is
//! still the same wait (the run count has not moved).
//!
//! `stat` is parsed by `procfs`; the other files are small formats parsed here by pure
//! functions ([`parse_syscall`], [`parse_stack`], [`parse_sched`], [`parse_schedstat`]).

use procfs::FromRead;

use super::{InspectError, read_text_optional};

/// All processes (thread-group ids) visible in `/proc`, in directory order. Processes that
/// vanish while listing are left out; an unreadable `/proc` gives an empty list.
pub(crate) fn list_pids() -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    processes
        .filter_map(|p| p.ok())
        .filter_map(|p| u32::try_from(p.pid).ok())
        .collect()
}

/// The thread ids of process `pid` (including `pid` itself, the main thread).
pub(crate) fn list_tids(pid: u32) -> Result<Vec<u32>, InspectError> {
    let path = format!("/proc/{pid}/task");
    let process =
        procfs::process::Process::new(pid as i32).map_err(|e| InspectError::procfs(&path, e))?;
    let tasks = process
        .tasks()
        .map_err(|e| InspectError::procfs(&path, e))?;
    Ok(tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| u32::try_from(t.tid).ok())
        .collect())
}

/// The syscall a thread is in, from `/proc/PID/task/TID/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcSyscall {
    /// The thread was on a CPU when sampled (the file says `running`).
    Running,
    /// Blocked, but not inside a syscall (e.g. stopped by a signal, or a page fault); the
    /// file says `-1 SP PC`.
    NotInSyscall {
        /// User stack pointer.
        sp: u64,
        /// User program counter.
        pc: u64,
    },
    /// Blocked inside syscall `nr` (the architecture's number, e.g. 0 = `read` on x86_64).
    InSyscall {
        /// Syscall number.
        nr: u32,
        /// The six argument registers, whether or not the syscall uses them.
        args: [u64; 6],
        /// User stack pointer.
        sp: u64,
        /// User program counter.
        pc: u64,
    },
    /// Unreadable (another user's thread without `CAP_SYS_PTRACE`) or not understood.
    Unknown,
}

/// One frame of a kernel stack from `/proc/PID/task/TID/stack`, e.g.
/// `[<0>] futex_wait_queue+0x5e/0x90` (the address is hidden from everyone; the name is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelFrameName {
    /// Kernel function.
    pub name: String,
    /// Offset of the return address into the function, bytes.
    pub offset: u64,
    /// Size of the function, bytes.
    pub size: u64,
}

/// A snapshot of one thread, read without tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcThread {
    /// Process (thread group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name (`comm`).
    pub comm: String,
    /// Scheduler state, `stat` field 3: `R` running/runnable, `S` interruptible sleep, `D`
    /// uninterruptible sleep, `I` idle kernel thread, `T`/`t` stopped/traced, `Z` zombie.
    pub state: char,
    /// The CPU the thread last ran on (`stat` field 39). The scheduler clock of
    /// [`ProcThread::last_ran_ns`] is that CPU's; see [`super::schedclock`].
    pub cpu: Option<u32>,
    /// The syscall it is blocked in.
    pub syscall: ProcSyscall,
    /// The kernel function it sleeps in, if the kernel tells (`None` for `0` or unreadable).
    pub wchan: Option<String>,
    /// Kernel stack, innermost frame first; empty if unreadable (needs root).
    pub kernel_stack: Vec<KernelFrameName>,
    /// `se.exec_start` from `sched`, in ns of the scheduler's per-CPU task clock: when the
    /// thread was last on a CPU (for a sleeping thread: when it went to sleep). Not
    /// `CLOCK_MONOTONIC`; use [`super::blocked_since_ns`].
    pub last_ran_ns: Option<u64>,
    /// When the current sleep began, in ns of the scheduler's `rq->clock`: schedstats'
    /// `sleep_start` (interruptible) or `block_start` (uninterruptible), whichever is
    /// nonzero. Only present with `kernel.sched_schedstats=1`.
    pub sleep_start_ns: Option<u64>,
    /// How many times the thread has been put on a CPU (third field of `schedstat`; falls
    /// back to `nr_switches` from `sched` when schedstat says `0 0 0`). Unchanged between two
    /// reads means the thread has not run in between.
    pub run_count: Option<u64>,
    /// CPU time consumed so far, ns (first field of `schedstat`).
    pub cpu_time_ns: Option<u64>,
    /// A kernel thread (`PF_KTHREAD` in `stat`'s flags): it has no user side, and its
    /// `syscall` file reads as syscall 0 with zero arguments.
    pub kernel_thread: bool,
}

/// `PF_KTHREAD` (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// Reads one thread of process `pid`. Fails with [`InspectError::Gone`] if it has exited (or
/// `tid` is not a thread of `pid`); files other than `stat` that cannot be read only leave
/// their fields empty.
pub(crate) fn read_thread(pid: u32, tid: u32) -> Result<ProcThread, InspectError> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let stat_path = format!("{dir}/stat");
    let stat = procfs::process::Stat::from_file(&stat_path)
        .map_err(|e| InspectError::procfs(&stat_path, e))?;

    let syscall = read_text_optional(&format!("{dir}/syscall"), &dir)?
        .map_or(ProcSyscall::Unknown, |text| parse_syscall(&text));
    let wchan = read_text_optional(&format!("{dir}/wchan"), &dir)?.and_then(|t| parse_wchan(&t));
    let kernel_stack = read_text_optional(&format!("{dir}/stack"), &dir)?
        .map(|t| parse_stack(&t))
        .unwrap_or_default();
    let sched = read_text_optional(&format!("{dir}/sched"), &dir)?
        .map(|t| parse_sched(&t))
        .unwrap_or_default();
    let schedstat = read_text_optional(&format!("{dir}/schedstat"), &dir)?
        .and_then(|t| parse_schedstat(&t))
        // All zero: the kernel keeps no sched_info (it prints "0 0 0").
        .filter(|s| *s != SchedStat::default());

    Ok(ProcThread {
        pid,
        tid,
        comm: stat.comm,
        state: stat.state,
        cpu: stat.processor.and_then(|c| u32::try_from(c).ok()),
        syscall,
        wchan,
        kernel_stack,
        last_ran_ns: sched.exec_start_ns,
        sleep_start_ns: sched.sleep_start_ns.or(sched.block_start_ns),
        run_count: schedstat.map(|s| s.run_count).or(sched.nr_switches),
        cpu_time_ns: schedstat.map(|s| s.cpu_time_ns),
        kernel_thread: stat.flags & PF_KTHREAD != 0,
    })
}

/// The scheduler state letter of one thread (`stat` field 3), or `None` if it is gone. One
/// small read, for checks repeated every scan.
pub(crate) fn read_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_state(&stat)
}

/// The state letter in a `stat` line: the first field after the parenthesised comm, which
/// may itself contain spaces and parentheses.
pub(crate) fn parse_state(stat: &str) -> Option<char> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.trim_start().chars().next()
}

/// Parses `/proc/PID/task/TID/syscall`: `running`, `-1 SP PC`, or
/// `NR ARG1 .. ARG6 SP PC` (NR decimal, the rest `0x` hex).
pub(crate) fn parse_syscall(text: &str) -> ProcSyscall {
    let text = text.trim();
    if text == "running" {
        return ProcSyscall::Running;
    }
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let Some(nr) = fields.first().and_then(|s| s.parse::<i64>().ok()) else {
        return ProcSyscall::Unknown;
    };
    match (nr, fields.len()) {
        (-1, 3) => match (hex(fields[1]), hex(fields[2])) {
            (Some(sp), Some(pc)) => ProcSyscall::NotInSyscall { sp, pc },
            _ => ProcSyscall::Unknown,
        },
        (nr, 9) if nr >= 0 => {
            let values: Option<Vec<u64>> = fields[1..].iter().map(|s| hex(s)).collect();
            let (Some(values), Ok(nr)) = (values, u32::try_from(nr)) else {
                return ProcSyscall::Unknown;
            };
            let mut args = [0; 6];
            args.copy_from_slice(&values[..6]);
            ProcSyscall::InSyscall {
                nr,
                args,
                sp: values[6],
                pc: values[7],
            }
        }
        _ => ProcSyscall::Unknown,
    }
}

/// Parses `/proc/PID/task/TID/wchan`: a function name, or `0`/empty for none.
pub(crate) fn parse_wchan(text: &str) -> Option<String> {
    let name = text.trim();
    (!name.is_empty() && name != "0").then(|| name.to_string())
}

/// Parses `/proc/PID/task/TID/stack` lines like `[<0>] pipe_read+0x2e5/0x3f0` (a module
/// suffix such as ` [nfs]` is dropped). Lines that do not parse are skipped.
pub(crate) fn parse_stack(text: &str) -> Vec<KernelFrameName> {
    text.lines().filter_map(parse_stack_line).collect()
}

fn parse_stack_line(line: &str) -> Option<KernelFrameName> {
    let rest = line.trim_start();
    // "[<addr>] " prefix; the address is zeroed for everyone since Linux 4.19.
    let rest = rest.strip_prefix("[<")?;
    let rest = rest[rest.find(">]")? + 2..].trim_start();
    let symbol = rest.split_ascii_whitespace().next()?;
    let (name, offsets) = symbol.rsplit_once('+')?;
    let (offset, size) = offsets.split_once('/')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    Some(KernelFrameName {
        name: name.to_string(),
        offset: hex(offset)?,
        size: hex(size)?,
    })
}

/// The fields of `/proc/PID/task/TID/sched` that inspection uses, converted to ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedFields {
    /// `se.exec_start`: scheduler task clock when the thread was last accounted on a CPU.
    pub exec_start_ns: Option<u64>,
    /// Schedstats `sleep_start` (nonzero only while in an interruptible sleep).
    pub sleep_start_ns: Option<u64>,
    /// Schedstats `block_start` (nonzero only while in an uninterruptible sleep).
    pub block_start_ns: Option<u64>,
    /// `nr_switches`: voluntary plus involuntary context switches.
    pub nr_switches: Option<u64>,
}

/// Parses `/proc/PID/task/TID/sched` (`key : value` lines; times are printed in ms with six
/// decimals). Schedstat values only appear with `kernel.sched_schedstats=1`; a zero
/// `sleep_start`/`block_start` means "not in such a sleep" and becomes `None`. Their key is
/// `sleep_start` on current kernels and `se.statistics.sleep_start` on older ones.
pub(crate) fn parse_sched(text: &str) -> SchedFields {
    let mut fields = SchedFields::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let last = key.rsplit('.').next().unwrap_or(key);
        match (key, last) {
            ("se.exec_start", _) => fields.exec_start_ns = parse_ms_as_ns(value),
            (_, "sleep_start") => fields.sleep_start_ns = parse_ms_as_ns(value).filter(|&v| v != 0),
            (_, "block_start") => fields.block_start_ns = parse_ms_as_ns(value).filter(|&v| v != 0),
            ("nr_switches", _) => fields.nr_switches = value.parse().ok(),
            _ => {}
        }
    }
    fields
}

/// `"2443136.704153"` (ms, up to 9 decimals) -> ns. Negative or malformed -> `None`.
fn parse_ms_as_ns(value: &str) -> Option<u64> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = int.parse().ok()?;
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(6 - frac.len() as u32)
    };
    ms.checked_mul(1_000_000)?.checked_add(frac_ns)
}

/// `/proc/PID/task/TID/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedStat {
    /// Time spent on a CPU, ns.
    pub cpu_time_ns: u64,
    /// Time spent runnable but waiting on a run queue, ns.
    pub run_delay_ns: u64,
    /// Number of times the thread was put on a CPU.
    pub run_count: u64,
}

/// Parses `/proc/PID/task/TID/schedstat`: three decimal numbers.
pub(crate) fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut fields = text.split_ascii_whitespace().map(|s| s.parse::<u64>().ok());
    Some(SchedStat {
        cpu_time_ns: fields.next()??,
        run_delay_ns: fields.next()??,
        run_count: fields.next()??,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall("running\n"), ProcSyscall::Running);
        assert_eq!(
            parse_syscall("-1 0x7ffd3c2a1b28 0x7f1e2d3c4b5a\n"),
            ProcSyscall::NotInSyscall {
                sp: 0x7ffd3c2a1b28,
                pc: 0x7f1e2d3c4b5a
            }
        );
        assert_eq!(
            parse_syscall("202 0x55d0c0a0 0x80 0x2 0x0 0x0 0x0 0x7ffd3c2a1b28 0x7f1e2d3c4b5a\n"),
            ProcSyscall::InSyscall {
                nr: 202,
                args: [0x55d0c0a0, 0x80, 2, 0, 0, 0],
                sp: 0x7ffd3c2a1b28,
                pc: 0x7f1e2d3c4b5a
            }
        );
        assert_eq!(parse_syscall(""), ProcSyscall::Unknown);
        assert_eq!(parse_syscall("0 0x3 0x4"), ProcSyscall::Unknown);
        assert_eq!(parse_syscall("-1 zz 0x1"), ProcSyscall::Unknown);
        assert_eq!(
            parse_syscall("-5 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8"),
            ProcSyscall::Unknown
        );
    }

    #[test]
    fn stack_lines() {
        let text = "[<0>] futex_wait_queue+0x5e/0x90\n\
                    [<0>] __futex_wait+0x8f/0x100\n\
                    [<0>] nfs_wait_bit_killable+0x1c/0x80 [nfs]\n\
                    garbage\n\
                    [<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";
        let frames = parse_stack(text);
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0],
            KernelFrameName {
                name: "futex_wait_queue".into(),
                offset: 0x5e,
                size: 0x90
            }
        );
        assert_eq!(frames[2].name, "nfs_wait_bit_killable");
        assert_eq!(frames[3].name, "entry_SYSCALL_64_after_hwframe");
        assert!(parse_stack("").is_empty());
    }

    #[test]
    fn wchan_text() {
        assert_eq!(parse_wchan("pipe_read"), Some("pipe_read".into()));
        assert_eq!(parse_wchan("0"), None);
        assert_eq!(parse_wchan(""), None);
    }

    #[test]
    fn sched_text() {
        let text = "cat (5264, #threads: 1)\n\
            -------------------------------------------------------------------\n\
            se.exec_start                                :       2443136.704153\n\
            se.vruntime                                  :            62.392437\n\
            se.sum_exec_runtime                          :             0.432745\n\
            sum_sleep_runtime                            :           100.000000\n\
            sleep_start                                  :       2443000.000001\n\
            block_start                                  :             0.000000\n\
            nr_switches                                  :                   17\n\
            current_node=0, numa_group_id=0\n";
        let f = parse_sched(text);
        assert_eq!(f.exec_start_ns, Some(2_443_136_704_153));
        assert_eq!(f.sleep_start_ns, Some(2_443_000_000_001));
        assert_eq!(f.block_start_ns, None);
        assert_eq!(f.nr_switches, Some(17));

        let old = "se.statistics.block_start : 12.5\nse.exec_start : -3.000000\n";
        let f = parse_sched(old);
        assert_eq!(f.block_start_ns, Some(12_500_000));
        assert_eq!(f.exec_start_ns, None);
        assert_eq!(parse_sched("nonsense"), SchedFields::default());
    }

    #[test]
    fn schedstat_text() {
        assert_eq!(
            parse_schedstat("205717538 8236893 547\n"),
            Some(SchedStat {
                cpu_time_ns: 205_717_538,
                run_delay_ns: 8_236_893,
                run_count: 547
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
        assert_eq!(parse_schedstat("1 x 3"), None);
    }
}
