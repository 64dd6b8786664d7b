//! Types shared by the BPF programs (`tracer-ebpf`) and the loader (`tracer-user`).
//!
//! Every struct that crosses the kernel/user boundary is defined here once, `#[repr(C)]`, with
//! explicit padding fields so that both sides (and the verifier, which rejects reads of
//! uninitialised stack bytes in map keys) agree on every byte. Sizes are checked at compile time.
//! The `user` feature adds `aya::Pod` impls so the loader can read maps and set globals.
#![no_std]

pub mod syscalls;

/// Deepest stack `bpf_get_stack` is asked for; the kernel's `sysctl_perf_event_max_stack`
/// default (127) is the limit that matters.
pub const MAX_STACK_DEPTH: usize = 127;
/// `TASK_COMM_LEN` in `include/linux/sched.h`.
pub const COMM_LEN: usize = 16;

/// Stack id meaning "no stack was asked for or none exists" (e.g. a kernel thread's user stack,
/// or `--kernel-stacks-only`). Not a loss.
pub const STACK_ID_NONE: u64 = 0;
/// Stack id meaning "a stack should exist but could not be recorded". Counted as a loss.
pub const STACK_ID_MISSED: u64 = 1;
/// Real stack ids (content hashes) are always >= this value.
pub const STACK_ID_FIRST_REAL: u64 = 2;

/// Tag bit of site ids ([`flags::STACK_COPIES`]): a user stack id with this bit set names a
/// shipped stack copy ([`SiteHeader::site_id`]), not a frame-pointer stack in `STACKS`.
pub const SITE_ID_TAG: u64 = 1 << 63;
/// Page size the stack copy is read in (x86_64).
pub const STACK_COPY_PAGE: usize = 4096;
/// Most pages one stack copy holds: the page sp is in (from its start) and the ones above,
/// so 16 KiB above sp always fit. The BPF side hashes up to this many pages word by word, and
/// the verifier walks that loop: more pages would take it past its instruction limit.
pub const MAX_STACK_COPY_PAGES: usize = 5;
/// Default bytes copied above sp (`--stack-copy-bytes`).
pub const DEFAULT_STACK_COPY_BYTES: u32 = 16 * 1024;
/// Bytes above sp whose code-like words join the memo key when stacks are copied: without
/// frame pointers, ip/sp/bp alone do not tell two callers of the same blocking function apart.
pub const SITE_MEMO_BYTES: usize = 512;

/// Most executable ranges of one process given to BPF ([`TextRanges`]); more are merged
/// across their smallest gaps, which only lets a few more words count.
pub const TEXT_RANGES_MAX: usize = 64;
/// The start of an unused [`TextRanges`] slot: above every user address, below 2^62 (what
/// [`site_hash::text_mask`]'s comparisons need).
pub const TEXT_RANGE_UNUSED: u64 = 1 << 62;

/// Where a process's code is (`TEXT_RANGES`, keyed by tgid, written by user space from
/// `/proc/PID/maps` for `--unwind dwarf|auto`): only stack words in these ranges are return
/// address candidates, so only they join a site id and the memo key. Heap pointers and clocks
/// left on the stack then no longer make a new site at every wait.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRanges {
    /// Range starts, ascending; unused slots hold [`TEXT_RANGE_UNUSED`].
    pub starts: [u64; TEXT_RANGES_MAX],
    /// One past each range's last byte.
    pub ends: [u64; TEXT_RANGES_MAX],
}

impl Default for TextRanges {
    fn default() -> Self {
        Self {
            starts: [TEXT_RANGE_UNUSED; TEXT_RANGES_MAX],
            ends: [TEXT_RANGE_UNUSED; TEXT_RANGES_MAX],
        }
    }
}

/// The hash behind site ids and the stack-copy memo key (`tracer-ebpf/src/sites.rs`), here so
/// that it is tested on the host.
pub mod site_hash {
    /// Code-like values are at least `1 << CODE_LIKE_MIN_BITS` (4 MiB: the classic non-PIE
    /// text address; `mmap_min_addr` is below it)...
    const CODE_LIKE_MIN_BITS: u32 = 22;
    /// ... and below `1 << CODE_LIKE_END_BITS` (the x86_64 user half).
    const CODE_LIKE_END_BITS: u32 = 47;
    /// The running hash's start (FNV-1a's offset basis).
    pub const START: u64 = 0xcbf2_9ce4_8422_2325;
    /// FNV-1a's 64-bit prime.
    pub const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// `v`, hidden from the optimizer: LLVM would turn the mask arithmetic in [`add_word`]
    /// back into a comparison, which BPF (no conditional moves) makes into a branch, and a
    /// branch per word multiplies the states the verifier explores.
    #[inline(always)]
    fn opaque(v: u64) -> u64 {
        // SAFETY: a volatile read of a live local.
        unsafe { core::ptr::read_volatile(&v) }
    }

    /// All ones when `word` is code-like (in `[0x400000, 2^47)`, where every return address
    /// lies), else zero.
    #[inline(always)]
    pub fn code_like_mask(word: u64) -> u64 {
        // `above` is 0 below 4 MiB, `high` is 0 in the user half, and both are far below
        // 2^63, so `x - 1` has its sign bit set exactly when `x == 0`: code-like is the sign
        // bit of `(high - 1) & !(above - 1)`, spread over the word by an arithmetic shift.
        let above = word >> CODE_LIKE_MIN_BITS;
        let high = word >> CODE_LIKE_END_BITS;
        let sign = opaque(high.wrapping_sub(1) & !above.wrapping_sub(1));
        ((sign as i64) >> 63) as u64
    }

