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
        let inner = blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self {
            inner,
            processes: HashMap::new(),
            files: HashMap::new(),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
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
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let offset = fields.next()?;
            let dev = fields.next()?;
            let inode = fields.next()?;
            let path = fields.next().unwrap_or("").trim_start();
            if !perms.contains('x') || path.is_empty() {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let inode: u64 = inode.parse().ok()?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
                // A replaced file shows as "path (deleted)"; its handle still works.
                path: path.trim_end_matches(" (deleted)").to_owned(),
                dev_ino: (dev.to_owned(), inode),
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Check that a named frame folds to its name, with inline and source-line decorations.
    #[test]
    fn folded_name_of_named_frame_has_inline_and_line_suffixes() {
        let f = Frame {
            addr: 0x1000,
            name: Some("std::sync::Mutex<T>::lock".into()),
            module: Some("/usr/bin/app".into()),
            offset: 4,
            file: Some("/src/lib/mutex.rs".into()),
            line: Some(42),
            inlined: true,
        };
        assert_eq!(f.folded_name(false), "std::sync::Mutex<T>::lock (inlined)");
        assert_eq!(
            f.folded_name(true),
            "std::sync::Mutex<T>::lock (inlined) [mutex.rs:42]"
        );
    }

    /// Check that unnamed frames fold to module+offset, or to the address without a module.
    #[test]
    fn folded_name_of_unknown_frame_is_module_offset_or_address() {
        let f = unknown(0x7f00_0000_1234, Some("/usr/lib/libfoo.so.1"), 0x1234);
        assert_eq!(f.folded_name(true), "libfoo.so.1+0x1234");
        let f = unknown(0xdead, None, 0);
        assert_eq!(f.folded_name(false), "[unknown 0xdead]");
    }

    /// Check that `;` and line breaks never reach a folded frame.
    #[test]
    fn folded_name_replaces_semicolons_and_newlines() {
        let f = Frame {
            name: Some("a;b\nc".into()),
            ..Frame::default()
        };
        assert_eq!(f.folded_name(false), "a:b c");
    }

    /// Check that maps parsing keeps executable file mappings and finds the containing one.
    #[test]
    fn parse_maps_keeps_executable_mappings() {
        let text = "\
55d0c0000000-55d0c0002000 r--p 00000000 fd:01 123 /usr/bin/my app
55d0c0002000-55d0c0010000 r-xp 00002000 fd:01 123 /usr/bin/my app
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]
7ffe0000-7fff0000 rw-p 00000000 00:00 0 [stack]
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
";
        let info = ProcessInfo {
            mappings: parse_maps(text),
            ..ProcessInfo::default()
        };
        assert_eq!(info.mappings.len(), 2);
        let m = info.mapping(0x55d0c0002010).unwrap();
        assert_eq!(m.path, "/usr/bin/my app");
        assert_eq!(m.file_offset, 0x2000);
        assert!(info.mapping(0x55d0c0010000).is_none());
        assert_eq!(info.mapping(0x7ffd1004).unwrap().path, "[vdso]");
    }

    /// Check that a process remembered while alive still symbolizes after it exited.
    #[test]
    fn remembered_process_symbolizes_after_exit() {
        let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
        let pid = child.id();
        let m = wait_for_mapping(pid, |m| m.path.ends_with("/sleep"));
        let mapping = (m.start, m.path);
        let mut sym = Symbolizer::new();
        sym.remember_process(pid);
        child.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());

        let (start, path) = mapping;
        let frames = sym.user(pid, &[start + 0x10, start + 0x20]);
        assert!(frames.len() >= 2, "{frames:?}");
        let base = basename(&path).to_owned();
        for f in &frames {
            assert_eq!(f.module.as_deref(), Some(path.as_str()), "{f:?}");
            let folded = f.folded_name(false);
            assert!(
                f.name.is_some() || folded.starts_with(&format!("{base}+0x")),
                "{folded}"
            );
        }
        assert_eq!(sym.process_name(pid).as_deref(), Some("sleep"));
    }

    /// The libc text mapping of `pid`, waiting for the dynamic loader to map it.
    fn libc_mapping(pid: u32) -> Mapping {
        wait_for_mapping(pid, |m| {
            basename(&m.path).starts_with("libc.so") || basename(&m.path).starts_with("libc-")
        })
    }

    /// The first executable mapping of `pid` matching `pred`, polling for up to 2 s: a
    /// spawned child's maps fill in after `spawn` returns (the kernel releases the vfork
    /// parent before it maps the new program, and libraries come later from ld.so).
    fn wait_for_mapping(pid: u32, pred: impl Fn(&Mapping) -> bool) -> Mapping {
        for _ in 0..1000 {
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            if let Some(m) = parse_maps(&maps).into_iter().find(&pred) {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("no matching mapping in /proc/{pid}/maps");
    }

    /// Check that a libc function called by an exited, remembered process still resolves
    /// by name (not only module+offset).
    #[test]
    fn exited_process_libc_function_resolves_by_name() {
        // Where nanosleep lives in libc, as a file offset, taken from this process.
        let ours = libc_mapping(std::process::id());
        let addr = libc::nanosleep as *const () as u64;
        assert!(
            ours.start <= addr && addr < ours.end,
            "nanosleep not in libc text"
        );
        let file_offset = addr - ours.start + ours.file_offset;

        let mut child = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
        let pid = child.id();
        let theirs = libc_mapping(pid);
        let mut sym = Symbolizer::new();
        sym.remember_process(pid);
        child.wait().unwrap();

        let child_addr = theirs.start + file_offset - theirs.file_offset;
        let frames = sym.user(pid, &[child_addr]);
        let name = frames.last().unwrap().name.clone().unwrap_or_default();
        assert!(name.contains("nanosleep"), "{frames:?}");
    }

    /// Check that a process remembered before its libraries were mapped re-reads its maps
    /// when an address misses, while it lives, and that the result outlives the process.
    #[test]
    fn early_remember_refreshes_on_miss() {
        let ours = libc_mapping(std::process::id());
        let file_offset = libc::nanosleep as *const () as u64 - ours.start + ours.file_offset;
        let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
        let pid = child.id();
        let mut sym = Symbolizer::new();
        sym.remember_process(pid); // likely before ld.so mapped libc
        let theirs = libc_mapping(pid);
        let child_addr = theirs.start + file_offset - theirs.file_offset;
        let frames = sym.user(pid, &[child_addr]);
        child.wait().unwrap();
        let again = sym.user(pid, &[child_addr]);
        assert_eq!(frames, again);
        let name = frames.last().unwrap().name.clone().unwrap_or_default();
        assert!(name.contains("nanosleep"), "{frames:?}");
    }

    /// Check that a file no longer reachable by its path resolves through the handle opened
    /// while the process lived.
    #[test]
    fn vanished_path_resolves_through_open_handle() {
        let mut m = libc_mapping(std::process::id());
        let addr = libc::nanosleep as *const () as u64;
        let mut sym = Symbolizer::new();
        let file = File::open(&m.path).unwrap();
        m.path = "/nonexistent/libc.so.6".into();
        m.dev_ino = ("ff:ff".into(), 1);
        sym.files.insert(m.dev_ino.clone(), file);
        let pid = u32::MAX - 9;
        sym.processes.insert(
            pid,
            ProcessInfo {
                mappings: vec![m],
                ..ProcessInfo::default()
            },
        );
        let frames = sym.user(pid, &[addr]);
        let last = frames.last().unwrap();
        assert!(
            last.name
                .as_deref()
                .unwrap_or_default()
                .contains("nanosleep"),
            "{frames:?}"
        );
        assert_eq!(last.module.as_deref(), Some("/nonexistent/libc.so.6"));
    }

    /// Check that a function of this test binary resolves by name, and the return-address
    /// adjustment keeps the reported address.
    #[test]
    fn own_function_resolves_by_name() {
        let pid = std::process::id();
        let addr = own_function_resolves_by_name as *const () as u64;
        let mut sym = Symbolizer::new();
        let frames = sym.user(pid, &[addr, addr + 1]);
        let outer: Vec<&Frame> = frames.iter().filter(|f| !f.inlined).collect();
        assert_eq!(outer.len(), 2, "{frames:?}");
        for f in outer {
            let name = f.name.as_deref().unwrap_or_default();
            assert!(name.contains("own_function_resolves_by_name"), "{f:?}");
        }
        assert_eq!(frames.last().unwrap().addr, addr + 1);
    }

    /// Check that an unknown process falls back to `[unknown 0x..]` instead of failing.
    #[test]
    fn unknown_process_gives_unknown_frames() {
        let mut sym = Symbolizer::new();
        let frames = sym.user(u32::MAX - 7, &[0x1234]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].folded_name(false), "[unknown 0x1234]");
    }

    /// Check that a kernel address from kallsyms resolves to its symbol (skips if kallsyms
    /// hides addresses from this user).
    #[test]
    fn kernel_address_resolves_through_kallsyms() {
        let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let Some(addr) = kallsyms.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let (addr, _, name) = (it.next()?, it.next()?, it.next()?);
            (name == "schedule").then(|| u64::from_str_radix(addr, 16).ok())?
        }) else {
            eprintln!("skipped: no schedule in /proc/kallsyms");
            return;
        };
        if addr == 0 {
            eprintln!("skipped: kallsyms addresses hidden (kptr_restrict)");
            return;
        }
        let mut sym = Symbolizer::new();
        let frames = sym.kernel(&[addr + 4, addr + 8]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].name.as_deref(), Some("schedule"));
        assert_eq!(frames[0].offset, 4);
        assert_eq!(frames[1].addr, addr + 8);
    }
}
