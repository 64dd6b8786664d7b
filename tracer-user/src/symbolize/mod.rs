//! Address -> function name, late and once per unique address, for processes alive or gone.
//!
//! Off-CPU stacks come out of the kernel as bare instruction pointers. Names are resolved
//! only after the trace, when the stacks are deduplicated, so each unique `(pid, address)` is
//! looked up once. The catch is that many traced processes (short `make` children, workers
//! that exit on a signal) are gone by then, and with them `/proc/PID/maps`. So
//! [`Symbolizer::remember_process`], called while the process lives, copies its executable
//! mappings and opens each mapped file through `/proc/PID/map_files/` (which also works for
//! processes in another mount namespace). Later we translate an address to a file offset with
//! that copy and let blazesym resolve the offset in the open file (`Source::Elf` +
//! `Input::FileOffset`).
//!
//! Why not blazesym's own `Cache::Process`: it does keep the VMAs past exit (checked with
//! blazesym 0.2.7: a cached, exited `sleep` resolves libc names), but only with
//! `map_files: false`, i.e. through paths as seen from *our* mount namespace (wrong for
//! containers, and for files replaced since); with the default `map_files: true` the whole
//! batch fails once `/proc/PID/map_files/` is gone. It also reports nothing for an address
//! it cannot name, while we want `module+0xOFF` rather than `[unknown]`. Owning the mapping
//! table covers all three with little code; blazesym's live-process source is still used
//! for the vDSO and JIT (perf map) code of processes that are alive.
//!
//! Kernel addresses resolve through `/proc/kallsyms` (no vmlinux, no debug info needed).

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    ffi::OsStr,
    fs::{self, File},
    hash::{Hash, Hasher},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use blazesym::{
    MaybeDefault, Pid,
    symbolize::{
        CodeInfo, Input, Sym, Symbolized,
        source::{Elf, Kernel, Process, Source},
    },
};

/// One resolved stack frame. An address inside inlined code yields several frames with the
/// same `addr`: the inlined callees (marked `inlined`) before the function they were
/// inlined into.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Frame {
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
}

impl Frame {
    /// The frame as one element of a folded stack: the name (with ` (inlined)` for inlined
    /// frames, and ` [file:line]` when `source_lines` and known), else `module+0xOFF`, else
    /// `[unknown 0xADDR]`. Never contains `;` or a line break, which would corrupt the
    /// folded format.
    pub fn folded_name(&self, source_lines: bool) -> String {
        let mut out = match (&self.name, &self.module) {
            (Some(name), _) => {
                let mut s = name.clone();
                if self.inlined {
                    s.push_str(" (inlined)");
                }
                if source_lines && let Some(file) = &self.file {
                    s.push_str(" [");
                    s.push_str(basename(file));
                    if let Some(line) = self.line {
                        s.push_str(&format!(":{line}"));
                    }
                    s.push(']');
                }
                s
            }
            (None, Some(module)) => format!("{}+0x{:x}", basename(module), self.offset),
            (None, None) => format!("[unknown 0x{:x}]", self.addr),
        };
        sanitize_in_place(&mut out);
        out
    }
}

/// Replaces the characters that have a meaning in folded stacks: `;` (frame separator)
/// becomes `:`, line breaks become spaces.
pub(crate) fn sanitize_in_place(s: &mut String) {
    if s.contains([';', '\n', '\r']) {
        *s = s.replace(';', ":").replace(['\n', '\r'], " ");
    }
}

/// Last path component (`/usr/lib/libc.so.6` -> `libc.so.6`); `[vdso]` stays as is.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One executable mapping of a remembered process, as read from `/proc/PID/maps`.
#[derive(Clone, Debug)]
struct Mapping {
    /// First address.
    start: u64,
    /// One past the last address.
    end: u64,
    /// File offset of `start`.
    file_offset: u64,
    /// Path as shown in maps (`/usr/lib/libc.so.6`, `[vdso]`).
    path: String,
    /// Device and inode of the mapped file (0 for pseudo mappings).
    dev_ino: (String, u64),
}

/// What we keep of a process to symbolize it later.
#[derive(Debug, Default)]
struct ProcessInfo {
    /// Hash of the raw maps text: a change means exec, dlopen or munmap, so re-read.
    maps_hash: u64,
    /// Executable mappings sorted by start.
    mappings: Vec<Mapping>,
    /// Contents of `/proc/PID/comm`.
    comm: Option<String>,
    /// Start time (field 22 of `/proc/PID/stat`): survives exec, tells a reused pid apart.
    start_time: Option<u64>,
}

impl ProcessInfo {
    fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }
}

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

