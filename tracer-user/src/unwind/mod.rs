//! DWARF CFI unwinding of blocked threads' user stacks, from user space.
//!
//! # Why
//!
//! The BPF side records user stacks with `bpf_get_stack`, which only follows frame pointers.
//! Debian's glibc is built without them, so when a thread blocks inside e.g.
//! `pthread_mutex_lock`, the frame-pointer walk skips straight from glibc to whatever frame
//! record happens to be in rbp, and the caller of the lock is lost. A thread that stays
//! blocked does not touch its stack, though, so user space can take its time: read the
//! stack through `/proc/PID/mem` and unwind it with the CFI in `.eh_frame` of every
//! mapped module, using [`framehop`].
//!
//! # Modules
//!
//! Every executable file mapping in `/proc/PID/maps` becomes a framehop module, its file
//! opened by the process registry through `/proc/PID/map_files` (deleted files, other mount
//! namespaces) or by path. ELF files are parsed once per (dev, inode) and shared across
//! processes; each process gets its own framehop unwinder and rule cache, rebuilt when the
//! set of executable mappings changes (exec, dlopen, dlclose). The `[vdso]` image is read
//! from the process's memory.
//!
//! # Unknown rbp
//!
//! Registers taken from `/proc/PID/task/TID/syscall` have ip and sp but not rbp. glibc's
//! functions have rsp-based CFA rules, so CFI unwinds them without rbp; but the first
//! caller compiled with frame pointers has `CFA = rbp + 16`. The walk passes framehop an
//! impossible (non-canonical) rbp and refuses stack reads near it, so any rule that needs
//! rbp fails instead of reading garbage. When CFI fails, the walk:
//!
//! 1. with rbp known, takes one frame-pointer step (`[rbp]` = caller's rbp,
//!    `[rbp + 8]` = return address), if the return address is plausible;
//! 2. otherwise scans upward from sp, at most 32 KiB and not past the
//!    stack's mapping, for a frame record: a word that is 0 or an 8-aligned pointer
//!    higher into the same stack (the saved rbp), followed by a plausible return address,
//!    and resumes at (that return address, record + 16, saved rbp).
//!
//! A plausible return address lies in executable memory right after a call instruction:
//! `E8 rel32` whose target is also code, or `[REX] FF /2` in any addressing form.
//!
//! Limits of the heuristic: the record found is the innermost one above sp, which is the
//! current function's only if that function keeps a frame pointer; functions between
//! sp and that record with neither CFI nor frame pointers are skipped. Stale data in a
//! frame's locals (an old frame record, a saved code pointer after a stack pointer) can be
//! taken for a record and yield a wrong caller; requiring a call before the return address
//! makes this rare, not impossible. Code without CFI (JIT code, stripped `.eh_frame`)
//! unwinds only through frame pointers and the scan. The walk ends at `max_frames`, at a
//! zero return address or CFI end of stack, or when sp fails to increase, so it always
//! terminates.

mod elf;
mod memory;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Unwinder as _};

use elf::{Data, ElfCache, ElfUnwindInfo};
use memory::{CopiedStack, ProcMem};
use scan::Cursor;

use crate::model::StackCopy;
pub(crate) use crate::model::UserRegs;
use crate::{
    inspect::InspectError,
    procs::{
        Procs,
        maps::{Mapping, Maps},
    },
};

/// rbp handed to framehop when the real one is unknown: non-canonical, so never a stack
/// address; reads near it are refused so that rbp-based rules fail visibly.
const UNKNOWN_BP: u64 = 0x8000_0000_0000_0000;
/// Reads within this distance of [`UNKNOWN_BP`] are refused.
const UNKNOWN_BP_SLACK: u64 = 1 << 32;
/// Largest `[vdso]` mapping that is read from memory.
const MAX_VDSO_BYTES: u64 = 1 << 20;

