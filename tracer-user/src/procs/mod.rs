//! The process registry: what stallwatch knows about each process it looks at, read from
//! `/proc` once and shared by everything that needs it.
//!
//! The symbolizer needs a process's executable mappings and open handles to the files behind
//! them (to resolve addresses after the process exited), the unwinder needs its mappings and
//! memory, the reports need its name, and the runtime seam (`crate::runtime`) needs to know
//! which runtimes it runs. Each used to read `/proc/PID/maps` and work out names on its own;
//! here one [`Process`] per pid holds:
//!
//! - its maps, read at most once per scan ([`Procs::begin_scan`]), however many threads of it
//!   are unwound and symbolized;
//! - its name (`comm`) and start time, which tells a reused pid from the process that had it;
//! - handles to its mapped files, opened through `/proc/PID/map_files` while it lives
//!   ([`MappedFile`]), shared by every process mapping the same file;
//! - whether it still exists, and the runtimes detected in it (again after an exec or a
//!   `dlopen` changes its code);
//! - the names its JIT runtime wrote for generated code ([`perfmap`]), read once it has
//!   anonymous executable memory, re-read at most once per scan when the file grew, and kept
//!   after it exits (a short-lived Node or Java process is still symbolized).
//!
//! Borrowers take `&mut Procs` for the length of a call and keep no `/proc` state of their
//! own (their caches are keyed by pid and dropped with [`Procs::forget_exited`]'s answer).

pub(crate) mod files;
pub(crate) mod maps;
pub(crate) mod perfmap;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::Path,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

pub(crate) use files::MappedFile;
use maps::{FileKey, Maps};
use perfmap::{PerfMap, PerfMapFile};

use crate::{
    inspect::{InspectError, ProcessMemory},
    runtime::{Memo, Runtimes},
};

/// Names of processes forgotten after they exited are kept (for reports of waits that ended
/// with them) up to this many.
const MAX_PAST_NAMES: usize = 4096;

/// A process's perf map is looked at again (one `stat`, and the appended lines if it grew) at
/// most this often: often enough that a JIT's new code is named in the next scan or at the
/// end of a profile, rarely enough that symbolizing many stacks does not stat it each time.
const PERF_MAP_REREAD_INTERVAL: Duration = Duration::from_millis(100);

