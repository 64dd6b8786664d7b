//! Kernel capture: the only module that knows aya.
//!
//! [`Session::start`] checks privileges and BTF, loads the BPF object built by `build.rs`,
//! writes the [`CaptureConfig`] into its `CONFIG` global and filter maps, and attaches every
//! program. While tracing, [`Session::new_processes`] reports processes to cache for
//! symbolization. [`Session::finish`] detaches and drains the maps into a [`crate::model::Capture`].

pub(crate) mod btf;
mod drain;
mod evict;
mod session;

use std::path::PathBuf;

pub(crate) use session::Session;

/// Which threads to trace by kind (`-u` / `-k`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadKinds {
    /// User and kernel threads.
    #[default]
    All,
    /// User threads only (`--user-threads-only`).
    UserOnly,
    /// Kernel threads only (`--kernel-threads-only`).
    KernelOnly,
}

/// How user stacks are unwound (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers only, walked in the kernel (`bpf_get_stack`).
    Fp,
    /// DWARF CFI: the top of the user stack is copied once per new site and unwound in user
    /// space.
    Dwarf,
    /// Both on each new site; per site, the DWARF unwind when it reached the stack's root,
    /// else the longer of the two.
    #[default]
    Auto,
}

/// What to capture; every filter here is applied in the kernel.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Processes to trace (`-p`); with `tids`, a thread matching either is traced.
    pub pids: Vec<u32>,
    /// Threads to trace (`-t`).
    pub tids: Vec<u32>,
    /// Restrict to processes added later with [`Session::add_process`] even if `pids` is empty,
    /// and follow their forks (`-- COMMAND`).
    pub filter_processes: bool,
    /// cgroup v2 directory whose threads alone are traced (`--cgroup`).
    pub cgroup: Option<PathBuf>,
    /// Shortest wait charged, microseconds (`-m`).
    pub min_block_us: u64,
    /// Longest wait charged, microseconds (`-M`).
    pub max_block_us: Option<u64>,
    /// `tracer_common::state` bits of the states traced (`--state`).
    pub state_mask: u32,
    /// User/kernel thread selection.
    pub thread_kinds: ThreadKinds,
    /// Record kernel stacks.
    pub kernel_stacks: bool,
    /// Record user stacks.
    pub user_stacks: bool,
    /// Record who woke each wait (`--wakers`).
    pub wakers: bool,
    /// Reuse a thread's stacks when it blocks again at the same place.
    pub stack_memo: bool,
    /// Capacity of the stack store (`--stack-storage-size`).
    pub stack_storage_size: u32,
    /// Keep waits in flight only, aggregate nothing (`watch`).
    pub in_flight_only: bool,
    /// Record user registers at switch-out for user-space unwinding (`watch`).
    pub user_regs: bool,
    /// Walk the Python frames of the threads given to [`Session::set_python_threads`]
    /// (`--python`).
    pub python_stacks: bool,
    /// How blocked threads' user stacks are unwound (`profile --unwind`).
    pub unwind: UnwindMode,
    /// Bytes of user stack copied above sp per site (`--stack-copy-bytes`).
    pub stack_copy_bytes: u32,
    /// Follow syscalls from entry to exit with the `sys_enter`/`sys_exit` hooks (`watch`:
    /// when a syscall began, refused PI locks, poll returns). Without them (`profile`) the
    /// blocking syscall is read from the saved registers at switch-out, and no syscall on the
    /// host pays for a hook.
    pub syscall_hooks: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            pids: Vec::new(),
            tids: Vec::new(),
            filter_processes: false,
            cgroup: None,
            min_block_us: 1,
            max_block_us: None,
            state_mask: tracer_common::state::DEFAULT_MASK,
            thread_kinds: ThreadKinds::All,
            kernel_stacks: true,
            user_stacks: true,
            wakers: false,
            stack_memo: true,
            stack_storage_size: tracer_common::capacity::STACKS,
            in_flight_only: false,
            user_regs: false,
            python_stacks: false,
            unwind: UnwindMode::Fp,
            stack_copy_bytes: tracer_common::DEFAULT_STACK_COPY_BYTES,
            syscall_hooks: true,
        }
    }
}

/// Why a capture could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Not root and without CAP_BPF + CAP_PERFMON.
    #[error("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON); run with sudo")]
    NoPrivileges,
    /// The kernel has no BTF or lacks a needed type.
    #[error("this kernel is not supported")]
    KernelUnsupported(#[source] btf::BtfError),
    /// The binary was built without its BPF object.
    #[error(
        "this stallwatch was built without its BPF programs (bpf-linker was missing); run `cargo xtask setup` and rebuild"
    )]
    BpfNotBuilt,
    /// A `-p` process does not exist.
    #[error("no process with pid {0}")]
    PidNotFound(u32),
    /// A `-t` thread does not exist.
    #[error("no thread with tid {0}")]
    TidNotFound(u32),
    /// `--cgroup` is not a cgroup v2 directory.
    #[error("cannot use cgroup {path}")]
    Cgroup {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Loading the object failed (verifier, map creation...).
    #[error("loading the BPF programs failed")]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("attaching BPF program {program} failed")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or has an unexpected type.
    #[error("BPF map {name} cannot be used")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// Too many `-p`/`-t` values for the filter maps.
    #[error("too many processes or threads to filter on (at most {max})")]
    TooManyFilters {
        /// The limit.
        max: u32,
    },
}

impl CaptureError {
    /// True when the error is a permission problem: no privileges, or a system call somewhere
    /// in its chain of causes refused with EPERM or EACCES (a kernel that denies BPF to root,
    /// lockdown, a seccomp filter).
    pub fn is_permission(&self) -> bool {
        if matches!(self, Self::NoPrivileges) {
            return true;
        }
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            {
                return true;
            }
            cause = error.source();
        }
        false
    }
}
