//! Address -> function name, late and once per unique address, for processes alive or gone.
//!
//! Off-CPU stacks come out of the kernel as bare instruction pointers. Names are resolved
//! only after the trace, when the stacks are deduplicated, so each unique `(pid, address)` is
//! looked up once. The catch is that many traced processes (short `make` children, workers
//! that exit on a signal) are gone by then, and with them `/proc/PID/maps`. So the process
//! registry ([`crate::procs`]), told about the process while it lives, keeps its mappings and
//! opens each mapped file through `/proc/PID/map_files/` (which also works for processes in
//! another mount namespace). Later we translate an address to a file offset with that copy and
//! let blazesym resolve the offset in the open file (`Source::Elf` + `Input::FileOffset`).
//!
//! Why not blazesym's own `Cache::Process`: it does keep the VMAs past exit (checked with
//! blazesym 0.2.7: a cached, exited `sleep` resolves libc names), but only with
//! `map_files: false`, i.e. through paths as seen from *our* mount namespace (wrong for
//! containers, and for files replaced since); with the default `map_files: true` the whole
//! batch fails once `/proc/PID/map_files/` is gone. It also reports nothing for an address
//! it cannot name, while we want `module+0xOFF` rather than `[unknown]`. Owning the mapping
//! table covers all three with little code; blazesym's live-process source is still used
//! for the vDSO of processes that are alive.
//!
//! Code in anonymous memory (JIT compilers) is named by the runtime's perf map, which the
//! registry reads tolerantly and keeps after the process exits ([`procs::perfmap`]); what it
//! does not name stays an unknown `jit` frame, looked up again next time (the runtime may
//! append the name later).
//!
//! Stripped binaries resolve through their detached debug files (by build id or
//! `.gnu_debuglink`, [`debug_files`]), looked up from the open file and the path the process
//! mapped, so this works for files opened through `/proc/self/fd/N` too; without one, a frame
//! is `module+0xOFF` as before.
//!
//! Kernel addresses resolve through `/proc/kallsyms` (no vmlinux, no debug info needed).
//!
//! Haskell code is named by z-encoded linker symbols (`base_GHCziMVar_takeMVar1_info`);
//! [`zdecode`] turns them into `base:GHC.MVar.takeMVar1` here, where names are made, so every
//! output (watch, folded, SVG, recordings) shows the same decoded name. A name is decoded only
//! when it has the exact shape of a Haskell label *and* its file is a GHC binary
//! ([`zdecode::is_ghc_binary`], decided once per file): a C library's `Foo_bar_info` stays as
//! it is.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    ffi::OsStr,
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
};

use blazesym::{
    MaybeDefault, Pid,
    symbolize::{
        CodeInfo, Input, Sym, Symbolized,
        source::{Elf, Kernel, Process, Source},
    },
};

use debug_files::DebugFile;

use crate::{
    model::{Frame, FrameKind},
    procs::{
        self, MappedFile, Procs,
        maps::{FileKey, Mapping, Maps},
    },
};

/// See [`Symbolizer::forget_process`].
const UNUSED_FILES_CLOSED_AT: usize = 64;

