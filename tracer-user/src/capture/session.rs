//! Loading, configuring and attaching the BPF programs, and the live session around them.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::BtfTracePoint,
};
use tracer_common::{
    Config, OffCpuKey, OffCpuValue, PyProcess, PyStack, PyThread, SiteHeader, StackTrace,
    TextRanges, ThreadState, capacity, flags,
};

use super::{
    CaptureConfig, CaptureError, ThreadKinds, UnwindMode, btf::KernelOffsets, drain,
    evict::StackSweeper,
};
use crate::{
    clock::monotonic_ns,
    model::{Capture, Counters, InFlightWait, RawPyFrame, RawStack, StackCopy, UserRegs},
    procs,
};

/// The BPF object built by `build.rs` (empty when bpf-linker was missing).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stallwatch-bpf"));

/// Every program in the object; each is a `tp_btf` program named after its tracepoint. The
/// syscall hooks are attached only with [`CaptureConfig::syscall_hooks`] and `sched_waking`
/// only with [`CaptureConfig::wakers`]: a hook nobody needs still costs every event.
const PROGRAMS: [&str; 7] = [
    "sched_process_fork",
    "sched_switch",
    "sched_waking",
    "sys_enter",
    "sys_exit",
    "sched_process_exit",
    "sched_process_exec",
];

/// Capability bits in `/proc/self/status` `CapEff` (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// A running capture: programs attached, maps open.
pub(crate) struct Session {
    ebpf: Option<Ebpf>,
    filter_tgids: HashMap<MapData, u32, u8>,
    py_threads: HashMap<MapData, u32, PyThread>,
    text_ranges: HashMap<MapData, u32, TextRanges>,
    py_processes: HashMap<MapData, u32, PyProcess>,
    new_processes: RingBuf<MapData>,
    sites: RingBuf<MapData>,
    /// Site records too short to hold their header (never expected; counted as lost sites).
    malformed_sites: u64,
    maps: drain::Maps,
    sweeper: StackSweeper,
    started: Instant,
    /// How long the programs were attached, once [`Session::detach`] ran.
    traced_for: Option<Duration>,
}

impl Session {
    /// Checks privileges, BTF and filters, loads the programs with `config` and attaches them.
    pub(crate) fn start(config: &CaptureConfig) -> Result<Self, CaptureError> {
        if !has_bpf_privileges() {
            return Err(CaptureError::NoPrivileges);
        }
        if BPF_OBJECT.is_empty() {
            return Err(CaptureError::BpfNotBuilt);
        }
        for &pid in &config.pids {
            if !procs::exists(pid) {
                return Err(CaptureError::PidNotFound(pid));
            }
        }
        for &tid in &config.tids {
            if !procs::exists(tid) {
                return Err(CaptureError::TidNotFound(tid));
            }
        }
        let max = capacity::FILTER;
        if config.pids.len() > max as usize || config.tids.len() > max as usize {
            return Err(CaptureError::TooManyFilters { max });
        }
        let cgroup_id = match &config.cgroup {
            Some(path) => Some(cgroup_id(path)?),
            None => None,
        };
        let offsets =
            KernelOffsets::from_running_kernel().map_err(CaptureError::KernelUnsupported)?;
        let kernel_config = kernel_config(config, &offsets, cgroup_id);

        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &kernel_config, true)
            .map_max_entries("STACKS", config.stack_storage_size.max(1))
            .load(BPF_OBJECT)
            .map_err(CaptureError::Load)?;

        let mut filter_tgids: HashMap<MapData, u32, u8> = take(&mut ebpf, "FILTER_TGIDS")?;
        for &pid in &config.pids {
            insert_filter(&mut filter_tgids, pid, "FILTER_TGIDS")?;
        }
        let mut filter_tids: HashMap<MapData, u32, u8> = take(&mut ebpf, "FILTER_TIDS")?;
        for &tid in &config.tids {
            insert_filter(&mut filter_tids, tid, "FILTER_TIDS")?;
        }