    /// All ones when `a <= b`, for values below 2^62 (no branch, see [`opaque`]).
    #[inline(always)]
    fn le_mask(a: u64, b: u64) -> u64 {
        !((opaque(b.wrapping_sub(a)) as i64 >> 63) as u64)
    }

    /// All ones when `word` lies in one of the process's executable ranges, else zero: a
    /// branch-free binary search over the sorted starts ([`super::TextRanges`]).
    #[inline(always)]
    pub fn text_mask(ranges: &super::TextRanges, word: u64) -> u64 {
        const LAST: usize = super::TEXT_RANGES_MAX - 1;
        // Outside the user half, `le_mask`'s premise fails; such words are no code anyway.
        let code_like = code_like_mask(word);
        let word = word & code_like;
        let mut lo = 0usize;
        let mut half = super::TEXT_RANGES_MAX / 2;
        while half > 0 {
            let mid = (lo + half) & LAST;
            lo += half & le_mask(ranges.starts[mid], word) as usize;
            half /= 2;
        }
        let lo = lo & LAST;
        code_like & le_mask(ranges.starts[lo], word) & !le_mask(ranges.ends[lo], word)
    }

    /// All ones when bit `i` of `positions` is set, else zero (no branch).
    #[inline(always)]
    pub fn bit_mask(positions: u64, i: usize) -> u64 {
        opaque((positions >> i) & 1).wrapping_neg()
    }

    /// One stack word into a running hash, masked to zero unless `keep` is all ones: every
    /// word moves the hash, so words count by position, but only kept words by value.
    #[inline(always)]
    pub fn add_word_masked(hash: u64, word: u64, keep: u64) -> u64 {
        (hash ^ (word & keep)).wrapping_mul(PRIME)
    }

    /// [`add_word_masked`] keeping code-like words: loop counters, sizes and fds (below
    /// 4 MiB) and kernel-half or float bit patterns do not split a site; heap pointers and
    /// clocks do, which is why [`text_mask`] is used where the process's ranges are known.
    #[inline(always)]
    pub fn add_word(hash: u64, word: u64) -> u64 {
        add_word_masked(hash, word, code_like_mask(word))
    }

    /// splitmix64's finalizer, so that ids spread over all bits.
    #[inline(always)]
    pub fn finish(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn hash(words: &[u64]) -> u64 {
            finish(words.iter().fold(START, |h, &w| add_word(h, w)))
        }

        /// Check that only code-like words count by value: small integers and kernel-half or
        /// float bit patterns hash alike, return addresses (PIE, libraries, non-PIE) do not.
        #[test]
        fn only_code_like_words_count() {
            let ret = 0x5555_5555_1234;
            assert_eq!(hash(&[ret, 1, 2]), hash(&[ret, 77, 0x3f_ffff]));
            assert_eq!(hash(&[ret, 0xffff_8000_0000_0000]), hash(&[ret, 0]));
            assert_eq!(hash(&[ret, 1.5f64.to_bits()]), hash(&[ret, 0]));
            for other in [0x5555_5555_1238, 0x7f12_3456_7890, 0x40_1136] {
                assert_ne!(hash(&[ret, 0]), hash(&[other, 0]), "{other:#x}");
                assert_ne!(hash(&[ret, 0]), hash(&[ret, other]), "{other:#x}");
            }
            // Position matters: the same words in another order are another stack.
            let (a, b) = (0x5555_5555_1000, 0x7f00_0000_2000);
            assert_ne!(hash(&[a, b]), hash(&[b, a]));
            // The edges of the code-like range.
            assert_ne!(hash(&[0x40_0000]), hash(&[0]));
            assert_eq!(hash(&[0x3f_ffff]), hash(&[0]));
            assert_ne!(hash(&[(1 << 47) - 1]), hash(&[0]));
            assert_eq!(hash(&[1 << 47]), hash(&[0]));
        }

        fn ranges(list: &[(u64, u64)]) -> super::super::TextRanges {
            let mut r = super::super::TextRanges::default();
            for (i, &(start, end)) in list.iter().enumerate() {
                r.starts[i] = start;
                r.ends[i] = end;
            }
            r
        }

        /// Check the search at every slot's edges, with few and with all slots used.
        #[test]
        fn text_mask_finds_exactly_the_ranges() {
            for count in [1, 2, 3, 31, 63, super::super::TEXT_RANGES_MAX] {
                let mut all = [(0, 0); super::super::TEXT_RANGES_MAX];
                for (i, slot) in all.iter_mut().enumerate() {
                    let start = 0x40_0000 + i as u64 * 0x10_0000;
                    *slot = (start, start + 0x8000);
                }
                let list = &all[..count];
                let r = ranges(list);
                for &(start, end) in list {
                    assert_eq!(text_mask(&r, start), u64::MAX, "{count}: {start:#x}");
                    assert_eq!(text_mask(&r, end - 1), u64::MAX, "{count}: {end:#x}");
                    assert_eq!(text_mask(&r, end), 0, "{count}: {end:#x}");
                    assert_eq!(text_mask(&r, start - 1), 0, "{count}: {start:#x}");
                }
                for outside in [0, 1, 0x3f_ffff, 0x7fff_ffff_f000, 1 << 47, u64::MAX] {
                    assert_eq!(text_mask(&r, outside), 0, "{count}: {outside:#x}");
                }
            }
            let r = ranges(&[]);
            assert_eq!(text_mask(&r, 0x40_0000), 0);
        }

        /// Check that with the process's ranges, a heap pointer that changes between two
        /// waits does not change the hash, and a return address does.
        #[test]
        fn only_words_in_text_count_with_ranges() {
            let r = ranges(&[
                (0x5555_5555_0000, 0x5555_5556_0000),
                (0x7f00_0000_0000, 0x7f00_0010_0000),
            ]);
            let hash = |words: &[u64]| {
                finish(
                    words
                        .iter()
                        .fold(START, |h, &w| add_word_masked(h, w, text_mask(&r, w))),
                )
            };
            let ret = 0x5555_5555_1234;
            assert_eq!(
                hash(&[ret, 0x5555_6000_0010]),
                hash(&[ret, 0x7f00_0100_0000])
            );
            assert_ne!(hash(&[ret, 0]), hash(&[0x7f00_0000_1000, 0]));
            assert_ne!(hash(&[ret, 0]), hash(&[0, ret]));
        }
    }
}

