//! `stallwatch report FILE`: render a recording (`watch --record`, `profile --record`) the way
//! the run that made it rendered it live.
//!
//! A watch recording is replayed scan by scan through the same `Reporter` the live run used,
//! with the clock readings and process names it used, so the text or JSON is the same, line
//! for line. A profile recording holds the symbolized samples; its folded stacks, flame graphs
//! and summary are written by the same code as `profile`'s, with `report`'s output options.
//! Nothing here needs root, BPF or the machine that recorded.

use std::{collections::BTreeMap, fs, io, path::PathBuf};

use crate::{
    cli::{ReportArgs, UnknownFormat},
    profile::{self, ProfileError},
    record::{self, Header, RecordError, Recording, WatchEvent},
    report::watch::json::rfc3339_utc,
    watch::{reporter::Reporter, write_report},
};

/// Why a recording could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording cannot be read, or is not one this stallwatch reads.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An option that does not apply to this kind of recording.
    #[error("{flag} applies to profile recordings; {path} is a watch recording")]
    NotForWatch {
        /// The option.
        flag: &'static str,
        /// The recording.
        path: PathBuf,
    },
    /// An output's format cannot be told.
    #[error(transparent)]
    Format(#[from] UnknownFormat),
    /// The output cannot be written.
    #[error("cannot write {path}")]
    OutputNotWritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the report failed.
    #[error("writing the report failed")]
    Write(#[source] io::Error),
    /// Writing a profile recording's outputs failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl ReplayError {
    /// The process exit status (documented in `--help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Record(_) => 8,
            Self::NotForWatch { .. } | Self::Format(_) => 2,
            Self::OutputNotWritable { .. } => 6,
            Self::Profile(e) => e.exit_code(),
            Self::Write(_) => 1,
        }
    }
}

/// Runs `stallwatch report`.
pub fn run(args: &ReportArgs) -> Result<(), ReplayError> {
    let recording = record::read(&args.file)?;
    eprintln!("{}", provenance(recording.header()));
    match recording {
        Recording::Watch {
            threshold,
            once,
            list_idle,
            events,
            ..
        } => {
            if let Some(flag) = args.output.profile_only_flag() {
                return Err(ReplayError::NotForWatch {
                    flag,
                    path: args.file.clone(),
                });
            }
            let mut out = open(args.output.outputs.first())?;
            replay_watch(
                Reporter::new(threshold, list_idle),
                once,
                &events,
                args.json,
                &mut out,
            )?;
            if !once && !matches!(events.last(), Some(WatchEvent::End { .. })) {
                eprintln!(
                    "stallwatch: {} ends before watch's final report (the run was killed?)",
                    args.file.display()
                );
            }
            Ok(())
        }
        Recording::Profile {
            run,
            user_stacks,
            kernel_stacks,
            ..
        } => {
            if args.json {
                let summary = profile::summary(&run);
                let mut out = open(args.output.outputs.first())?;
                serde_json::to_writer_pretty(&mut out, &summary)
                    .map_err(io::Error::from)
                    .and_then(|()| io::Write::write_all(&mut out, b"\n"))
                    .map_err(ReplayError::Write)?;
                return Ok(());
            }
            let outputs = args.output.outputs(user_stacks, kernel_stacks)?;
            Ok(profile::write_outputs(&outputs, &run)?)
        }
    }
}

/// Where the recording comes from, for stderr: `Recording of "stallwatch watch -p 185" on
/// db1 (Linux 6.18.4) at 2026-12-02T04:52:16.850Z, by stallwatch 0.1.0.`
fn provenance(header: &Header) -> String {
    let command = header
        .command_line
        .iter()
        .enumerate()
        .map(|(i, arg)| match i {
            0 => arg.rsplit('/').next().unwrap_or(arg),
            _ => arg.as_str(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "Recording of \"{command}\" on {} (Linux {}) at {}, by stallwatch {}.",
        header.hostname,
        header.kernel,
        rfc3339_utc(record::from_epoch_ns(header.recorded_at_ns)),
        header.stallwatch_version
    )
}

/// The report file, or stdout.
fn open(path: Option<&PathBuf>) -> Result<Box<dyn io::Write>, ReplayError> {
    match path {
        Some(path) => {
            let file = fs::File::create(path).map_err(|source| ReplayError::OutputNotWritable {
                path: path.clone(),
                source,
            })?;
            Ok(Box::new(io::BufWriter::new(file)))
        }
        None => Ok(Box::new(io::stdout())),
    }
}

/// Writes the reports a watch run wrote, from its recorded events.
fn replay_watch(
    mut reporter: Reporter,
    once: bool,
    events: &[WatchEvent],
    json: bool,
    out: &mut dyn io::Write,
) -> Result<(), ReplayError> {
    let names_of = |names: Option<&BTreeMap<u32, String>>| {
        let names = names.cloned().unwrap_or_default();
        move |pid: u32| names.get(&pid).cloned()
    };
    for event in events {
        let report = match event {
            WatchEvent::Scan {
                input,
                report_names,
            } => {
                let mut names = names_of(report_names.as_ref());
                if once {
                    Some(reporter.once(input, &mut names))
                } else {
                    reporter.scan(input, &mut names)
                }
            }
            WatchEvent::End {
                input,
                report_names,
            } => Some(reporter.finish(input, &mut names_of(Some(report_names)))),
        };
        if let Some(report) = report {
            write_report(&report, json, out).map_err(ReplayError::Write)?;
        }
    }
    Ok(())
}

/// Renders a recording to a string, as `stallwatch report FILE [--json]` prints it (the
/// golden tests' entry point).
#[cfg(test)]
pub(crate) fn render_watch(path: &std::path::Path, json: bool) -> Result<String, ReplayError> {
    let Recording::Watch {
        threshold,
        once,
        list_idle,
        events,
        ..
    } = record::read(path)?
    else {
        panic!("{} is not a watch recording", path.display());
    };
    let mut out = Vec::new();
    replay_watch(
        Reporter::new(threshold, list_idle),
        once,
        &events,
        json,
        &mut out,
    )?;
    Ok(String::from_utf8(out).expect("reports are UTF-8"))
}

#[cfg(test)]
mod tests;