/// Resolves kernel and user addresses to [`Frame`]s, caching per unique address and
/// keeping what is needed to resolve processes after they exit.
pub struct Symbolizer {
    /// The blazesym engine (caches parsed ELF and kallsyms data itself).
    inner: blazesym::symbolize::Symbolizer,
    /// Remembered processes.
    processes: HashMap<u32, ProcessInfo>,
    /// Open handles of mapped files by (device, inode), shared by all processes mapping
    /// them. Never closed while the symbolizer lives, so a `/proc/self/fd/N` path handed to
    /// blazesym (which caches by path) always names the same file.
    files: HashMap<(String, u64), File>,
    /// Resolved user frames by (pid, address, innermost?).
    user_cache: HashMap<(u32, u64, bool), Vec<Frame>>,
    /// Resolved kernel frames by (address, innermost?).
    kernel_cache: HashMap<(u64, bool), Vec<Frame>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("processes", &self.processes.len())
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer that demangles Rust and C++ names and reports source lines and inlined
    /// functions where debug info exists.
    pub fn new() -> Self {
        Self {
            inner: engine(),
            processes: HashMap::new(),
            files: HashMap::new(),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
        }
    }

    /// Drops what is kept for `pid` (its maps and resolved addresses), for long runs where
    /// processes come and go (`watch`). Files no remembered process maps any more are closed
    /// in batches of [`UNUSED_FILES_CLOSED_AT`]: blazesym caches parsed files by their
    /// `/proc/self/fd/N` path, so closing them (the number may be reused) also means starting
    /// blazesym afresh.
    pub fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.user_cache.retain(|&(p, _, _), _| p != pid);
        let in_use: std::collections::HashSet<&(String, u64)> = self
            .processes
            .values()
            .flat_map(|info| info.mappings.iter().map(|m| &m.dev_ino))
            .collect();
        let unused = self.files.keys().filter(|k| !in_use.contains(k)).count();
        if unused >= UNUSED_FILES_CLOSED_AT {
            let in_use: std::collections::HashSet<(String, u64)> =
                in_use.into_iter().cloned().collect();
            self.files.retain(|k, _| in_use.contains(k));
            self.inner = engine();
        }
    }

    /// Cache what is needed to symbolize `pid` later even after it exits (its executable
    /// mappings, with the mapped files held open) and its process name (`/proc/PID/comm`).
    /// Cheap to call repeatedly: the maps are re-parsed only when their text changed (exec,
    /// dlopen), and then earlier results for `pid` are forgotten. Silently ignores processes
    /// that are gone.
    pub fn remember_process(&mut self, pid: u32) {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(maps) = fs::read_to_string(proc_dir.join("maps")) else {
            return;
        };
        let comm = fs::read_to_string(proc_dir.join("comm"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_owned());
        let mut hasher = DefaultHasher::new();
        maps.hash(&mut hasher);
        let maps_hash = hasher.finish();

        if let Some(info) = self.processes.get_mut(&pid)
            && info.maps_hash == maps_hash
        {
            if comm.is_some() {
                info.comm = comm;
            }
            return;
        }

        let mappings = parse_maps(&maps);
        if mappings.is_empty() && self.processes.contains_key(&pid) {
            // A zombie (exited, not yet reaped) shows empty maps: keep what was cached.
            return;
        }
        for m in &mappings {
            if m.dev_ino.1 == 0 || self.files.contains_key(&m.dev_ino) {
                continue;
            }
            // map_files/ needs CAP_SYS_ADMIN; without it we fall back to the path.
            let handle = proc_dir.join(format!("map_files/{:x}-{:x}", m.start, m.end));
            if let Ok(file) = File::open(&handle) {
                self.files.insert(m.dev_ino.clone(), file);
            }
        }
        self.user_cache.retain(|(p, _, _), _| *p != pid);
        self.processes.insert(
            pid,
            ProcessInfo {
                maps_hash,
                mappings,
                comm,
                start_time: start_time(pid),
            },
        );
    }

    /// The name (`comm`) of a remembered process, or of a live one.
    pub fn process_name(&self, pid: u32) -> Option<String> {
        if let Some(comm) = self.processes.get(&pid).and_then(|p| p.comm.clone()) {
            return Some(comm);
        }
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_owned())
    }

    /// Kernel addresses (innermost first) -> frames innermost first, inlined frames
    /// expanded (the inlined callee frames come before their caller, marked inlined).
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Frame> {
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
                    Some(sym) => sym_frames(addr, sym, None),
                    None => vec![unknown(addr, None, 0)],
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
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.refresh_if_stale(pid, addrs);
        let mut out = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let key = (pid, addr, i == 0);
            if !self.user_cache.contains_key(&key) {
                let frames = self.resolve_user(pid, addr, i == 0);
                self.user_cache.insert(key, frames);
            }
            out.extend_from_slice(&self.user_cache[&key]);
        }
        out
    }

    /// Re-reads the maps of `pid` if it was never remembered, or if an address to resolve
    /// lies outside every remembered mapping (remembered too early, e.g. at exec before the
    /// dynamic loader mapped the libraries, or before a dlopen) and the process still lives
    /// (same start time, so not a reused pid).
    fn refresh_if_stale(&mut self, pid: u32, addrs: &[u64]) {
        let Some(info) = self.processes.get(&pid) else {
            self.remember_process(pid);
            return;
        };
        let has_miss = addrs.iter().enumerate().any(|(i, &addr)| {
            !self.user_cache.contains_key(&(pid, addr, i == 0))
                && info.mapping(lookup_addr(addr, i == 0)).is_none()
        });
        if has_miss && info.start_time.is_some() && info.start_time == start_time(pid) {
            self.remember_process(pid);
        }
    }

    /// Resolves one user address without the cache.
    fn resolve_user(&self, pid: u32, addr: u64, innermost: bool) -> Vec<Frame> {
        let lookup = lookup_addr(addr, innermost);
        let mapping = self.processes.get(&pid).and_then(|p| p.mapping(lookup));
        let Some(m) = mapping else {
            // Anonymous memory (JIT code): only blazesym's perf-map support can help, and
            // only while the process lives.
            return self
                .live_process_sym(pid, addr, lookup)
                .unwrap_or_else(|| vec![unknown(addr, None, 0)]);
        };
        let module_offset = addr - m.start + m.file_offset;
        if m.dev_ino.1 == 0 {
            // [vdso] and friends: only resolvable through the live process' memory.
            return self
                .live_process_sym(pid, addr, lookup)
                .unwrap_or_else(|| vec![unknown(addr, Some(&m.path), addr - m.start)]);
        }
        let Some(path) = self.elf_path(m) else {
            return vec![unknown(addr, Some(&m.path), module_offset)];
        };
        let src = Source::Elf(Elf::new(path));
        let file_offset = lookup - m.start + m.file_offset;
        match self
            .inner
            .symbolize_single(&src, Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(sym)) => sym_frames(addr, &sym, Some(&m.path)),
            _ => vec![unknown(addr, Some(&m.path), module_offset)],
        }
    }

    /// The path blazesym should open for a mapping: the original path when it still names
    /// the mapped file (so `.gnu_debuglink` lookups next to it work), else our open handle.
    fn elf_path(&self, m: &Mapping) -> Option<PathBuf> {
        let same_file = fs::metadata(&m.path).is_ok_and(|md| md.ino() == m.dev_ino.1);
        if same_file {
            return Some(PathBuf::from(&m.path));
        }
        self.files
            .get(&m.dev_ino)
            .map(|f| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))
    }

    /// Symbolizes through blazesym's live-process source, if `/proc/PID` exists.
    fn live_process_sym(&self, pid: u32, addr: u64, lookup: u64) -> Option<Vec<Frame>> {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
        let src = Source::Process(Process::new(Pid::from(pid)));
        match self.inner.symbolize_single(&src, Input::AbsAddr(lookup)) {
            Ok(Symbolized::Sym(sym)) => Some(sym_frames(addr, &sym, None)),
            _ => None,
        }
    }
}

