//! Recordings: what the pure stages of a run consumed, saved so that `stallwatch report`
//! renders the same text, JSON and flame graphs from it later, on another machine, without
//! root (the way `perf record` / `perf report` split a run).
//!
//! A recording is cut where the impure work ends. For `watch` that is after gathering: each
//! scan's facts (blocked threads with their symbolized stacks, the futex memory read, fd
//! descriptions, the processes' threads and runtimes), with the clock readings and process
//! names its report was made with; analysis, tracking and reporting run again on replay. For
//! `profile` it is after symbolization: the samples with their frames, counters and names.
//!
//! The file is JSON Lines (`docs/formats.md` documents every line), versioned by
//! [`FORMAT_VERSION`]: a header line, then for `watch` one line per scan and a last line for
//! the final report, for `profile` one capture line. A wait's stacks cannot change while it
//! lasts, so they are written once per wait on a line of their own, and a scan whose facts
//! are those of the scan before is written without them: a long watch of a quiet host grows
//! its recording by a short line per interval.

mod reader;
mod writer;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

pub(crate) use reader::{Recording, WatchEvent, read};
pub(crate) use writer::{ProfileRecorder, WatchRecorder};

use crate::model::{BlockedThread, Counters, Frame, Loss, ProcessView, ResolvedSample, WaitKey};

/// Version of the recording format. Bumped on any change a reader of the previous version
/// would misread; a reader refuses every other version.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The `format` field of every header.
const FORMAT_NAME: &str = "stallwatch-record";

/// Why a recording could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be created or written.
    #[error("cannot write the recording {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened or read.
    #[error("cannot read the recording {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what the format says it should be.
    #[error("{path}:{line}: not a stallwatch recording line")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The lines are in an order the format does not allow.
    #[error("{path}:{line}: {what}")]
    Order {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The recording was written in another version of the format.
    #[error(
        "{path} is a recording of format version {found}; this stallwatch reads version {FORMAT_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// One line of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    /// The first line.
    Header(Header),
    /// A wait's stacks, written before the first scan it is in.
    Stacks(StacksLine),
    /// One scan of `watch`.
    Scan(ScanLine),
    /// The end of `watch`: its final report.
    End(EndLine),
    /// What `profile` captured, symbolized.
    Capture(CaptureLine),
}

/// What was recorded, by whom, where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    /// Always `stallwatch-record`.
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The stallwatch that wrote it.
    pub stallwatch_version: String,
    /// Wall-clock time the recording began, ns since the Unix epoch.
    pub recorded_at_ns: u64,
    /// Host name of the machine.
    pub hostname: String,
    /// Kernel release of the machine.
    pub kernel: String,
    /// The command line that made it.
    pub command_line: Vec<String>,
    /// What ran.
    pub run: Run,
}

/// The command recorded, with the options its rendering depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Run {
    /// `stallwatch watch`.
    Watch {
        /// `--threshold`, ns.
        threshold_ns: u64,
        /// `--once`.
        once: bool,
        /// Idle waits were listed (`-p`); absent in older recordings.
        #[serde(default)]
        list_idle: bool,
    },
    /// `stallwatch profile`.
    Profile {
        /// The flame graph's default title.
        title: String,
        /// User stacks were recorded.
        user_stacks: bool,
        /// Kernel stacks were recorded.
        kernel_stacks: bool,
    },
}

/// A wait's stacks.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StacksLine {
    tid: u32,
    since_ns: u64,
    user_stack: Vec<Frame>,
    kernel_stack: Vec<Frame>,
}

/// A scan's facts without the stacks (those are on [`StacksLine`]s). Maps keyed by pid are
/// written as lists: lines are internally tagged, and serde cannot read integer map keys
/// through a tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Facts {
    threads: Vec<BlockedThread>,
    processes: Vec<ProcessView>,
    keys: Vec<WaitKey>,
}

/// Process names as written: (pid, name) pairs.
type Names = Vec<(u32, String)>;

/// One scan.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ScanLine {
    now_ns: u64,
    elapsed_ns: u64,
    wall_clock_ns: u64,
    losses: Vec<Loss>,
    /// The names the scan's report was made with; `None` when it made no report.
    report_names: Option<Names>,
    /// `None`: the same facts as the scan before.
    facts: Option<Facts>,
}

/// The final report's readings.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EndLine {
    elapsed_ns: u64,
    wall_clock_ns: u64,
    losses: Vec<Loss>,
    report_names: Names,
}

/// What `profile` captured, with frames.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CaptureLine {
    duration_ns: u64,
    counters: Counters,
    process_names: Names,
    samples: Vec<ResolvedSample>,
}

/// A `profile` run as rendered: what `profile` writes its outputs from, live or replayed.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProfileRun {
    /// The flame graph's default title.
    pub title: String,
    /// The command line, shown under the title.
    pub command_line: Vec<String>,
    /// How long the trace ran.
    pub duration: Duration,
    /// Kernel-side counters.
    pub counters: Counters,
    /// Process names by pid, read while the processes lived.
    pub process_names: BTreeMap<u32, String>,
    /// The samples with their frames.
    pub samples: Vec<ResolvedSample>,
}

/// ns since the Unix epoch.
fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A time from ns since the Unix epoch.
pub(crate) fn from_epoch_ns(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// A duration in ns, saturating.
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
