//! Stacks: as the kernel recorded them (addresses) and as people read them (frames).

use serde::{Deserialize, Serialize};

use super::UserRegs;

/// A stack as recorded in the kernel: instruction pointers, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum RawStack {
    /// No stack exists or none was asked for (a kernel thread's user stack, `-K`, `-U`).
    #[default]
    None,
    /// A stack should exist but could not be recorded (counted in the loss counters).
    Missed,
    /// The addresses, innermost first.
    Frames(Vec<u64>),
}

/// What kind of code a frame is in. Exporters colour and label frames by it, and the runtimes
/// that add interpreted frames (`crate::runtime`) mark theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FrameKind {
    /// The kernel.
    Kernel,
    /// Native user code: an executable, a shared object, the vDSO.
    #[default]
    Native,
    /// Code generated at run time (anonymous executable memory: JIT compilers).
    Jit,
    /// A function of an interpreted language, read from the interpreter's memory.
    Interpreted {
        /// The runtime that reported it (`cpython`, ...).
        runtime: String,
    },
}

impl FrameKind {
    /// Short name, as in JSON reports: `kernel`, `native`, `jit`, `interpreted`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Native => "native",
            Self::Jit => "jit",
            Self::Interpreted { .. } => "interpreted",
        }
    }
}

/// One resolved stack frame. An address inside inlined code yields several frames with the
/// same `addr`: the inlined callees (marked `inlined`) before the function they were
/// inlined into.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Frame {
    /// The address as recorded (not adjusted for return addresses).
    pub addr: u64,
    /// Demangled function name, if known.
    pub name: Option<String>,
    /// Path of the executable, shared object or kernel module, if known.
    pub module: Option<String>,
    /// Offset from the symbol start if `name` is known, else offset in `module` (file offset).
    pub offset: u64,
    /// Source file, if debug info was found.
    pub file: Option<String>,
    /// Source line, if debug info was found.
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// What kind of code it is.
    pub kind: FrameKind,
}

impl Frame {
    /// A frame with only a function name (a kernel frame from `/proc/PID/task/TID/stack`,
    /// test fixtures).
    pub(crate) fn named(name: impl Into<String>, kind: FrameKind) -> Self {
        Self {
            name: Some(name.into()),
            kind,
            ..Self::default()
        }
    }
}

/// A copy of the top of a user stack with the registers at the time (`--unwind dwarf|auto`):
/// BPF ships one per new site, user space unwinds it once with DWARF CFI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StackCopy {
    /// The site id the aggregate keys by (`tracer_common::SITE_ID_TAG` set).
    pub site_id: u64,
    /// The process.
    pub pid: u32,
    /// Registers when the thread left the CPU.
    pub regs: UserRegs,
    /// BPF's frame-pointer walk of the same stack (`--unwind auto`), else `RawStack::None`.
    pub frame_pointer_walk: RawStack,
    /// Address of `bytes[0]`.
    pub copy_start: u64,
    /// The stack memory from `copy_start`.
    pub bytes: Vec<u8>,
}