/// Thread-state classes, used both as the `--state` filter mask and in aggregate keys.
pub mod state {
    /// `TASK_INTERRUPTIBLE` sleep (S): futex, epoll, read, nanosleep...
    pub const SLEEPING: u32 = 1 << 0;
    /// `TASK_UNINTERRUPTIBLE` sleep (D): disk I/O, some kernel locks.
    pub const DISK: u32 = 1 << 1;
    /// Left the CPU while still runnable: preempted or yielded (R). Not blocked, waiting for CPU.
    pub const RUNNABLE: u32 = 1 << 2;
    /// Any other state the scheduler reports (stopped, traced, parked, idle kernel worker).
    pub const OTHER: u32 = 1 << 3;
    /// Default `--state`: blocked time only, like bcc's documentation intends.
    pub const DEFAULT_MASK: u32 = SLEEPING | DISK;
    /// Every class.
    pub const ALL: u32 = SLEEPING | DISK | RUNNABLE | OTHER;
}

/// Bits of [`Config::flags`].
pub mod flags {
    /// Only threads of the tgids in `FILTER_TGIDS` are traced.
    pub const FILTER_TGIDS: u32 = 1 << 0;
    /// Only the tids in `FILTER_TIDS` are traced (combined with the tgid filter by OR, like bcc).
    pub const FILTER_TIDS: u32 = 1 << 1;
    /// Skip kernel threads.
    pub const USER_THREADS_ONLY: u32 = 1 << 2;
    /// Skip user threads.
    pub const KERNEL_THREADS_ONLY: u32 = 1 << 3;
    /// Record kernel stacks.
    pub const KERNEL_STACKS: u32 = 1 << 4;
    /// Record user stacks.
    pub const USER_STACKS: u32 = 1 << 5;
    /// Record who woke each wait (`sched_waking`) and the waker's stacks.
    pub const WAKERS: u32 = 1 << 6;
    /// Reuse a thread's last stacks when it blocks again at the same user SP/PC/FP in the same
    /// syscall on the same resource, instead of walking and hashing them again.
    pub const STACK_MEMO: u32 = 1 << 7;
    /// Only threads whose cgroup id equals `Config::cgroup_id`.
    pub const FILTER_CGROUP: u32 = 1 << 8;
    /// Add processes forked by traced processes to the process filter (`-- COMMAND`).
    pub const FOLLOW_FORKS: u32 = 1 << 9;
    /// Keep waits in flight only; do not aggregate ended waits into `OFFCPU_TOTALS`
    /// (`watch`, which only looks at threads still blocked).
    pub const IN_FLIGHT_ONLY: u32 = 1 << 10;
    /// Record the user registers (ip, sp, bp) at switch-out so user space can unwind a
    /// still-blocked thread's stack with DWARF CFI (`watch`).
    pub const USER_REGS: u32 = 1 << 11;
    /// Walk the Python frame chain of threads listed in `PY_THREADS` at switch-out
    /// (`profile --python`).
    pub const PYTHON_STACKS: u32 = 1 << 12;
    /// `--unwind dwarf|auto`: a blocked thread's user stack is a *site*: on a memo miss the
    /// top of its user stack is copied with its registers and shipped once per new site on
    /// `SITES` for user space to unwind with DWARF CFI; the aggregate keys by site id
    /// ([`SITE_ID_TAG`]) instead of a frame-pointer stack id.
    pub const STACK_COPIES: u32 = 1 << 13;
    /// With [`STACK_COPIES`] (`--unwind auto`): also walk the frame pointers and ship that
    /// walk's stack id with the site, so user space can choose between the two.
    pub const FP_WITH_COPIES: u32 = 1 << 14;
    /// Read the blocking syscall from the thread's saved user registers at switch-out
    /// (`orig_ax` and the argument registers, as `/proc/PID/syscall` does) instead of keeping
    /// it from `sys_enter` to `sys_exit`: `profile` then needs no syscall hooks, which every
    /// syscall on the host would pay for. `watch` keeps the hooks for what only they see
    /// (the syscall's start time, a refused PI lock, a poll's return).
    pub const SYSCALLS_FROM_REGS: u32 = 1 << 15;
}