/// A blazesym symbolizer with demangling, source lines and inlined functions.
fn engine() -> blazesym::symbolize::Symbolizer {
    blazesym::symbolize::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// Resolves kernel and user addresses to [`Frame`]s, caching per unique address. The
/// processes' mappings and the handles to their files come from the registry
/// ([`crate::procs`]), which keeps them after a process exits.
pub(crate) struct Symbolizer {
    /// The blazesym engine (caches parsed ELF and kallsyms data itself).
    inner: blazesym::symbolize::Symbolizer,
    /// Mapped files handed to blazesym by their `/proc/self/fd/N` path. Held here as long as
    /// the engine lives, so that a path blazesym cached (it caches by path) always names the
    /// same file, even after the registry closed its own handle.
    held: HashMap<FileKey, Arc<MappedFile>>,
    /// For each process, the code mappings its cached frames were resolved against.
    code_hashes: HashMap<u32, u64>,
    /// Resolved user frames by (pid, address, innermost?).
    user_cache: HashMap<(u32, u64, bool), Vec<Frame>>,
    /// Addresses (pid, lookup address) still outside every module after the maps were read
    /// again for them: not worth another read until the process's code changes.
    outside_modules: HashSet<(u32, u64)>,
    /// Resolved kernel frames by (address, innermost?).
    kernel_cache: HashMap<(u64, bool), Vec<Frame>>,
    /// Whether each file whose names looked like Haskell labels is a GHC binary.
    ghc_files: HashMap<FileKey, bool>,
    /// Each mapped file's detached debug file, if it has one.
    debug_files: HashMap<FileKey, Option<Arc<DebugFile>>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer that demangles Rust and C++ names and reports source lines and inlined
    /// functions where debug info exists.
    pub(crate) fn new() -> Self {
        Self {
            inner: engine(),
            held: HashMap::new(),
            code_hashes: HashMap::new(),
            user_cache: HashMap::new(),
            outside_modules: HashSet::new(),
            kernel_cache: HashMap::new(),
            ghc_files: HashMap::new(),
            debug_files: HashMap::new(),
        }
    }

    /// Drops what is cached for `pid` (its resolved addresses), for long runs where
    /// processes come and go (`watch`). Files no process of the registry maps any more are
    /// let go in batches of [`UNUSED_FILES_CLOSED_AT`]: blazesym caches parsed files by their
    /// `/proc/self/fd/N` path, so closing them (the number may be reused) also means starting
    /// blazesym afresh.
    pub(crate) fn forget_process(&mut self, pid: u32, procs: &Procs) {
        self.user_cache.retain(|&(p, _, _), _| p != pid);
        self.outside_modules.retain(|&(p, _)| p != pid);
        self.code_hashes.remove(&pid);
        let unused = self.held.keys().filter(|k| !procs.maps_file(k)).count();
        if unused >= UNUSED_FILES_CLOSED_AT {
            self.held.retain(|k, _| procs.maps_file(k));
            self.ghc_files.retain(|k, _| procs.maps_file(k));
            self.debug_files.retain(|k, _| procs.maps_file(k));
            self.inner = engine();
        }
    }

    /// Kernel addresses (innermost first) -> frames innermost first, inlined frames
    /// expanded (the inlined callee frames come before their caller, marked inlined).
    pub(crate) fn kernel(&mut self, addrs: &[u64]) -> Vec<Frame> {
        let missing: Vec<(u64, bool)> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| (addr, i == 0))
            .filter(|key| !self.kernel_cache.contains_key(key))
            .collect();
        if !missing.is_empty() {
            let lookup: Vec<u64> = missing
                .iter()
                .map(|&(addr, innermost)| lookup_addr(addr, innermost))
                .collect();
            let src = Source::Kernel(Kernel {
                kallsyms: MaybeDefault::Default,
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Default::default()
            });
            let results = self
                .inner
                .symbolize(&src, Input::AbsAddr(&lookup))
                .unwrap_or_default();
            for (i, &(addr, innermost)) in missing.iter().enumerate() {
                let frames = match results.get(i).and_then(Symbolized::as_sym) {
                    Some(sym) => sym_frames(addr, sym, None, FrameKind::Kernel),
                    None => vec![unknown(addr, None, 0, FrameKind::Kernel)],
                };
                self.kernel_cache.insert((addr, innermost), frames);
            }
        }
        addrs
            .iter()
            .enumerate()
            .flat_map(|(i, &addr)| self.kernel_cache[&(addr, i == 0)].clone())
            .collect()
    }

    /// User addresses of process `pid`, innermost first -> frames innermost first, inlined
    /// expanded. All but the innermost address are return addresses; `addr - 1` is looked up
    /// for them so that a call site resolves to the caller's line, but the frame reports the
    /// original address.
    pub(crate) fn user(&mut self, procs: &mut Procs, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.refresh_if_stale(procs, pid, addrs);
        let mut out = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let key = (pid, addr, i == 0);
            if let Some(frames) = self.user_cache.get(&key) {
                out.extend_from_slice(frames);
                continue;
            }
            let frames = self.resolve_user(procs, pid, addr, i == 0);
            // JIT code the perf map does not name yet may be named once the runtime appended
            // to it: looked up again next time.
            let unnamed_jit = frames
                .iter()
                .any(|f| f.kind == FrameKind::Jit && f.name.is_none());
            out.extend_from_slice(&frames);
            if !unnamed_jit {
                self.user_cache.insert(key, frames);
            }
        }
        out
    }

    /// Remembers `pid` in the registry if it was not, and re-reads its maps if an address to
    /// resolve lies outside every known mapping (remembered too early, e.g. at exec before the
    /// dynamic loader mapped the libraries, or before a dlopen) and the process still lives.
    /// Otherwise the maps stay as remembered: a process that exited, or whose pid another
    /// process took since, is symbolized with the maps it had. Cached frames resolved against
    /// other code mappings are dropped.
    /// Addresses that were still outside every module after a re-read (anonymous code, or
    /// no code at all) are remembered, so that they do not cause a re-read per stack.
    pub(crate) fn refresh_if_stale(&mut self, procs: &mut Procs, pid: u32, addrs: &[u64]) {
        if procs.get(pid).is_none() {
            procs.remember(pid);
        }
        let Some(process) = procs.get(pid) else {
            return;
        };
        let is_miss = |sym: &Self, maps: &Maps, i: usize, addr: u64| {
            let lookup = lookup_addr(addr, i == 0);
            !sym.user_cache.contains_key(&(pid, addr, i == 0))
                && !sym.outside_modules.contains(&(pid, lookup))
                && maps.module_at(lookup).is_none()
        };
        let has_miss = addrs
            .iter()
            .enumerate()
            .any(|(i, &addr)| is_miss(self, &process.maps, i, addr));
        let code_hash = match has_miss {
            true => procs.refresh(pid).map(|p| p.maps.code_hash()),
            false => Some(process.maps.code_hash()),
        };
        if let Some(code_hash) = code_hash
            && self.code_hashes.insert(pid, code_hash) != Some(code_hash)
        {
            self.user_cache.retain(|(p, _, _), _| *p != pid);
            self.outside_modules.retain(|&(p, _)| p != pid);
        }
        if has_miss && let Some(process) = procs.get(pid) {
            for (i, &addr) in addrs.iter().enumerate() {
                if is_miss(self, &process.maps, i, addr) {
                    self.outside_modules
                        .insert((pid, lookup_addr(addr, i == 0)));
                }
            }
        }
    }

    /// Resolves one user address without the cache.
    fn resolve_user(
        &mut self,
        procs: &mut Procs,
        pid: u32,
        addr: u64,
        innermost: bool,
    ) -> Vec<Frame> {
        let lookup = lookup_addr(addr, innermost);
        let process = procs.get(pid);
        let mapping = process.and_then(|p| p.maps.module_at(lookup)).cloned();
        let Some(m) = mapping.filter(|m| !m.is_anonymous()) else {
            // Anonymous memory: JIT code, named by the runtime's perf map if it wrote one.
            return vec![jit_frame(procs, pid, addr, lookup)];
        };
        let path = m.file_path().to_owned();
        let module_offset = addr - m.start + m.offset;
        if !m.is_file() {
            // [vdso] and friends: only resolvable through the live process' memory.
            return self
                .live_process_sym(pid, addr, lookup, FrameKind::Native)
                .unwrap_or_else(|| {
                    vec![unknown(
                        addr,
                        Some(&path),
                        addr - m.start,
                        FrameKind::Native,
                    )]
                });
        }
        let Some(elf) = self.elf_path(procs, &m) else {
            return vec![unknown(addr, Some(&path), module_offset, FrameKind::Native)];
        };
        let file_offset = lookup - m.start + m.offset;
        // The detached debug file first, if any (by the address the offset has), then the
        // binary itself.
        let in_debug_file = self.debug_file(&m, &elf).and_then(|debug| {
            let virt = debug.virt_offset(file_offset)?;
            let src = Source::Elf(Elf::new(debug.path.clone()));
            self.sym(&src, Input::VirtOffset(virt), addr, &path)
        });
        let in_binary = || {
            let src = Source::Elf(Elf::new(elf.clone()));
            self.sym(&src, Input::FileOffset(file_offset), addr, &path)
        };
        let mut frames = in_debug_file
            .or_else(in_binary)
            .unwrap_or_else(|| vec![unknown(addr, Some(&path), module_offset, FrameKind::Native)]);
        self.decode_haskell_names(&mut frames, &m, &elf);
        frames
    }

    /// One address of a file through blazesym, as frames of module `path`; `None` when it
    /// has no symbol there.
    fn sym(
        &self,
        src: &Source<'_>,
        input: Input<u64>,
        addr: u64,
        path: &str,
    ) -> Option<Vec<Frame>> {
        match self.inner.symbolize_single(src, input) {
            Ok(Symbolized::Sym(sym)) => Some(sym_frames(addr, &sym, Some(path), FrameKind::Native)),
            _ => None,
        }
    }

    /// The detached debug file of a mapped file (opened as `elf`), looked up once per file
    /// ([`debug_files`]).
    fn debug_file(&mut self, m: &Mapping, elf: &std::path::Path) -> Option<Arc<DebugFile>> {
        self.debug_files
            .entry(m.file_key())
            .or_insert_with(|| {
                let binary = fs::File::open(elf).ok()?;
                let mapped = std::path::Path::new(m.file_path());
                debug_files::find(&binary, mapped, debug_files::DEBUG_DIRS).map(Arc::new)
            })
            .clone()
    }

    /// Replaces z-encoded Haskell labels by their decoded names when the file is a GHC
    /// binary (see the module docs).
    fn decode_haskell_names(&mut self, frames: &mut [Frame], m: &Mapping, elf: &std::path::Path) {
        let decoded: Vec<Option<String>> = frames
            .iter()
            .map(|f| f.name.as_deref().and_then(zdecode::decode_symbol))
            .collect();
        if decoded.iter().all(Option::is_none) {
            return;
        }
        let file_name = m.file_path().rsplit('/').next().unwrap_or_default();
        let is_ghc = *self
            .ghc_files
            .entry(m.file_key())
            .or_insert_with(|| zdecode::is_ghc_binary(elf, file_name));
        if !is_ghc {
            return;
        }
        for (frame, name) in frames.iter_mut().zip(decoded) {
            if let Some(name) = name {
                frame.name = Some(name);
            }
        }
    }

    /// The path blazesym should open for a mapping: the original path when it still names
    /// the mapped file (so `.gnu_debuglink` lookups next to it work), else the registry's
    /// open handle, which this symbolizer then holds on to.
    fn elf_path(&mut self, procs: &Procs, m: &Mapping) -> Option<PathBuf> {
        let same_file =
            !m.is_deleted() && fs::metadata(m.file_path()).is_ok_and(|md| md.ino() == m.inode);
        if same_file {
            return Some(PathBuf::from(m.file_path()));
        }
        let key = m.file_key();
        let file = match self.held.entry(key) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(slot) => slot.insert(procs.file(&key)?),
        };
        Some(file.fd_path())
    }

    /// Symbolizes through blazesym's live-process source, if `/proc/PID` exists.
    fn live_process_sym(
        &self,
        pid: u32,
        addr: u64,
        lookup: u64,
        kind: FrameKind,
    ) -> Option<Vec<Frame>> {
        if !procs::exists(pid) {
            return None;
        }
        let src = Source::Process(Process::new(Pid::from(pid)));
        match self.inner.symbolize_single(&src, Input::AbsAddr(lookup)) {
            Ok(Symbolized::Sym(sym)) => Some(sym_frames(addr, &sym, None, kind)),
            _ => None,
        }
    }
}

