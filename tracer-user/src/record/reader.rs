//! Reading recordings back into what the pure stages consume.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::Path,
    time::Duration,
};

use super::{
    FORMAT_NAME, FORMAT_VERSION, Facts, Header, Line, ProfileRun, RecordError, Run, from_epoch_ns,
};
use crate::{
    model::{Frame, WaitKey},
    watch::{
        gather::Scanned,
        reporter::{EndInput, ScanInput},
    },
};

/// A recording read back.
#[derive(Clone, Debug)]
pub(crate) enum Recording {
    /// A `watch` run.
    Watch {
        /// Its header.
        header: Header,
        /// `--threshold`.
        threshold: Duration,
        /// It was a `--once` run.
        once: bool,
        /// Idle waits were listed (`-p`).
        list_idle: bool,
        /// Its scans, then its end (missing if the run was killed).
        events: Vec<WatchEvent>,
    },
    /// A `profile` run.
    Profile {
        /// Its header.
        header: Header,
        /// What it captured (boxed: it is far larger than the watch variant).
        run: Box<ProfileRun>,
        /// User stacks were recorded.
        user_stacks: bool,
        /// Kernel stacks were recorded.
        kernel_stacks: bool,
    },
}

impl Recording {
    /// The recording's header.
    pub(crate) fn header(&self) -> &Header {
        match self {
            Self::Watch { header, .. } | Self::Profile { header, .. } => header,
        }
    }
}

/// One recorded step of a `watch` run.
#[derive(Clone, Debug)]
pub(crate) enum WatchEvent {
    /// A scan, with the names its report was made with (`None`: it made none).
    Scan {
        /// What the pure stages consumed.
        input: ScanInput,
        /// The names its report used.
        report_names: Option<BTreeMap<u32, String>>,
    },
    /// The end of the run.
    End {
        /// The final report's readings.
        input: EndInput,
        /// The names it used.
        report_names: BTreeMap<u32, String>,
    },
}

/// Reads the recording at `path`.
pub(crate) fn read(path: &Path) -> Result<Recording, RecordError> {
    let text = fs::read_to_string(path).map_err(|source| RecordError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l));
    let order = |line: usize, what: &'static str| RecordError::Order {
        path: path.to_owned(),
        line,
        what,
    };
    let Some((first, header_text)) = lines.next() else {
        return Err(order(1, "empty file: no recording header"));
    };
    check_version(path, first, header_text)?;
    let Line::Header(header) = parse(path, first, header_text)? else {
        return Err(order(first, "the first line is not a recording header"));
    };
    let mut parsed = lines.map(|(n, text)| parse(path, n, text).map(|line| (n, line)));
    match header.run.clone() {
        Run::Watch {
            threshold_ns,
            once,
            list_idle,
        } => {
            let mut watch = WatchReplay::default();
            for item in parsed {
                let (n, line) = item?;
                watch.add(line).map_err(|what| order(n, what))?;
            }
            Ok(Recording::Watch {
                header,
                threshold: Duration::from_nanos(threshold_ns),
                once,
                list_idle,
                events: watch.events,
            })
        }
        Run::Profile {
            title,
            user_stacks,
            kernel_stacks,
        } => {
            let Some(item) = parsed.next() else {
                return Err(order(first, "a profile recording without its capture"));
            };
            let (n, line) = item?;
            let Line::Capture(capture) = line else {
                return Err(order(
                    n,
                    "a profile recording's second line must be its capture",
                ));
            };
            let run = ProfileRun {
                title,
                command_line: header.command_line.clone(),
                duration: Duration::from_nanos(capture.duration_ns),
                counters: capture.counters,
                process_names: capture.process_names.into_iter().collect(),
                samples: capture.samples,
            };
            Ok(Recording::Profile {
                header,
                run: Box::new(run),
                user_stacks,
                kernel_stacks,
            })
        }
    }
}

/// Refuses a file that is not a recording, or one of another format version, from its
/// header's two fields alone (a newer header may not parse otherwise).
fn check_version(path: &Path, line: usize, text: &str) -> Result<(), RecordError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| RecordError::Malformed {
            path: path.to_owned(),
            line,
            source,
        })?;
    if value["format"] != FORMAT_NAME {
        return Err(RecordError::Order {
            path: path.to_owned(),
            line,
            what: "not a stallwatch recording (no \"format\": \"stallwatch-record\" header)",
        });
    }
    match value["format_version"].as_u64() {
        Some(v) if v == u64::from(FORMAT_VERSION) => Ok(()),
        found => Err(RecordError::Version {
            path: path.to_owned(),
            found: found.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        }),
    }
}

fn parse(path: &Path, line: usize, text: &str) -> Result<Line, RecordError> {
    serde_json::from_str(text).map_err(|source| RecordError::Malformed {
        path: path.to_owned(),
        line,
        source,
    })
}

/// Rebuilds a watch run's scans from its lines.
#[derive(Default)]
struct WatchReplay {
    /// Every wait's stacks (user, kernel) as written.
    stacks: HashMap<WaitKey, (Vec<Frame>, Vec<Frame>)>,
    /// The facts of the last scan that had them.
    last_facts: Option<Facts>,
    events: Vec<WatchEvent>,
    ended: bool,
}

impl WatchReplay {
    fn add(&mut self, line: Line) -> Result<(), &'static str> {
        if self.ended {
            return Err("a line after the end of the run");
        }
        match line {
            Line::Stacks(s) => {
                self.stacks
                    .insert((s.tid, s.since_ns), (s.user_stack, s.kernel_stack));
            }
            Line::Scan(scan) => {
                if let Some(facts) = scan.facts {
                    self.last_facts = Some(facts);
                }
                let Some(facts) = &self.last_facts else {
                    return Err("a scan without facts and no scan before it");
                };
                let mut threads = facts.threads.clone();
                for thread in &mut threads {
                    thread.blocked_for_ns = scan.now_ns.saturating_sub(thread.since_ns);
                    let Some((user, kernel)) = self.stacks.get(&thread.key()) else {
                        return Err("a thread whose stacks were not recorded before");
                    };
                    thread.user_stack = user.clone();
                    thread.kernel_stack = kernel.clone();
                }
                let input = ScanInput {
                    scanned: Scanned {
                        threads,
                        processes: facts.processes.iter().map(|p| (p.pid, p.clone())).collect(),
                        keys: facts.keys.iter().copied().collect(),
                    },
                    now_ns: scan.now_ns,
                    elapsed: Duration::from_nanos(scan.elapsed_ns),
                    wall_clock: from_epoch_ns(scan.wall_clock_ns),
                    losses: scan.losses,
                };
                self.events.push(WatchEvent::Scan {
                    input,
                    report_names: scan.report_names.map(|n| n.into_iter().collect()),
                });
            }
            Line::End(end) => {
                self.ended = true;
                self.events.push(WatchEvent::End {
                    input: EndInput {
                        elapsed: Duration::from_nanos(end.elapsed_ns),
                        wall_clock: from_epoch_ns(end.wall_clock_ns),
                        losses: end.losses,
                    },
                    report_names: end.report_names.into_iter().collect(),
                });
            }
            Line::Header(_) => return Err("a second header"),
            Line::Capture(_) => return Err("a profile capture in a watch recording"),
        }
        Ok(())
    }
}