/// Everything the BPF side needs to know before it runs, set as the global `CONFIG` at load.
///
/// Kernel struct offsets are read from `/sys/kernel/btf/vmlinux` by the loader: Rust BPF cannot
/// emit CO-RE relocations, so nothing here is hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Waits shorter than this are not charged (filtered, not lost).
    pub min_block_ns: u64,
    /// Waits longer than this are not charged (filtered, not lost).
    pub max_block_ns: u64,
    /// cgroup v2 id (inode of the cgroup directory) for [`flags::FILTER_CGROUP`].
    pub cgroup_id: u64,
    /// Which [`state`] classes are recorded at switch-out.
    pub state_mask: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid_off: u32,
    /// `offsetof(struct task_struct, flags)`.
    pub task_flags_off: u32,
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid_off: u32,
    /// Bytes of user stack copied above sp for a site ([`flags::STACK_COPIES`]); rounded
    /// up to whole pages and capped at [`MAX_STACK_COPY_PAGES`] pages by the BPF side.
    pub stack_copy_bytes: u32,
    /// Offsets in `struct pt_regs` of the registers the programs read.
    pub regs: RegsOffsets,
}

/// Byte offsets of `struct pt_regs` fields (x86_64 names).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegsOffsets {
    /// Syscall argument registers in order: di, si, dx, r10, r8, r9.
    pub args: [u32; 6],
    /// `orig_ax`: the syscall number at `sys_exit`.
    pub orig_ax: u32,
    /// User instruction pointer.
    pub ip: u32,
    /// User stack pointer.
    pub sp: u32,
    /// User frame pointer.
    pub bp: u32,
    /// `ax`: `-ENOSYS` from syscall entry until the syscall returns (`entry_64.S` pushes it
    /// before dispatch), the user's own `rax` in an exception or interrupt.
    pub ax: u32,
    /// Keeps [`Config`] free of implicit padding.
    pub _pad: u32,
}

/// The blocking syscall a thread is in, recorded at `sys_enter` and cleared at `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCtx {
    /// What the resource is: a [`syscalls::kind`] value; `kind::NONE` when not in a tracked syscall.
    pub kind: u32,
    /// The raw syscall number (x86_64), `u32::MAX` when none.
    pub nr: u32,
    /// The waited-on thing: futex address, fd, epoll fd, or 0.
    pub resource: u64,
    /// Kind-specific detail: futex op (command bits), epoll/poll timeout in ms (as i64 bits).
    pub detail: u64,
    /// The raw timeout argument (see [`syscalls::classify`]): milliseconds as i64 bits for
    /// epoll_wait/poll, a user pointer (0 = none, wait for ever) for futex, ppoll, select,
    /// epoll_pwait2 and futex_waitv; 0 for syscalls without one.
    pub timeout: u64,
    /// `bpf_ktime_get_ns()` at syscall entry.
    pub enter_ns: u64,
}

/// User registers of a thread at switch-out: where its user stack can be unwound from while
/// it stays blocked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// Instruction pointer (after the `syscall` instruction).
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer register (rbp), whatever the code uses it for.
    pub bp: u64,
}

/// A `FUTEX_LOCK_PI` that the kernel refused with `EDEADLK`: it found the lock chain loops
/// back to the caller. glibc then parks the thread for ever on a futex word on its own
/// stack, so the lock it wanted is only known from this record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedLock {
    /// The PI futex address; 0 when there is no record.
    pub uaddr: u64,
    /// `bpf_ktime_get_ns()` when the lock failed.
    pub at_ns: u64,
    /// The futex word at the failure (owner tid in its low 30 bits).
    pub word: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// How a thread has been using poll-style waits (epoll_wait, poll, select): a thread that
/// keeps returning from them is an event loop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollHistory {
    /// `bpf_ktime_get_ns()` at the last return from a poll-style syscall.
    pub last_exit_ns: u64,
    /// Poll-style syscalls returned from since tracing began.
    pub count: u64,
}

/// A wait that has begun (switch-out) and not ended (switch-in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// `bpf_ktime_get_ns()` at switch-out; 0 means the thread is not in a wait.
    pub start_ns: u64,
    /// Kernel stack id at switch-out.
    pub kernel_stack_id: u64,
    /// User stack id at switch-out.
    pub user_stack_id: u64,
    /// Syscall the thread was in when it left the CPU.
    pub syscall: SyscallCtx,
    /// User registers at switch-out (zero unless [`flags::USER_REGS`]).
    pub user_regs: UserRegs,
    /// Python stack id at switch-out (`STACK_ID_NONE` unless [`flags::PYTHON_STACKS`] and the
    /// thread is in `PY_THREADS`).
    pub python_stack_id: u64,
    /// Waker recorded by `sched_waking` for this wait (zeroed at switch-out).
    pub waker: Waker,
    /// Thread group id.
    pub tgid: u32,
    /// [`state`] class at switch-out.
    pub state: u32,
    /// The thread's name at switch-out.
    pub comm: [u8; COMM_LEN],
}