/// The address to look up: return addresses point after the call, so step back into it.
pub(crate) fn lookup_addr(addr: u64, innermost: bool) -> u64 {
    if innermost {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

/// A frame in JIT code, named by the process's perf map ([`procs::perfmap`]) when it has
/// the address.
fn jit_frame(procs: &mut Procs, pid: u32, addr: u64, lookup: u64) -> Frame {
    match procs.perf_map(pid).and_then(|map| map.symbol_at(lookup)) {
        Some((start, name)) => Frame {
            addr,
            name: Some(name.to_owned()),
            offset: addr - start,
            kind: FrameKind::Jit,
            ..Frame::default()
        },
        None => unknown(addr, None, 0, FrameKind::Jit),
    }
}

/// A frame with no symbol.
fn unknown(addr: u64, module: Option<&str>, offset: u64, kind: FrameKind) -> Frame {
    Frame {
        addr,
        module: module.map(str::to_owned),
        offset,
        kind,
        ..Frame::default()
    }
}

/// Expands a blazesym symbol into frames, innermost (deepest inlined) first.
fn sym_frames(addr: u64, sym: &Sym<'_>, module: Option<&str>, kind: FrameKind) -> Vec<Frame> {
    let module = module
        .map(str::to_owned)
        .or_else(|| sym.module.as_deref().map(os_to_string));
    let (file, line) = code_location(sym.code_info.as_deref());
    let outer = Frame {
        addr,
        name: Some(sym.name.to_string()),
        module: module.clone(),
        offset: sym.offset as u64,
        file,
        line,
        inlined: false,
        kind: kind.clone(),
    };
    // blazesym lists inlined functions outermost first.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|f| {
            let (file, line) = code_location(f.code_info.as_ref());
            Frame {
                addr,
                name: Some(f.name.to_string()),
                module: module.clone(),
                offset: sym.offset as u64,
                file,
                line,
                inlined: true,
                kind: kind.clone(),
            }
        })
        .collect();
    frames.push(outer);
    frames
}

fn code_location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
        ),
        None => (None, None),
    }
}

fn os_to_string(s: impl AsRef<OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

pub(crate) mod debug_files;
#[cfg(test)]
mod tests;
pub(crate) mod zdecode;