        let btf = aya::Btf::from_sys_fs()
            .map_err(|e| CaptureError::KernelUnsupported(super::btf::BtfError::Load(e)))?;
        for name in PROGRAMS {
            let needed = match name {
                "sys_enter" | "sys_exit" => config.syscall_hooks,
                "sched_waking" => config.wakers,
                _ => true,
            };
            if !needed {
                continue;
            }
            let attach = |ebpf: &mut Ebpf| -> Result<(), aya::programs::ProgramError> {
                let program: &mut BtfTracePoint = ebpf
                    .program_mut(name)
                    .ok_or(aya::programs::ProgramError::UnexpectedProgramType)?
                    .try_into()?;
                program.load(name, &btf)?;
                program.attach()?;
                Ok(())
            };
            attach(&mut ebpf).map_err(|source| CaptureError::Attach {
                program: name,
                source,
            })?;
        }

        let new_processes = take::<RingBuf<MapData>>(&mut ebpf, "NEW_PROCESSES")?;
        let sites = take::<RingBuf<MapData>>(&mut ebpf, "SITES")?;
        let maps = drain::Maps {
            totals: take::<HashMap<MapData, OffCpuKey, OffCpuValue>>(&mut ebpf, "OFFCPU_TOTALS")?,
            stacks: take::<HashMap<MapData, u64, StackTrace>>(&mut ebpf, "STACKS")?,
            threads: take::<HashMap<MapData, u32, ThreadState>>(&mut ebpf, "THREADS")?,
            counters: take::<PerCpuArray<MapData, u64>>(&mut ebpf, "COUNTERS")?,
            py_stacks: take::<HashMap<MapData, u64, PyStack>>(&mut ebpf, "PY_STACKS")?,
        };
        let py_threads = take::<HashMap<MapData, u32, PyThread>>(&mut ebpf, "PY_THREADS")?;
        let text_ranges = take::<HashMap<MapData, u32, TextRanges>>(&mut ebpf, "TEXT_RANGES")?;
        let py_processes = take::<HashMap<MapData, u32, PyProcess>>(&mut ebpf, "PY_PROCESSES")?;
        Ok(Self {
            ebpf: Some(ebpf),
            filter_tgids,
            py_threads,
            text_ranges,
            py_processes,
            new_processes,
            sites,
            malformed_sites: 0,
            maps,
            sweeper: StackSweeper::default(),
            started: Instant::now(),
            traced_for: None,
        })
    }

    /// Adds a process to the `-p` filter while tracing (for `-- COMMAND`).
    pub(crate) fn add_process(&mut self, pid: u32) -> Result<(), CaptureError> {
        insert_filter(&mut self.filter_tgids, pid, "FILTER_TGIDS")
    }

    /// Makes the Python threads of process `pid` exactly `threads` (tid and where its frames
    /// are): new ones are added, changed ones updated, those of `pid` no longer listed removed
    /// (`--python`).
    pub(crate) fn set_python_threads(
        &mut self,
        pid: u32,
        threads: &[(u32, PyThread)],
    ) -> Result<(), CaptureError> {
        let err = |source| CaptureError::Map {
            name: "PY_THREADS",
            source,
        };
        let stale: Vec<u32> = self
            .py_threads
            .iter()
            .filter_map(Result::ok)
            .filter(|(tid, t)| t.tgid == pid && !threads.iter().any(|(n, _)| n == tid))
            .map(|(tid, _)| tid)
            .collect();
        for tid in stale {
            let _ = self.py_threads.remove(&tid);
        }
        for (tid, thread) in threads {
            if self.py_threads.get(tid, 0).ok().as_ref() != Some(thread) {
                self.py_threads.insert(tid, thread, 0).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Tells BPF where process `pid`'s code is, for its site ids (`--unwind dwarf|auto`).
    pub(crate) fn set_text_ranges(
        &mut self,
        pid: u32,
        ranges: &TextRanges,
    ) -> Result<(), CaptureError> {
        self.text_ranges
            .insert(pid, ranges, 0)
            .map_err(|source| CaptureError::Map {
                name: "TEXT_RANGES",
                source,
            })
    }

    /// Tells BPF where the thread lists of CPython process `pid` are, so that it finds threads
    /// started since the last [`Session::set_python_threads`]; `None` forgets the process
    /// (`--python`).
    pub(crate) fn set_python_process(
        &mut self,
        pid: u32,
        process: Option<&PyProcess>,
    ) -> Result<(), CaptureError> {
        let Some(process) = process else {
            let _ = self.py_processes.remove(&pid);
            return Ok(());
        };
        if self.py_processes.get(&pid, 0).ok().as_ref() != Some(process) {
            self.py_processes
                .insert(pid, process, 0)
                .map_err(|source| CaptureError::Map {
                    name: "PY_PROCESSES",
                    source,
                })?;
        }
        Ok(())
    }

    /// Python stacks stored since the last call, by process (`--python`): ids already in
    /// `seen` are skipped, new ones added to it.
    pub(crate) fn new_python_stacks(
        &self,
        seen: &mut std::collections::HashSet<u64>,
    ) -> Vec<(u32, Vec<RawPyFrame>)> {
        let fresh: Vec<u64> = self
            .maps
            .py_stacks
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !seen.contains(id))
            .collect();
        let mut stacks = Vec::with_capacity(fresh.len());
        for id in fresh {
            if let Ok(stack) = self.maps.py_stacks.get(&id, 0) {
                seen.insert(id);
                stacks.push((stack.tgid, drain::python_frames(&stack)));
            }
        }
        stacks
    }

    /// Processes that appeared or exec'd since the last call: cache their maps now.
    pub(crate) fn new_processes(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        while let Some(item) = self.new_processes.next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&item[..4.min(item.len())]) {
                pids.push(u32::from_ne_bytes(bytes));
            }
        }
        pids
    }

    /// Stack copies of the sites that appeared since the last call (`--unwind dwarf|auto`):
    /// unwind them while their processes live.
    pub(crate) fn new_sites(&mut self) -> Vec<StackCopy> {
        let mut copies = Vec::new();
        while let Some(item) = self.sites.next() {
            match parse_site(&item) {
                Some((header, bytes)) => copies.push(StackCopy {
                    site_id: header.site_id,
                    pid: header.tgid,
                    regs: UserRegs {
                        ip: header.ip,
                        sp: header.sp,
                        bp: Some(header.bp),
                    },
                    frame_pointer_walk: drain::stored_stack(&self.maps.stacks, header.fp_stack_id),
                    copy_start: header.copy_start,
                    bytes: bytes.to_vec(),
                }),
                None => self.malformed_sites += 1,
            }
        }
        copies
    }

    /// Waits in progress that began at least `min_age` ago (`watch`), read while tracing, and
    /// the tids of every thread with a wait in progress, however recent.
    pub(crate) fn in_flight(
        &self,
        min_age: Duration,
    ) -> Result<(Vec<InFlightWait>, Vec<u32>), CaptureError> {
        let before = monotonic_ns().saturating_sub(min_age.as_nanos() as u64);
        drain::read_in_flight(&self.maps, before)
    }

    /// Deletes stored stacks that no thread state has referred to over two calls (`watch`,
    /// which needs only the stacks of waits in flight); returns how many.
    pub(crate) fn sweep_stacks(&mut self) -> usize {
        self.sweeper
            .sweep(&mut self.maps.stacks, &self.maps.threads)
    }

    /// Event and loss counters so far.
    pub(crate) fn counters(&self) -> Counters {
        drain::counters(&self.maps)
    }

    /// Detaches every program: nothing is recorded after this, so the sites and new processes
    /// read next are the last ones.
    pub(crate) fn detach(&mut self) {
        if self.ebpf.take().is_some() {
            self.traced_for = Some(self.started.elapsed());
        }
    }

    /// Detaches every program (if [`Session::detach`] did not), then drains the maps: completed waits from the aggregate, and
    /// waits still in progress charged up to now.
    ///
    /// `site_stacks` holds the frames of every site received (from [`Session::new_sites`],
    /// unwound by the caller, the last ones after [`Session::detach`]).
    pub(crate) fn finish(
        mut self,
        site_stacks: &std::collections::HashMap<u64, RawStack>,
    ) -> Result<Capture, CaptureError> {
        // Dropping the object closes the programs and their links: nothing is charged after
        // this point, so the drain reads a consistent snapshot.
        self.detach();
        let duration = self.traced_for.unwrap_or_else(|| self.started.elapsed());
        let now_ns = monotonic_ns();
        let mut capture = drain::read(&self.maps, now_ns, duration, site_stacks)?;
        capture.counters.sites_missing += self.malformed_sites;
        Ok(capture)
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(map).map_err(|source| CaptureError::Map { name, source })
}