/// Who woke a wait.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waker {
    /// Waker's kernel stack id.
    pub kernel_stack_id: u64,
    /// Waker's user stack id.
    pub user_stack_id: u64,
    /// Waker's thread group id.
    pub tgid: u32,
    /// Waker's thread id; 0 = not recorded.
    pub tid: u32,
    /// Waker's thread name.
    pub comm: [u8; COMM_LEN],
}

/// What the kernel keeps per thread, keyed by tid in `THREADS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// Current blocking syscall, if any.
    pub syscall: SyscallCtx,
    /// Current wait, if any.
    pub wait: InFlight,
    /// Stacks of the last wait, reused when the thread blocks again at the same place.
    pub memo: StackMemo,
    /// The last `FUTEX_LOCK_PI` that failed with `EDEADLK` (cleared by a successful one).
    pub failed_lock: FailedLock,
    /// Poll-style syscalls seen.
    pub poll: PollHistory,
}

/// The per-thread stack memo: the place a thread last blocked and the stacks recorded there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackMemo {
    /// User instruction pointer at switch-out.
    pub user_ip: u64,
    /// User stack pointer at switch-out.
    pub user_sp: u64,
    /// User frame pointer at switch-out.
    pub user_bp: u64,
    /// The return address the frame pointer chain starts with (`*(bp + 8)`); with stack
    /// copies, the hash of the words above sp at [`Self::user_ret_positions`].
    pub user_ret: u64,
    /// With stack copies: which of the words above sp (bit `i` = word `i`) were return address
    /// candidates (inside the process's code) when the memo was filled. A later switch-out
    /// hashes the same positions only, with no search, to tell whether it is the same stack.
    pub user_ret_positions: u64,
    /// Syscall resource at switch-out.
    pub resource: u64,
    /// Syscall number at switch-out.
    pub nr: u32,
    /// State class at switch-out.
    pub state: u32,
    /// Kernel stack id recorded there.
    pub kernel_stack_id: u64,
    /// User stack id recorded there.
    pub user_stack_id: u64,
}

/// The per-thread waker memo (`--wakers` with `--unwind dwarf|auto`): where a thread last
/// woke a traced wait from and the site its user stack was there, so a thread that keeps
/// waking others from the same place is copied once, not at every wakeup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakerMemo {
    /// User instruction pointer at the wakeup.
    pub user_ip: u64,
    /// User stack pointer at the wakeup.
    pub user_sp: u64,
    /// Hash of the words above sp at `positions` (as `StackMemo::user_ret` with stack
    /// copies).
    pub words: u64,
    /// Which words above sp were return address candidates (as
    /// `StackMemo::user_ret_positions`).
    pub positions: u64,
    /// The site id recorded there.
    pub user_stack_id: u64,
}

/// Aggregation key of `OFFCPU_TOTALS`: one flamegraph line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    /// Blocked thread's kernel stack id.
    pub kernel_stack_id: u64,
    /// Blocked thread's user stack id.
    pub user_stack_id: u64,
    /// Waker's kernel stack id (0 without `--wakers`).
    pub waker_kernel_stack_id: u64,
    /// Waker's user stack id (0 without `--wakers`).
    pub waker_user_stack_id: u64,
    /// Futex address, fd... (see [`SyscallCtx::resource`]).
    pub resource: u64,
    /// Thread group id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Waker tgid (0 without `--wakers` or when unknown).
    pub waker_tgid: u32,
    /// Waker tid.
    pub waker_tid: u32,
    /// [`syscalls::kind`] of the wait.
    pub kind: u32,
    /// Syscall number or `u32::MAX`.
    pub nr: u32,
    /// Futex command, for futex waits.
    pub futex_op: u32,
    /// [`state`] class.
    pub state: u32,
    /// Blocked thread's Python stack id in `PY_STACKS` (`STACK_ID_NONE` without `--python`).
    pub python_stack_id: u64,
}

/// Aggregated off-CPU time for one [`OffCpuKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuValue {
    /// Sum of wait durations.
    pub total_ns: u64,
    /// Number of waits.
    pub count: u64,
    /// Longest single wait.
    pub max_ns: u64,
    /// Blocked thread's name.
    pub comm: [u8; COMM_LEN],
    /// Waker's name (zeroes when unknown).
    pub waker_comm: [u8; COMM_LEN],
}

/// A stored stack: instruction pointers, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTrace {
    /// Number of valid entries in `ips`.
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Return addresses; the first is the current instruction.
    pub ips: [u64; MAX_STACK_DEPTH],
}

impl Default for StackTrace {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            ips: [0; MAX_STACK_DEPTH],
        }
    }
}

/// Deepest Python stack recorded at switch-out (frames past it are cut, outermost first).
pub const PY_MAX_DEPTH: usize = 40;

