//! Writing recordings, line by line, flushed as they go: a run killed mid-way leaves every
//! line written so far readable.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    CaptureLine, EndLine, FORMAT_NAME, FORMAT_VERSION, Facts, Header, Line, Names, ProfileRun,
    RecordError, Run, ScanLine, StacksLine, duration_ns, epoch_ns,
};
use crate::{
    model::WaitKey,
    report::watch::WatchReport,
    watch::reporter::{EndInput, ScanInput},
};

/// An open recording file.
struct RecordFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RecordFile {
    /// Creates the file and writes its header.
    fn create(path: &Path, run: Run) -> Result<Self, RecordError> {
        let file = File::create(path).map_err(|source| RecordError::Write {
            path: path.to_owned(),
            source,
        })?;
        Self::start(path, file, run)
    }

    /// Writes the header into `file`, just created at `path`.
    fn start(path: &Path, file: File, run: Run) -> Result<Self, RecordError> {
        let mut record = Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        };
        record.line(&Line::Header(header(run)))?;
        Ok(record)
    }

    /// Writes one line and flushes it.
    fn line(&mut self, line: &Line) -> Result<(), RecordError> {
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            serde_json::to_writer(&mut *out, line)?;
            out.write_all(b"\n")?;
            out.flush()
        };
        write(&mut self.out).map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The header of a recording made now, on this machine, by this command line.
fn header(run: Run) -> Header {
    let (hostname, kernel) = uname();
    Header {
        format: FORMAT_NAME.to_owned(),
        format_version: FORMAT_VERSION,
        stallwatch_version: env!("CARGO_PKG_VERSION").to_owned(),
        recorded_at_ns: epoch_ns(SystemTime::now()),
        hostname,
        kernel,
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        run,
    }
}

/// This machine's host name and kernel release.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname fills it or fails, and we read it only on success.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return (String::new(), String::new());
    }
    let text = |field: &[libc::c_char]| {
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (text(&uts.nodename), text(&uts.release))
}

/// Records a `watch` run: its scans and its end.
pub(crate) struct WatchRecorder {
    file: RecordFile,
    /// Waits whose stacks were written (those of the last scan: a bounded set).
    stacks_written: HashSet<WaitKey>,
    /// The facts of the last scan written, to write an unchanged scan without them.
    last_facts: Option<Facts>,
}

impl WatchRecorder {
    /// Writes the header of a watch run into `file`, just created at `path` (by the caller,
    /// which tells an unwritable file from a failing write).
    pub(crate) fn start(
        path: &Path,
        file: File,
        threshold: std::time::Duration,
        once: bool,
        list_idle: bool,
    ) -> Result<Self, RecordError> {
        let run = Run::Watch {
            threshold_ns: duration_ns(threshold),
            once,
            list_idle,
        };
        Ok(Self {
            file: RecordFile::start(path, file, run)?,
            stacks_written: HashSet::new(),
            last_facts: None,
        })
    }

    /// Records a scan, and the names of the report it made, if any.
    pub(crate) fn scan(
        &mut self,
        input: &ScanInput,
        report: Option<&WatchReport>,
    ) -> Result<(), RecordError> {
        let mut threads = input.scanned.threads.clone();
        for thread in &mut threads {
            let key = thread.key();
            let user_stack = std::mem::take(&mut thread.user_stack);
            let kernel_stack = std::mem::take(&mut thread.kernel_stack);
            // Derived from the scan's time on replay.
            thread.blocked_for_ns = 0;
            if self.stacks_written.insert(key) {
                self.file.line(&Line::Stacks(StacksLine {
                    tid: key.0,
                    since_ns: key.1,
                    user_stack,
                    kernel_stack,
                }))?;
            }
        }
        let keys: HashSet<WaitKey> = threads.iter().map(|t| t.key()).collect();
        self.stacks_written.retain(|k| keys.contains(k));
        let facts = Facts {
            threads,
            processes: input.scanned.processes.values().cloned().collect(),
            keys: input.scanned.keys.iter().copied().collect(),
        };
        let unchanged = self.last_facts.as_ref() == Some(&facts);
        let line = ScanLine {
            now_ns: input.now_ns,
            elapsed_ns: duration_ns(input.elapsed),
            wall_clock_ns: epoch_ns(input.wall_clock),
            losses: input.losses.clone(),
            report_names: report.map(|r| names(&r.process_names)),
            facts: (!unchanged).then(|| facts.clone()),
        };
        self.last_facts = Some(facts);
        self.file.line(&Line::Scan(line))
    }

    /// Records the end of the run and the names of its final report.
    pub(crate) fn end(&mut self, end: &EndInput, report: &WatchReport) -> Result<(), RecordError> {
        self.file.line(&Line::End(EndLine {
            elapsed_ns: duration_ns(end.elapsed),
            wall_clock_ns: epoch_ns(end.wall_clock),
            losses: end.losses.clone(),
            report_names: names(&report.process_names),
        }))
    }
}

/// Names as written.
fn names(map: &BTreeMap<u32, String>) -> Names {
    map.iter().map(|(&pid, name)| (pid, name.clone())).collect()
}

/// Records a `profile` run.
pub(crate) struct ProfileRecorder;

impl ProfileRecorder {
    /// Writes `run` to `path`: a header and one capture line.
    pub(crate) fn write(
        path: &Path,
        run: &ProfileRun,
        user_stacks: bool,
        kernel_stacks: bool,
    ) -> Result<(), RecordError> {
        let header = Run::Profile {
            title: run.title.clone(),
            user_stacks,
            kernel_stacks,
        };
        let mut file = RecordFile::create(path, header)?;
        file.line(&Line::Capture(CaptureLine {
            duration_ns: duration_ns(run.duration),
            counters: run.counters.clone(),
            process_names: names(&run.process_names),
            samples: run.samples.clone(),
        }))
    }
}