fn insert_filter(
    map: &mut HashMap<MapData, u32, u8>,
    id: u32,
    name: &'static str,
) -> Result<(), CaptureError> {
    map.insert(id, 1, 0)
        .map_err(|source| CaptureError::Map { name, source })
}

/// The `CONFIG` global for `config`.
fn kernel_config(
    config: &CaptureConfig,
    offsets: &KernelOffsets,
    cgroup_id: Option<u64>,
) -> Config {
    let mut f = 0;
    if !config.pids.is_empty() || config.filter_processes {
        f |= flags::FILTER_TGIDS;
    }
    if !config.tids.is_empty() {
        f |= flags::FILTER_TIDS;
    }
    match config.thread_kinds {
        ThreadKinds::All => {}
        ThreadKinds::UserOnly => f |= flags::USER_THREADS_ONLY,
        ThreadKinds::KernelOnly => f |= flags::KERNEL_THREADS_ONLY,
    }
    if config.kernel_stacks {
        f |= flags::KERNEL_STACKS;
    }
    if config.user_stacks {
        f |= flags::USER_STACKS;
    }
    if config.wakers {
        f |= flags::WAKERS;
    }
    if config.stack_memo {
        f |= flags::STACK_MEMO;
    }
    if config.filter_processes {
        f |= flags::FOLLOW_FORKS;
    }
    if cgroup_id.is_some() {
        f |= flags::FILTER_CGROUP;
    }
    if config.in_flight_only {
        f |= flags::IN_FLIGHT_ONLY;
    }
    if config.user_regs {
        f |= flags::USER_REGS;
    }
    if config.python_stacks {
        f |= flags::PYTHON_STACKS;
    }
    if !config.syscall_hooks {
        f |= flags::SYSCALLS_FROM_REGS;
    }
    match config.unwind {
        UnwindMode::Fp => {}
        UnwindMode::Dwarf => f |= flags::STACK_COPIES,
        UnwindMode::Auto => f |= flags::STACK_COPIES | flags::FP_WITH_COPIES,
    }
    Config {
        min_block_ns: config.min_block_us.saturating_mul(1000),
        max_block_ns: config
            .max_block_us
            .map_or(u64::MAX, |us| us.saturating_mul(1000)),
        cgroup_id: cgroup_id.unwrap_or(0),
        state_mask: config.state_mask,
        flags: f,
        task_pid_off: offsets.task_pid,
        task_flags_off: offsets.task_flags,
        task_tgid_off: offsets.task_tgid,
        stack_copy_bytes: config.stack_copy_bytes,
        regs: offsets.regs,
    }
}

/// A site record: its header and the copied bytes (`copy_len` of them, or what arrived).
fn parse_site(record: &[u8]) -> Option<(SiteHeader, &[u8])> {
    let header_len = std::mem::size_of::<SiteHeader>();
    let head = record.get(..header_len)?;
    // SAFETY: `SiteHeader` is `repr(C)` plain integers (every bit pattern valid), and `head`
    // holds exactly its size; the read is unaligned-safe.
    let header: SiteHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    let rest = &record[header_len..];
    let len = (header.copy_len as usize).min(rest.len());
    Some((header, &rest[..len]))
}

/// The cgroup v2 id of a cgroup directory: its inode number (what `bpf_get_current_cgroup_id`
/// returns).
fn cgroup_id(path: &Path) -> Result<u64, CaptureError> {
    let err = |source| CaptureError::Cgroup {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    Ok(meta.ino())
}

/// Root, or CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
fn has_bpf_privileges() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}