/// Start time of `pid` in clock ticks since boot, if it lives.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The address to look up: return addresses point after the call, so step back into it.
fn lookup_addr(addr: u64, innermost: bool) -> u64 {
    if innermost {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

/// A frame with no symbol.
fn unknown(addr: u64, module: Option<&str>, offset: u64) -> Frame {
    Frame {
        addr,
        module: module.map(str::to_owned),
        offset,
        ..Frame::default()
    }
}

/// Expands a blazesym symbol into frames, innermost (deepest inlined) first.
fn sym_frames(addr: u64, sym: &Sym<'_>, module: Option<&str>) -> Vec<Frame> {
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

/// Parses the executable mappings out of `/proc/PID/maps` text, sorted by start.
///
/// Line format: `start-end perms offset dev inode path` (path may contain spaces).
fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = text
        .lines()
        .filter_map(crate::procmaps::Mapping::parse)
        .filter(|m| m.executable && !m.path.is_empty())
        .map(|m| Mapping {
            start: m.start,
            end: m.end,
            file_offset: m.offset,
            // A replaced file shows as "path (deleted)"; its handle still works.
            path: m.path.trim_end_matches(" (deleted)").to_owned(),
            // As maps prints it, so that the key reads like the file it names.
            dev_ino: (format!("{:02x}:{:02x}", m.dev.0, m.dev.1), m.inode),
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

#[cfg(test)]
mod tests;