/// How a CPython version marks the frame a C call of the eval loop entered with
/// ([`PyThread::marker`]). Only user space reads the marker; BPF records the byte.
pub mod py_marker {
    /// 3.11: `_PyInterpreterFrame.is_entry` is non-zero on that frame.
    pub const IS_ENTRY: u32 = 1;
    /// 3.12+: the eval loop pushes a shim frame with `owner == FRAME_OWNED_BY_CSTACK` (3)
    /// below it; the shim itself is no Python frame.
    pub const OWNER_CSTACK: u32 = 2;
    /// `FRAME_OWNED_BY_CSTACK` in CPython's `pycore_frame.h`.
    pub const CSTACK_OWNER_VALUE: u8 = 3;
    /// 2.7 and 3.6–3.10: a chain of frame objects, each run by its own C call of the eval loop,
    /// so every frame is an entry. The recorded marker byte is the code pointer's low byte
    /// (always zero bits) rather than a field's.
    pub const FRAME_OBJECT: u32 = 3;
}

/// Where a traced Python thread's frames are and how they are laid out, written by the loader
/// into `PY_THREADS` (keyed by tid) for CPython processes under `--python`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyThread {
    /// Address of the thread's `PyThreadState`.
    pub tstate: u64,
    /// Thread group id (recorded in the stacks so user space knows whose memory to read).
    pub tgid: u32,
    /// Offset in `PyThreadState` of `current_frame` (3.13+), of `cframe` (3.11–3.12) or of
    /// `frame` (3.10 and older).
    pub frame_ptr_offset: u32,
    /// Offset of `current_frame` in `_PyCFrame`, or `u32::MAX` when the thread state holds
    /// the frame pointer itself (3.13+, 3.10 and older).
    pub cframe_frame_offset: u32,
    /// Offset of the code object pointer (`f_code`, `f_executable`) in `_PyInterpreterFrame`
    /// (or the frame object).
    /// This and the other frame offsets lie within [`PyThread::header_bytes`], pointers
    /// 8-aligned.
    pub code_offset: u32,
    /// Offset of `previous` in `_PyInterpreterFrame` (`f_back` in a frame object).
    pub previous_offset: u32,
    /// Offset of the instruction pointer (`prev_instr`, `instr_ptr`) in `_PyInterpreterFrame`,
    /// or of the word starting with the `int f_lasti` of a frame object (3.10 and older; the
    /// other half is `f_lineno`, dropped in user space).
    pub instr_offset: u32,
    /// Offset of the entry marker byte (`is_entry` or `owner`) in `_PyInterpreterFrame` (the
    /// code pointer's low byte in a frame object, [`py_marker::FRAME_OBJECT`]).
    pub marker_offset: u32,
    /// A [`py_marker`] value.
    pub marker: u32,
    /// Bytes read from the start of each frame: a multiple of 8 from 8 to
    /// [`PY_FRAME_HEADER_MAX_BYTES`] that covers every field above (72 for 3.11–3.13, up to
    /// 128 for the frame objects of 2.7 and 3.6).
    pub header_bytes: u32,
    /// Padding.
    pub _pad: u32,
}

/// Most bytes of a frame read per frame (a [`PyFrameHeader`]): one read per frame covers
/// every field the walk needs, `_PyInterpreterFrame`'s first 72 bytes (3.11–3.13) or a frame
/// object's first 104–128 (3.10 down to 3.6, and 2.7, whose `f_lasti` lies further in).
pub const PY_FRAME_HEADER_MAX_BYTES: usize = 128;

/// The first [`PyThread::header_bytes`] of a frame, as BPF reads it, in a buffer of 16 words
/// so that an index masked with 15 always lies inside it (what the verifier checks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrameHeader {
    /// The bytes, as native-endian words (the first `header_bytes / 8` are read).
    pub words: [u64; 16],
}

/// One recorded Python frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrameRef {
    /// Code object address (16-byte aligned), with the frame's marker byte (`is_entry` or
    /// `owner`, see [`PyThread::marker`]) in its low 3 bits: user space decides which frames
    /// end a run of the eval loop.
    pub code: u64,
    /// Instruction pointer in the frame as CPython keeps it (an address in the code object).
    pub instr: u64,
}

/// A stored Python stack, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyStack {
    /// The process whose memory the code objects are in.
    pub tgid: u32,
    /// Number of valid entries in `frames`.
    pub len: u32,
    /// The frames.
    pub frames: [PyFrameRef; PY_MAX_DEPTH],
}

impl Default for PyStack {
    fn default() -> Self {
        Self {
            tgid: 0,
            len: 0,
            frames: [PyFrameRef::default(); PY_MAX_DEPTH],
        }
    }
}

/// Most bytes of a `PyThreadState` BPF reads per thread state while it looks a thread up in
/// its interpreters' thread lists ([`PyProcess`]): one read covers both fields it needs.
pub const PY_TSTATE_SPAN_BYTES: usize = 256;