/// Why a stack could not be unwound at all, or why a module was left out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnwindError {
    /// The process exited (its /proc directory is gone, or its maps are empty).
    #[error("process {pid} is gone")]
    ProcessGone {
        /// The process.
        pid: u32,
    },
    /// `/proc/PID/mem` could not be opened (ptrace access denied).
    #[error("cannot open the memory of process {pid}")]
    MemUnreadable {
        /// The process.
        pid: u32,
        /// The error from /proc.
        #[source]
        source: InspectError,
    },
    /// A mapped file could not be opened or read; the module is left out.
    #[error("cannot open module {module}")]
    ModuleIo {
        /// Path of the module.
        module: String,
        /// The error from the file system.
        #[source]
        source: std::io::Error,
    },
    /// A mapped file is not a readable ELF file; the module is left out.
    #[error("cannot parse module {module}")]
    Elf {
        /// Path of the module.
        module: String,
        /// The parse error.
        #[source]
        source: object::Error,
    },
    /// A mapped file is of a kind the unwinder does not handle; the module is left out.
    #[error("unsupported module {module}: {reason}")]
    UnsupportedModule {
        /// Path of the module.
        module: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One process's framehop unwinder, valid for one set of executable mappings.
struct ProcessUnwinder {
    code_hash: u64,
    unwinder: UnwinderX86_64<Data>,
    cache: CacheX86_64,
    /// Keeps the shared ELF files alive for [`ElfCache::prune`].
    files: Vec<Arc<ElfUnwindInfo>>,
}

/// Unwinds user stacks of blocked threads with DWARF CFI (see the module docs). Maps, memory
/// and mapped files come from the process registry ([`crate::procs`]), read once per scan.
#[derive(Default)]
pub(crate) struct Unwinder {
    files: ElfCache,
    processes: HashMap<u32, ProcessUnwinder>,
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder")
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl Unwinder {
    /// Unwinds a thread that is blocked (its stack memory is stable while we read it).
    /// Returns addresses innermost first, in the same convention as `bpf_get_stack`: the
    /// first is `ip`, the rest are return addresses (not adjusted by -1). A stack that
    /// cannot be followed (garbage sp, code without CFI) is returned short, not as an error.
    pub(crate) fn unwind(
        &mut self,
        procs: &mut Procs,
        pid: u32,
        regs: UserRegs,
        max_frames: usize,
    ) -> Result<Vec<u64>, UnwindError> {
        let maps = procs
            .maps(pid)
            .filter(|maps| !maps.is_empty())
            .ok_or(UnwindError::ProcessGone { pid })?;
        let memory = procs.memory(pid).map_err(|source| match source.is_gone() {
            true => UnwindError::ProcessGone { pid },
            false => UnwindError::MemUnreadable { pid, source },
        })?;
        let mut mem = ProcMem::new(memory);
        Ok(self.walk(procs, pid, &maps, &mut mem, regs, max_frames).0)
    }

    /// Unwinds a stack copy BPF took when a thread blocked (`--unwind dwarf|auto`): the
    /// stack is read from the copy only, code from the process while it lives. Returns the
    /// addresses (as [`Unwinder::unwind`]) and whether the walk reached the stack's root (CFI
    /// said there is no caller), rather than running out of copy or rules.
    pub(crate) fn unwind_copy(
        &mut self,
        procs: &mut Procs,
        copy: &StackCopy,
        max_frames: usize,
    ) -> Result<(Vec<u64>, bool), UnwindError> {
        let pid = copy.pid;
        let maps = procs
            .maps(pid)
            .filter(|maps| !maps.is_empty())
            .ok_or(UnwindError::ProcessGone { pid })?;
        let copy_end = copy.copy_start + copy.bytes.len() as u64;
        let refused = maps
            .find(copy.regs.sp)
            .map_or(copy.copy_start..copy_end, |m| m.start..m.end);
        let copied = CopiedStack {
            start: copy.copy_start,
            bytes: &copy.bytes,
            refused,
        };
        let mut mem = ProcMem::over_copy(copied, procs.memory(pid).ok());
        Ok(self.walk(procs, pid, &maps, &mut mem, copy.regs, max_frames))
    }

    /// Drops what is cached for `pid` (call when the process exits), and ELF files that no
    /// remaining process maps.
    pub(crate) fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.files.prune();
    }

    /// Walks from `regs` with `pid`'s unwinder over `mem`: the addresses, and whether the walk
    /// reached the stack's root.
    fn walk(
        &mut self,
        procs: &Procs,
        pid: u32,
        maps: &Maps,
        mem: &mut ProcMem,
        regs: UserRegs,
        max_frames: usize,
    ) -> (Vec<u64>, bool) {
        let process = self.process(procs, pid, maps, mem);
        let mut walk = Walk {
            unwinder: &process.unwinder,
            cache: &mut process.cache,
            maps,
            mem,
            reached_root: false,
        };
        let frames = walk.run(regs, max_frames);
        (frames, walk.reached_root)
    }

    /// The unwinder for `pid`, (re)built if its executable mappings changed.
    fn process(
        &mut self,
        procs: &Procs,
        pid: u32,
        maps: &Maps,
        mem: &mut ProcMem,
    ) -> &mut ProcessUnwinder {
        match self.processes.entry(pid) {
            Entry::Occupied(entry) if entry.get().code_hash == maps.code_hash() => entry.into_mut(),
            Entry::Occupied(mut entry) => {
                entry.insert(build_process(&mut self.files, procs, maps, mem));
                entry.into_mut()
            }
            Entry::Vacant(entry) => entry.insert(build_process(&mut self.files, procs, maps, mem)),
        }
    }
}

/// A framehop unwinder with a module per executable mapping that has CFI.
fn build_process(
    files: &mut ElfCache,
    procs: &Procs,
    maps: &Maps,
    mem: &mut ProcMem,
) -> ProcessUnwinder {
    let mut process = ProcessUnwinder {
        code_hash: maps.code_hash(),
        unwinder: UnwinderX86_64::new(),
        cache: CacheX86_64::new(),
        files: Vec::new(),
    };
    for mapping in maps.code() {
        let info = if mapping.is_file() {
            files.get(procs, mapping)
        } else if mapping.is_vdso() {
            read_vdso(mem, mapping).map(Arc::new)
        } else {
            continue;
        };
        // A module whose CFI cannot be read is left out: its frames are walked by frame
        // pointers or the frame-record scan instead.
        if let Ok(info) = info {
            add_module(&mut process, info, mapping);
        }
    }
    process
}

/// Registers the module for `mapping` (if the file has CFI and a segment covering it).
fn add_module(process: &mut ProcessUnwinder, info: Arc<ElfUnwindInfo>, mapping: &Mapping) {
    if !info.has_cfi() {
        return;
    }
    if let Some(module) = info.module(mapping) {
        process.unwinder.add_module(module);
        process.files.push(info);
    }
}

/// Parses the `[vdso]` image out of the process's memory.
fn read_vdso(mem: &mut ProcMem, mapping: &Mapping) -> Result<ElfUnwindInfo, UnwindError> {
    let unsupported = |reason| UnwindError::UnsupportedModule {
        module: mapping.path.clone(),
        reason,
    };
    let len = mapping.end - mapping.start;
    if len > MAX_VDSO_BYTES {
        return Err(unsupported("[vdso] mapping too large"));
    }
    let mut bytes = vec![0u8; len as usize];
    if !mem.read_bytes(mapping.start, &mut bytes) {
        return Err(unsupported("[vdso] unreadable"));
    }
    elf::parse_vdso(&bytes)
}

/// One stack walk over one process's memory.
struct Walk<'a, 'm> {
    unwinder: &'a UnwinderX86_64<Data>,
    cache: &'a mut CacheX86_64,
    maps: &'a Maps,
    mem: &'a mut ProcMem<'m>,
    /// Set when CFI said the last frame has no caller (the thread's or process's root), not
    /// merely that a return address read zero.
    reached_root: bool,
}

impl Walk<'_, '_> {
    /// Collects up to `max_frames` addresses; every step must move sp strictly up. Each step
    /// is by CFI, else a frame-pointer step, else a frame-record scan (module docs).
    fn run(&mut self, regs: UserRegs, max_frames: usize) -> Vec<u64> {
        let mut frames = Vec::new();
        if max_frames == 0 {
            return frames;
        }
        frames.push(regs.ip);
        let mut cursor = Cursor {
            ip: regs.ip,
            sp: regs.sp,
            bp: regs.bp,
        };
        let mut first = true;
        while frames.len() < max_frames {
            let next = match self.cfi_step(cursor, first) {
                Ok(next) => next,
                Err(()) => scan::frame_pointer_step(self.mem, self.maps, cursor)
                    .or_else(|| scan::find_frame_record(self.mem, self.maps, cursor.sp)),
            };
            let Some(next) = next else {
                break;
            };
            if next.ip == 0 || next.sp <= cursor.sp {
                break;
            }
            frames.push(next.ip);
            cursor = next;
            first = false;
        }
        frames
    }

    /// One framehop step. `Ok(None)` is a proper end of stack; `Err` means CFI (or its
    /// frame-pointer fallback) could not produce a plausible caller.
    fn cfi_step(&mut self, cursor: Cursor, first: bool) -> Result<Option<Cursor>, ()> {
        let address = if first {
            FrameAddress::from_instruction_pointer(cursor.ip)
        } else {
            FrameAddress::from_return_address(cursor.ip).ok_or(())?
        };
        let mut regs = UnwindRegsX86_64::new(cursor.ip, cursor.sp, cursor.bp.unwrap_or(UNKNOWN_BP));
        let mem = &mut *self.mem;
        let mut last_read = None;
        let mut read_stack = |addr: u64| {
            if addr.abs_diff(UNKNOWN_BP) < UNKNOWN_BP_SLACK {
                return Err(());
            }
            let value = mem.read_u64(addr).ok_or(())?;
            last_read = Some(value);
            Ok(value)
        };
        let ret = self
            .unwinder
            .unwind_frame(address, &mut regs, self.cache, &mut read_stack)
            .map_err(|_| ())?;
        let Some(ret) = ret else {
            // framehop also ends at a zero return address read from the stack: an end, but
            // not evidence of the stack's root (a zeroed or truncated stack reads that way).
            self.reached_root = last_read != Some(0);
            return Ok(None);
        };
        if !self.maps.is_code(ret) {
            return Err(());
        }
        Ok(Some(Cursor {
            ip: ret,
            sp: regs.sp(),
            bp: Some(regs.bp()).filter(|&bp| bp != UNKNOWN_BP),
        }))
    }
}