/// The one check whether a process (or thread, by its tid) exists.
pub(crate) fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `/proc/PID/comm` without its newline: the name of a process the registry need not
/// remember (another process holding a pipe, say).
pub(crate) fn read_comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_owned())
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`), if it lives:
/// survives exec, tells a reused pid apart.
pub(crate) fn read_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// What is known about one process.
#[derive(Debug)]
pub(crate) struct Process {
    /// Its name (`/proc/PID/comm`), as last read.
    pub comm: Option<String>,
    /// Start time, clock ticks since boot.
    pub start_time: Option<u64>,
    /// Its mappings as last read (kept after it exits).
    pub maps: Arc<Maps>,
    /// The runtimes detected in it.
    pub runtimes: Runtimes,
    /// Its `/proc` directory was gone at the last look.
    pub exited: bool,
    /// What each runtime with a view memoized about it (`crate::runtime::views`).
    pub runtime_memos: HashMap<&'static str, Memo>,
    /// Scan in which `maps` was read.
    maps_scan: u64,
    /// `/proc/PID/mem`, opened at most once per scan, with the scan it was opened in.
    memory: Option<(u64, Rc<ProcessMemory>)>,
    /// Its JIT perf map, if it has one, as read so far.
    perf_map: Option<PerfMapFile>,
    /// When the perf map was last looked for or re-read.
    perf_map_read_at: Option<Instant>,
}

/// Every process looked at, by pid.
#[derive(Debug, Default)]
pub(crate) struct Procs {
    processes: HashMap<u32, Process>,
    /// Open mapped files by identity, while a remembered process maps them.
    files: HashMap<FileKey, Arc<MappedFile>>,
    /// Names of processes forgotten after they exited.
    past_names: BTreeMap<u32, String>,
    /// The current scan; maps and memory are read again after it changes.
    scan: u64,
}

impl Procs {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a new scan: maps and memory are read again, at most once per process, when next
    /// asked for.
    pub(crate) fn begin_scan(&mut self) {
        self.scan += 1;
    }

    /// The runtimes' memos for a remembered process.
    pub(crate) fn runtime_memos(&mut self, pid: u32) -> Option<&mut HashMap<&'static str, Memo>> {
        self.processes.get_mut(&pid).map(|p| &mut p.runtime_memos)
    }

    /// The process, if it was remembered (no `/proc` access).
    pub(crate) fn get(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    /// Remembers `pid`: reads its maps, name and start time if not yet read in this scan,
    /// opens its newly mapped files, detects its runtimes when its code changed. A process
    /// that exited keeps what was read while it lived. `None` if it is gone and was never
    /// remembered.
    pub(crate) fn remember(&mut self, pid: u32) -> Option<&Process> {
        let fresh = self
            .processes
            .get(&pid)
            .is_some_and(|p| p.maps_scan == self.scan);
        if !fresh {
            self.read(pid);
        }
        self.processes.get(&pid)
    }

    /// Reads `pid`'s maps again now, even if already read in this scan, if it still lives and
    /// is the process remembered (same start time): an address outside every mapping means
    /// they were read too early (before the dynamic loader or a `dlopen` mapped the library).
    pub(crate) fn refresh(&mut self, pid: u32) -> Option<&Process> {
        let same = self
            .processes
            .get(&pid)
            .is_some_and(|p| p.start_time.is_some() && p.start_time == read_start_time(pid));
        if same {
            self.read(pid);
        }
        self.processes.get(&pid)
    }

    /// The process's maps, read at most once per scan.
    pub(crate) fn maps(&mut self, pid: u32) -> Option<Arc<Maps>> {
        self.remember(pid).map(|p| Arc::clone(&p.maps))
    }

    /// The process's memory (`/proc/PID/mem`), opened at most once per scan; none for a
    /// process seen gone.
    pub(crate) fn memory(&mut self, pid: u32) -> Result<Rc<ProcessMemory>, InspectError> {
        let scan = self.scan;
        let process = self.processes.get(&pid);
        if let Some((opened, memory)) = process.and_then(|p| p.memory.as_ref())
            && *opened == scan
        {
            return Ok(Rc::clone(memory));
        }
        if process.is_some_and(|p| p.exited) {
            return Err(InspectError::Gone {
                path: format!("/proc/{pid}/mem").into(),
            });
        }
        let memory = Rc::new(ProcessMemory::open(pid)?);
        if let Some(process) = self.processes.get_mut(&pid) {
            process.memory = Some((scan, Rc::clone(&memory)));
        }
        Ok(memory)
    }

    /// The names a JIT runtime wrote for the code it generated in a remembered process
    /// ([`perfmap`]): looked for, or re-read if it grew, at most every
    /// [`PERF_MAP_REREAD_INTERVAL`] while the process lives (and is the one remembered); as
    /// last read after it exited.
    pub(crate) fn perf_map(&mut self, pid: u32) -> Option<&PerfMap> {
        self.refresh_perf_map(pid);
        self.processes.get(&pid)?.perf_map.as_ref().map(|f| &f.map)
    }

    /// Looks for or re-reads `pid`'s perf map, unless done just before or it is gone.
    fn refresh_perf_map(&mut self, pid: u32) {
        let Some(p) = self.processes.get_mut(&pid) else {
            return;
        };
        let recent = p
            .perf_map_read_at
            .is_some_and(|at| at.elapsed() < PERF_MAP_REREAD_INTERVAL);
        if p.exited || recent {
            return;
        }
        p.perf_map_read_at = Some(Instant::now());
        if p.start_time.is_none() || read_start_time(pid) != p.start_time {
            return;
        }
        match &mut p.perf_map {
            Some(file) => {
                file.read_appended();
            }
            None => p.perf_map = PerfMapFile::open(pid),
        }
    }

    /// An open handle to a file mapped by a remembered process.
    pub(crate) fn file(&self, key: &FileKey) -> Option<Arc<MappedFile>> {
        self.files.get(key).cloned()
    }

    /// Whether any remembered process maps the file.
    pub(crate) fn maps_file(&self, key: &FileKey) -> bool {
        self.files.contains_key(key)
    }

    /// The process's name: as remembered, or from `/proc` if it lives, or as it was when an
    /// exited process was forgotten.
    pub(crate) fn name(&self, pid: u32) -> Option<String> {
        self.processes
            .get(&pid)
            .and_then(|p| p.comm.clone())
            .or_else(|| self.past_names.get(&pid).cloned())
            .or_else(|| read_comm(pid))
    }

    /// Forgets every remembered process that no longer exists, keeping its name; returns their
    /// pids (borrowers drop what they cached for them).
    pub(crate) fn forget_exited(&mut self) -> Vec<u32> {
        let exited: Vec<u32> = self
            .processes
            .keys()
            .copied()
            .filter(|&pid| !exists(pid))
            .collect();
        for &pid in &exited {
            if let Some(comm) = self.processes.remove(&pid).and_then(|p| p.comm) {
                self.past_names.insert(pid, comm);
            }
        }
        self.close_unused_files();
        if self.past_names.len() > MAX_PAST_NAMES {
            self.past_names.retain(|&pid, _| exists(pid));
        }
        exited
    }

    /// Forgets everything about `pid`, its name included, and closes the files no remaining
    /// process maps.
    pub(crate) fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.past_names.remove(&pid);
        self.close_unused_files();
    }

    /// Closes the files no remembered process maps.
    fn close_unused_files(&mut self) {
        let in_use: HashSet<FileKey> = self
            .processes
            .values()
            .flat_map(|p| p.maps.code().map(maps::Mapping::file_key))
            .collect();
        self.files.retain(|key, _| in_use.contains(key));
    }

    /// Reads (or re-reads) `pid` now.
    fn read(&mut self, pid: u32) {
        let start_time = read_start_time(pid);
        if start_time.is_none() {
            // Gone: keep what was read while it lived.
            if let Some(p) = self.processes.get_mut(&pid) {
                p.exited = true;
                p.maps_scan = self.scan;
            }
            return;
        }
        let reused = self
            .processes
            .get(&pid)
            .is_some_and(|p| p.start_time.is_some() && p.start_time != start_time);
        if reused {
            self.forget(pid);
        }
        // Unreadable maps (another user's process without the capabilities) are empty.
        let text = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let maps = Maps::parse(&text);
        let comm = read_comm(pid);
        let scan = self.scan;
        if let Some(p) = self.processes.get_mut(&pid) {
            p.maps_scan = scan;
            p.exited = false;
            if comm.is_some() {
                p.comm = comm;
            }
            if maps.is_empty() {
                // A zombie (exited, not yet reaped) shows empty maps: keep what was read.
                return;
            }
            let code_changed = p.maps.code_hash() != maps.code_hash();
            p.maps = Arc::new(maps);
            let jit = p.maps.has_anonymous_code();
            if code_changed {
                p.runtimes = crate::runtime::detect(&p.maps);
                p.runtime_memos.clear();
                let maps = Arc::clone(&p.maps);
                self.open_files(pid, &maps);
            }
            if jit {
                self.refresh_perf_map(pid);
            }
            return;
        }
        let jit = maps.has_anonymous_code();
        let maps = Arc::new(maps);
        self.open_files(pid, &maps);
        self.processes.insert(
            pid,
            Process {
                comm,
                start_time,
                runtimes: crate::runtime::detect(&maps),
                maps,
                exited: false,
                runtime_memos: HashMap::new(),
                maps_scan: scan,
                memory: None,
                perf_map: None,
                perf_map_read_at: None,
            },
        );
        if jit {
            self.refresh_perf_map(pid);
        }
    }

    /// Opens the files behind `maps`' executable file mappings that are not open yet.
    fn open_files(&mut self, pid: u32, maps: &Maps) {
        for mapping in maps.code().filter(|m| m.is_file()) {
            let key = mapping.file_key();
            if self.files.contains_key(&key) {
                continue;
            }
            if let Ok(file) = MappedFile::open(pid, mapping) {
                self.files.insert(key, Arc::new(file));
            }
        }
    }

    /// Remembers a process made up by a test: its maps and the files behind them.
    #[cfg(test)]
    pub(crate) fn insert_for_test(
        &mut self,
        pid: u32,
        maps: Maps,
        files: Vec<(FileKey, MappedFile)>,
    ) {
        for (key, file) in files {
            self.files.insert(key, Arc::new(file));
        }
        let scan = self.scan;
        self.processes.insert(
            pid,
            Process {
                comm: None,
                start_time: None,
                runtimes: crate::runtime::detect(&maps),
                maps: Arc::new(maps),
                exited: true,
                runtime_memos: HashMap::new(),
                maps_scan: scan,
                memory: None,
                perf_map: None,
                perf_map_read_at: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Check that a process is remembered with its name, start time, maps, open files and
    /// runtimes; that after it exits its maps are kept until it is forgotten, and its name
    /// even then; and that `forget` drops the name too.
    #[test]
    fn exited_processes_keep_their_name() {
        let mut child = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
        let pid = child.id();
        let mut procs = Procs::new();
        // The dynamic loader maps libc a moment after spawn returns.
        for _ in 0..1000 {
            procs.begin_scan();
            let maps = procs.maps(pid).expect("remembered");
            if maps.code().any(|m| m.path.contains("libc")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let process = procs.get(pid).expect("remembered");
        assert_eq!(process.comm.as_deref(), Some("sleep"));
        assert!(process.start_time.is_some() && !process.exited);
        assert!(process.runtimes.names().contains(&"glibc".to_owned()));
        let libc = process
            .maps
            .code()
            .find(|m| m.path.contains("libc"))
            .expect("libc mapped")
            .file_key();
        assert!(procs.file(&libc).is_some(), "libc not held open");
        child.wait().unwrap();

        procs.begin_scan();
        let gone = procs.remember(pid).expect("kept after exit");
        assert!(gone.exited && !gone.maps.is_empty());
        assert_eq!(procs.forget_exited(), vec![pid]);
        assert!(procs.get(pid).is_none());
        assert_eq!(procs.name(pid).as_deref(), Some("sleep"));
        assert!(
            !procs.maps_file(&libc),
            "files of no remembered process kept open"
        );
        procs.forget(pid);
        assert_eq!(procs.name(pid), None);
    }

    /// Check that maps are read once per scan, however often they are asked for, and again in
    /// the next scan.
    #[test]
    fn maps_are_read_once_per_scan() {
        let pid = std::process::id();
        let mut procs = Procs::new();
        let first = procs.maps(pid).expect("own maps");
        let again = procs.maps(pid).expect("own maps");
        assert!(Arc::ptr_eq(&first, &again), "maps read twice in one scan");
        procs.begin_scan();
        let next = procs.maps(pid).expect("own maps");
        assert!(
            !Arc::ptr_eq(&first, &next),
            "maps not read again in the next scan"
        );
        let memory = procs.memory(pid).expect("own memory");
        assert!(Rc::ptr_eq(&memory, &procs.memory(pid).unwrap()));
    }

    /// Check that a pid that never lived gives nothing and no name.
    #[test]
    fn unknown_pids_give_nothing() {
        let mut procs = Procs::new();
        assert!(procs.remember(u32::MAX - 5).is_none());
        assert_eq!(procs.name(u32::MAX - 5), None);
        assert!(!exists(u32::MAX - 5));
        assert!(exists(std::process::id()));
    }
}