/// Where BPF finds the thread states of a CPython process, to look up a thread of it that
/// `PY_THREADS` does not list yet (one started since user space last read the thread lists).
/// Written by the loader into `PY_PROCESSES`, keyed by tgid (`--python`).
///
/// Every offset is a byte offset; those in `PyThreadState` are 8-aligned and lie within the
/// `span_bytes` read from `span_offset` (the loader checks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProcess {
    /// Address of `_PyRuntime.interpreters.head`: the newest interpreter, whose `next` links
    /// lead to the others (the main interpreter last).
    pub interpreters_head: u64,
    /// Offset of `next` in `PyInterpreterState`.
    pub interpreter_next_offset: u32,
    /// Offset of the head of the thread list (`threads.head`) in `PyInterpreterState`.
    pub threads_head_offset: u32,
    /// Offset in `PyThreadState` of the first byte read per thread state.
    pub span_offset: u32,
    /// Bytes read per thread state (at most [`PY_TSTATE_SPAN_BYTES`]).
    pub span_bytes: u32,
    /// Offset of `next` in `PyThreadState`.
    pub thread_next_offset: u32,
    /// Offset in `PyThreadState` of the field that tells the thread: `native_thread_id`
    /// (the kernel tid, 3.11+), or `thread_id` (a `pthread_t`) with `pthread_tid_offset`.
    pub thread_id_offset: u32,
    /// `u32::MAX` when the field at `thread_id_offset` is the kernel tid; otherwise it is a
    /// glibc `pthread_t` (the descriptor's address) and the tid (a 32-bit `pid_t`) is at this
    /// offset in the descriptor (3.8-3.10, calibrated by the loader).
    pub pthread_tid_offset: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The frame layout of the process's threads, as in their `PY_THREADS` entries (`tstate`
    /// left zero; `tgid` the process's).
    pub frames: PyThread,
}

/// The bytes of one thread state BPF read ([`PyProcess::span_bytes`] of them), as words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyTstateSpan {
    /// The bytes, as native-endian words.
    pub words: [u64; PY_TSTATE_SPAN_BYTES / 8],
}

impl Default for PyTstateSpan {
    fn default() -> Self {
        Self {
            words: [0; PY_TSTATE_SPAN_BYTES / 8],
        }
    }
}

/// What BPF ships on `SITES` for a new site: the registers and where the copy starts,
/// followed by `copy_len` bytes of user stack memory from `copy_start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteHeader {
    /// The site id (with [`SITE_ID_TAG`]): a hash of the process, ip, sp, the frame-pointer
    /// stack id and the code-like words of the copy above sp.
    pub site_id: u64,
    /// With [`flags::FP_WITH_COPIES`], the frame-pointer walk's stack id (in `STACKS`).
    pub fp_stack_id: u64,
    /// User instruction pointer.
    pub ip: u64,
    /// User stack pointer.
    pub sp: u64,
    /// User frame pointer register.
    pub bp: u64,
    /// Address of the first copied byte (the start of sp's page).
    pub copy_start: u64,
    /// Thread group id.
    pub tgid: u32,
    /// Bytes copied (whole pages).
    pub copy_len: u32,
}

/// The per-CPU scratch a site is built in and shipped from: header, then the copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SiteCopy {
    /// What the copy is.
    pub header: SiteHeader,
    /// The stack memory, `header.copy_len` bytes used.
    pub bytes: [u8; MAX_STACK_COPY_PAGES * STACK_COPY_PAGE],
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Waits begun (switch-outs that passed the filters and were stored).
    pub const WAITS_STARTED: u32 = 0;
    /// Waits ended and charged to `OFFCPU_TOTALS`.
    pub const WAITS_CHARGED: u32 = 1;
    /// Waits ended but outside `--min-block-us`/`--max-block-us` (filtered, not lost).
    pub const WAITS_FILTERED_DURATION: u32 = 2;
    /// Waits not tracked because `THREADS` was full (lost).
    pub const DROP_THREADS_FULL: u32 = 3;
    /// Waits not charged because `OFFCPU_TOTALS` was full (lost).
    pub const DROP_TOTALS_FULL: u32 = 4;
    /// Stacks not stored because `STACKS` was full; the wait is kept with a missed stack.
    pub const DROP_STACKS_FULL: u32 = 5;
    /// `bpf_get_stack` failed for a kernel stack.
    pub const KERNEL_STACK_ERROR: u32 = 6;
    /// `bpf_get_stack` failed or returned nothing for a user thread's user stack.
    pub const USER_STACK_ERROR: u32 = 7;
    /// Stacks reused from the per-thread memo instead of being walked again.
    pub const STACK_MEMO_HITS: u32 = 8;
    /// Wakers recorded.
    pub const WAKERS_RECORDED: u32 = 9;
    /// New-process notices lost because the ring buffer was full (those processes may not
    /// symbolize if they exit before the trace ends).
    pub const DROP_NEW_PROCESS_NOTICE: u32 = 10;
    /// A thread left the CPU again, or exited, while its previous wait was still stamped: its
    /// switch-in was never seen, so the previous wait is lost. Happens when the kernel emits
    /// no `sched_switch` for the task that switched to it (see `sched.rs`).
    pub const DROP_UNMATCHED_WAIT: u32 = 11;
    /// Python stacks recorded at switch-out (`--python`).
    pub const PYTHON_STACKS: u32 = 12;
    /// Python stacks not stored because `PY_STACKS` was full, or whose frame chain could not
    /// be read.
    pub const PYTHON_STACK_ERROR: u32 = 13;
    /// Sites shipped to user space on `SITES` (one per new site).
    pub const SITES_SHIPPED: u32 = 14;
    /// Stack copies that failed: sp's page could not be read (lost user stack).
    pub const STACK_COPY_ERROR: u32 = 15;
    /// Sites not shipped because the `SITES` ring was full (lost user stack).
    pub const DROP_SITE_RING_FULL: u32 = 16;
    /// Sites not shipped because `KNOWN_SITES` was full (lost user stack).
    pub const DROP_SITES_FULL: u32 = 17;
    /// Python threads BPF found in their interpreter's thread list at a switch-out, before
    /// user space listed them (`--python`): stored in `PY_THREADS` and walked at once.
    pub const PYTHON_THREADS_FOUND: u32 = 18;
    /// Thread states read while looking threads up (the cost of the lookups).
    pub const PYTHON_THREAD_STATES_READ: u32 = 19;
    /// Lookups that found no thread state with the thread's tid: a native thread of a Python
    /// process, or one whose thread state is not bound yet. Not a loss; the miss is cached.
    pub const PYTHON_THREAD_NOT_FOUND: u32 = 20;
    /// Lookups that failed (a thread state could not be read, the list was longer than the
    /// bound) or whose thread could not be stored (`PY_THREADS` full): the wait has no Python
    /// frames if its thread had any.
    pub const PYTHON_THREAD_SEARCH_ERROR: u32 = 21;
    /// Number of counters.
    pub const COUNT: u32 = 22;
}

/// Capacity defaults for the maps (overridable by the loader).
pub mod capacity {
    /// Threads tracked at once (`THREADS`). libbpf-tools uses 10240 and drops silently.
    pub const THREADS: u32 = 65_536;
    /// Distinct aggregate lines (`OFFCPU_TOTALS`).
    pub const TOTALS: u32 = 65_536;
    /// Distinct stacks (`STACKS`).
    pub const STACKS: u32 = 16_384;
    /// Filter entries for pids and tids.
    pub const FILTER: u32 = 1_024;
    /// Processes remembered as seen (`SEEN_TGIDS`).
    pub const SEEN_TGIDS: u32 = 16_384;
    /// Bytes of the new-process ring buffer.
    pub const NEW_PROCESS_RING_BYTES: u32 = 64 * 1024;
    /// Python threads whose frames are walked (`PY_THREADS`).
    pub const PY_THREADS: u32 = 4_096;
    /// Distinct Python stacks (`PY_STACKS`).
    pub const PY_STACKS: u32 = 8_192;
    /// CPython processes whose thread lists BPF can search (`PY_PROCESSES`).
    pub const PY_PROCESSES: u32 = 1_024;
    /// Threads whose last lookup found nothing, remembered so that they are not looked up
    /// at every switch-out (`PY_THREAD_MISSES`, least recently used evicted).
    pub const PY_THREAD_MISSES: u32 = 4_096;
    /// Sites remembered as shipped (`KNOWN_SITES`).
    pub const KNOWN_SITES: u32 = 16_384;
    /// Bytes of the site ring buffer (`SITES`): about 200 full stack copies between drains.
    pub const SITE_RING_BYTES: u32 = 4 * 1024 * 1024;
    /// Threads whose last wakeup site is remembered (`WAKER_MEMO`, LRU), 40 bytes each.
    pub const WAKER_MEMO: u32 = 16_384;
    /// Processes whose code ranges BPF holds (`TEXT_RANGES`, LRU: a process evicted hashes
    /// its stacks by the code-like rule again); 1 KiB each.
    pub const TEXT_RANGES: u32 = 4_096;
}

const _: () = assert!(core::mem::size_of::<Config>() == 96);
const _: () = assert!(core::mem::size_of::<SyscallCtx>() == 40);
const _: () = assert!(core::mem::size_of::<UserRegs>() == 24);
const _: () = assert!(core::mem::size_of::<FailedLock>() == 24);
const _: () = assert!(core::mem::size_of::<PollHistory>() == 16);
const _: () = assert!(core::mem::size_of::<Waker>() == 40);
const _: () = assert!(core::mem::size_of::<InFlight>() == 160);
const _: () = assert!(core::mem::size_of::<StackMemo>() == 72);
const _: () = assert!(core::mem::size_of::<ThreadState>() == 312);
const _: () = assert!(core::mem::size_of::<OffCpuKey>() == 80);
const _: () = assert!(core::mem::size_of::<OffCpuValue>() == 56);
const _: () = assert!(core::mem::size_of::<PyThread>() == 48);
const _: () = assert!(PY_FRAME_HEADER_MAX_BYTES == core::mem::size_of::<PyFrameHeader>());
const _: () = assert!(core::mem::size_of::<PyProcess>() == 88);
const _: () = assert!(core::mem::size_of::<PyTstateSpan>() == PY_TSTATE_SPAN_BYTES);
const _: () = assert!(core::mem::size_of::<PyStack>() == 8 + 16 * PY_MAX_DEPTH);
const _: () = assert!(core::mem::size_of::<StackTrace>() == 8 + 8 * MAX_STACK_DEPTH);
const _: () = assert!(core::mem::size_of::<SiteHeader>() == 56);
const _: () = assert!(core::mem::size_of::<SiteCopy>() < 32 * 1024); // per-CPU value limit

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made only of integers and integer arrays, with
    // explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ThreadState {}
    unsafe impl aya::Pod for OffCpuKey {}
    unsafe impl aya::Pod for OffCpuValue {}
    unsafe impl aya::Pod for StackTrace {}
    unsafe impl aya::Pod for PyThread {}
    unsafe impl aya::Pod for PyStack {}
    unsafe impl aya::Pod for PyProcess {}
    unsafe impl aya::Pod for SiteHeader {}
    unsafe impl aya::Pod for TextRanges {}
}
