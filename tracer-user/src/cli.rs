//! Command line: clap derive types, converted at the edge into plain config structs
//! (`capture::CaptureConfig`, [`ProfileOutputs`]) so nothing below knows clap.
//!
//! Flag names follow bcc's `offcputime` (`-p -t -u -k -U -K -m -M --state`) so its users feel
//! at home; perf-style long names are accepted too.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use tracer_common::state;

use crate::{
    capture::{CaptureConfig, ThreadKinds, UnwindMode},
    export::{Format, folded::FoldedOptions},
};

/// Off-CPU and blocking tracer: where and why threads sleep.
#[derive(Debug, Parser)]
#[command(name = "stallwatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record off-CPU time with kernel and user stacks and write flamegraphs.
    #[command(after_help = PROFILE_EXAMPLES)]
    Profile(ProfileArgs),
    /// Report threads blocked past a threshold, live: stalls, blocked event loops and
    /// deadlock cycles, with owners and stacks.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),
    /// Render a recording made with `watch --record` or `profile --record`: the same text,
    /// JSON and flame graphs, on any machine, without root.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
}

const REPORT_EXAMPLES: &str = "\
EXAMPLES:
    stallwatch watch -p 185 --record hang.swrec      # on the host: record while watching
    stallwatch report hang.swrec                     # anywhere: the same text report
    stallwatch report hang.swrec --json -o hang.jsonl
    stallwatch profile -d 10s --record cpu.swrec     # record a profile...
    stallwatch report cpu.swrec -o offcpu.svg --wait-leaf   # ...and draw it later

The recording format is documented in docs/formats.md.

EXIT STATUS: 0 ok, 1 other error, 2 usage, 6 output not writable, 8 recording unreadable or
of another format version.";

/// `stallwatch report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// For a watch recording: JSON Lines (docs/json-schema.md) instead of text. For a profile
    /// recording: the summary as JSON (on stdout, or to the -o file) instead of folded stacks.
    #[arg(long)]
    pub json: bool,
    /// Where and how to write a profile recording's outputs (a watch recording takes one -o).
    #[command(flatten)]
    pub output: OutputArgs,
}

const WATCH_EXAMPLES: &str = "\
EXAMPLES:
    stallwatch watch                                  # whole host, report waits past 5 s
    stallwatch watch -p 185 --threshold 2s            # one process, 2 s threshold
    stallwatch watch -p 185 --once                    # one snapshot of what is blocked now, then exit
    stallwatch watch --json -o stalls.jsonl -d 10m    # JSON Lines for 10 minutes
    stallwatch watch -p 185 --exit-on-deadlock        # stop at the first deadlock (exit status 11)

Waits already in progress when watch starts are read from /proc. Each stall is reported when
it crosses the threshold and again when it ends. Ctrl-C or SIGTERM ends and prints a summary.
With -p, the processes at the other end of a watched thread's pipe or local socket (and theirs,
up to 3 hops) are inspected too, read-only from /proc, so that a wait chain is followed into
them (a client waiting for a server stuck in a deadlock); their problems are shown only as
links of such a chain and do not change the exit status.
JSON Lines schema: docs/json-schema.md.

EXIT STATUS: 0 nothing past the threshold, 10 stalls found (no deadlock), 11 deadlock found,
1 other error, 2 usage, 3 no privileges, 4 kernel unsupported (no BTF), 5 process not found,
6 output not writable.";

/// `stallwatch watch` options.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch these processes (repeatable or comma-separated). Default: every process. The
    /// processes at the other end of their pipes and local sockets are inspected read-only
    /// to follow wait chains.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Report threads blocked at least this long: 5s, 500ms, 2m, or plain seconds.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub threshold: Duration,
    /// How often to look: 1s, 200ms...
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Write JSON Lines (one report object per line; docs/json-schema.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write reports to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Dump every thread blocked at least --threshold now (idle ones too) with its verdict,
    /// what it waits on and its stacks, read from /proc without loading BPF programs; then exit.
    #[arg(long)]
    pub once: bool,
    /// Stop after this long. Default: until Ctrl-C, SIGTERM, or (with -p) every watched
    /// process has exited.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop at the first deadlock found.
    #[arg(long)]
    pub exit_on_deadlock: bool,
    /// Also record what each scan found to this file, for `stallwatch report`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

impl WatchArgs {
    /// The capture configuration: in-flight waits of every state that blocks, with user
    /// registers for unwinding, nothing aggregated.
    pub fn capture_config(&self) -> CaptureConfig {
        CaptureConfig {
            pids: self.pids.clone(),
            state_mask: state::DEFAULT_MASK,
            // Kernel threads sleep "indefinitely" by design (workers, kthreadd); user threads
            // are what hangs.
            thread_kinds: ThreadKinds::UserOnly,
            // User stacks are unwound in user space from the registers (DWARF CFI), which is
            // better than the kernel's frame-pointer walk and fills no map.
            user_stacks: false,
            in_flight_only: true,
            user_regs: true,
            ..CaptureConfig::default()
        }
    }
}

const PROFILE_EXAMPLES: &str = "\
EXAMPLES:
    stallwatch profile -d 10s -o offcpu.svg          # whole host for 10 s, SVG flamegraph
    stallwatch profile -p 185 -o out.folded          # one process until Ctrl-C, folded stacks
    stallwatch profile -p 185,186 -t 4242            # several processes, plus one thread
    stallwatch profile -m 1000 -M 5000000            # only waits of 1 ms to 5 s
    stallwatch profile --state S,D,R                 # include preemption (runnable) waits
    stallwatch profile --wakers -p 185               # who woke each wait (offwaketime view)
    stallwatch profile --process-root --wait-leaf -o a.svg -o a.folded -- ./server --port 80
    stallwatch profile -U -p 185 > out.folded        # user stacks only, folded on stdout

Folded output is bcc's `offcputime -f -d` layout (values in microseconds); feed it to
flamegraph.pl, inferno-flamegraph or speedscope. Prints `Tracing ...` on stderr once attached;
Ctrl-C or SIGTERM ends early and still writes everything.

EXIT STATUS: 0 ok, 1 other error, 2 usage, 3 no privileges, 4 kernel unsupported (no BTF),
5 process or thread not found, 6 output not writable, 7 COMMAND failed to start.";

/// `stallwatch profile` options.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Trace these processes (repeatable or comma-separated).
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Trace these threads (repeatable or comma-separated).
    #[arg(short = 't', long = "tid", value_name = "TID", value_delimiter = ',')]
    pub tids: Vec<u32>,
    /// Trace only threads in this cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/x.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// User threads only (no kernel threads).
    #[arg(short = 'u', long, conflicts_with = "kernel_threads_only")]
    pub user_threads_only: bool,
    /// Kernel threads only.
    #[arg(short = 'k', long)]
    pub kernel_threads_only: bool,
    /// Record user stacks only.
    #[arg(short = 'U', long, conflicts_with = "kernel_stacks_only")]
    pub user_stacks_only: bool,
    /// Record kernel stacks only.
    #[arg(short = 'K', long)]
    pub kernel_stacks_only: bool,
    /// Only waits of at least this many microseconds.
    #[arg(short = 'm', long, value_name = "US", default_value_t = 1)]
    pub min_block_us: u64,
    /// Only waits of at most this many microseconds.
    #[arg(short = 'M', long, value_name = "US")]
    pub max_block_us: Option<u64>,
    /// Thread states to trace: letters S (sleep), D (disk/uninterruptible), R (runnable:
    /// preempted, reported apart from blocked time), O (other), comma-separated, or `all`.
    #[arg(long, value_name = "STATES", default_value = "S,D", value_parser = parse_states)]
    pub state: u32,
    /// Record who woke each wait, with the waker's stacks (offwaketime's view).
    #[arg(long)]
    pub wakers: bool,
    /// How long to trace: 10s, 500ms, 2m, or plain seconds. Default: until Ctrl-C, SIGTERM, or
    /// COMMAND exits.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Where and how to write the results.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also record the symbolized capture to this file, for `stallwatch report`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Capacity of the stack store (distinct stacks).
    #[arg(long, value_name = "N", default_value_t = tracer_common::capacity::STACKS)]
    pub stack_storage_size: u32,
    /// Walk every stack anew even when a thread blocks again at the same place (for measuring
    /// the memo's gain).
    #[arg(long)]
    pub no_stack_memo: bool,
    /// Show the Python functions CPython 2.7 and 3.6–3.13 threads wait in: their frames are
    /// read at every switch-out and put in the user stacks as `function (file.py:line)` (the
    /// qualified name from 3.11, the plain name before).
    #[arg(long)]
    pub python: bool,
    /// How user stacks are unwound: auto (the default: frame pointers and a stack copy per new
    /// blocking site, unwound with DWARF CFI in user space; per site the DWARF unwind when it
    /// reaches the thread's root, else the longer), dwarf (the copy only), fp (frame pointers
    /// only, walked in the kernel: loses the callers of code built without them, such as
    /// most distributions' libc). Costs in docs/performance.md.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = UnwindMode::Auto)]
    pub unwind: UnwindMode,
    /// Bytes of user stack copied above the stack pointer per new site (dwarf and auto).
    /// Copied in whole pages from the start of sp's page, at most 5 pages (20 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::DEFAULT_STACK_COPY_BYTES)]
    pub stack_copy_bytes: u32,
    /// Run this command and trace it (and only it) until it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Where and how `profile` (and `report`, for a profile recording) writes results.
#[derive(Clone, Debug, Default, Args)]
pub struct OutputArgs {
    /// Write output here (repeatable); format from the extension (.folded, .collapsed, .txt,
    /// .svg) or --format. Without -o, folded stacks go to stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    /// Output format when the extension does not say: folded or svg.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub format: Option<Format>,
    /// Start each stack with the process as "name (pid)".
    #[arg(long)]
    pub process_root: bool,
    /// End each stack with the wait kind, futex op and resource as leaf frames.
    #[arg(long)]
    pub wait_leaf: bool,
    /// Add `[file:line]` to frames with debug info.
    #[arg(long)]
    pub source_lines: bool,
    /// Title of the SVG flamegraph.
    #[arg(long)]
    pub title: Option<String>,
    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

impl OutputArgs {
    /// The outputs, each with its format, for stacks of the given kinds.
    pub fn outputs(
        &self,
        user_stacks: bool,
        kernel_stacks: bool,
    ) -> Result<ProfileOutputs, UnknownFormat> {
        let files = self
            .outputs
            .iter()
            .map(|path| {
                Format::from_path(path)
                    .or(self.format)
                    .map(|f| (path.clone(), f))
                    .ok_or_else(|| UnknownFormat(path.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(ProfileOutputs {
            files,
            folded: FoldedOptions {
                process_root: self.process_root,
                wait_leaf: self.wait_leaf,
                source_lines: self.source_lines,
                user_stacks,
                kernel_stacks,
                ..FoldedOptions::default()
            },
            title: self.title.clone(),
            summary_json: self.summary_json.clone(),
        })
    }

    /// The options that only apply to profile outputs, by flag, if any was given.
    pub fn profile_only_flag(&self) -> Option<&'static str> {
        [
            (self.outputs.len() > 1, "-o (more than one)"),
            (self.format.is_some(), "--format"),
            (self.process_root, "--process-root"),
            (self.wait_leaf, "--wait-leaf"),
            (self.source_lines, "--source-lines"),
            (self.title.is_some(), "--title"),
            (self.summary_json.is_some(), "--summary-json"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// Where and how to write results.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileOutputs {
    /// Files and their formats; empty means folded on stdout.
    pub files: Vec<(PathBuf, Format)>,
    /// Folded line options.
    pub folded: FoldedOptions,
    /// SVG title override.
    pub title: Option<String>,
    /// Summary JSON file.
    pub summary_json: Option<PathBuf>,
}

/// `-m` above `-M`.
#[derive(Debug, thiserror::Error)]
#[error("--min-block-us ({min_us}) is above --max-block-us ({max_us}): no wait could be recorded")]
pub struct BlockRangeError {
    /// `-m`.
    pub min_us: u64,
    /// `-M`.
    pub max_us: u64,
}

/// An output whose format cannot be told.
#[derive(Debug, thiserror::Error)]
#[error("cannot tell the format of {0}: use a .folded or .svg extension, or --format")]
pub struct UnknownFormat(pub PathBuf);

impl ProfileArgs {
    /// The capture configuration.
    pub fn capture_config(&self) -> CaptureConfig {
        CaptureConfig {
            pids: self.pids.clone(),
            tids: self.tids.clone(),
            filter_processes: !self.command.is_empty(),
            cgroup: self.cgroup.clone(),
            min_block_us: self.min_block_us,
            max_block_us: self.max_block_us,
            state_mask: self.state,
            thread_kinds: if self.user_threads_only {
                ThreadKinds::UserOnly
            } else if self.kernel_threads_only {
                ThreadKinds::KernelOnly
            } else {
                ThreadKinds::All
            },
            kernel_stacks: !self.user_stacks_only,
            user_stacks: !self.kernel_stacks_only,
            wakers: self.wakers,
            stack_memo: !self.no_stack_memo,
            stack_storage_size: self.stack_storage_size,
            in_flight_only: false,
            user_regs: false,
            python_stacks: self.python,
            unwind: self.unwind,
            stack_copy_bytes: self.stack_copy_bytes,
            syscall_hooks: false,
        }
    }

    /// The outputs, each with its format.
    pub fn outputs(&self) -> Result<ProfileOutputs, UnknownFormat> {
        self.output
            .outputs(!self.kernel_stacks_only, !self.user_stacks_only)
    }

    /// `-m` above `-M`: no wait could be recorded.
    pub fn block_range_error(&self) -> Option<BlockRangeError> {
        match self.max_block_us {
            Some(max) if self.min_block_us > max => Some(BlockRangeError {
                min_us: self.min_block_us,
                max_us: max,
            }),
            _ => None,
        }
    }
}

/// A value on the command line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a number with a known unit.
    #[error("invalid duration {0:?} (try 10s, 500ms, 2m)")]
    Duration(String),
    /// Zero, negative or not finite.
    #[error("duration must be positive, got {0:?}")]
    NotPositive(String),
    /// A numeric state mask with bits that are no state.
    #[error("state mask must be within 1..={max}")]
    StateMask {
        /// The largest mask.
        max: u32,
    },
    /// A state letter that is no state.
    #[error("unknown state {0:?}: use S, D, R, O or all")]
    State(String),
    /// No state at all.
    #[error("no state given")]
    NoState,
    /// An output format that is none.
    #[error("unknown format {0:?}: use folded or svg")]
    Format(String),
}

/// Parses `10s`, `500ms`, `2m`, `1h` or plain seconds (`2.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let s = s.trim();
    let (number, unit_secs) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| ValueError::Duration(s.to_owned()))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(ValueError::NotPositive(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(value * unit_secs))
}

/// Parses `S,D,R,O`, `all`, or a bcc-style numeric `tracer_common::state` mask.
pub(crate) fn parse_states(s: &str) -> Result<u32, ValueError> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(state::ALL);
    }
    if let Ok(mask) = s.parse::<u32>() {
        if mask == 0 || mask & !state::ALL != 0 {
            return Err(ValueError::StateMask { max: state::ALL });
        }
        return Ok(mask);
    }
    let mut mask = 0;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        mask |= match part.to_ascii_uppercase().as_str() {
            "S" => state::SLEEPING,
            "D" => state::DISK,
            "R" => state::RUNNABLE,
            "O" => state::OTHER,
            other => return Err(ValueError::State(other.to_owned())),
        };
    }
    if mask == 0 {
        return Err(ValueError::NoState);
    }
    Ok(mask)
}

fn parse_format(s: &str) -> Result<Format, ValueError> {
    Format::from_name(s).ok_or_else(|| ValueError::Format(s.to_owned()))
}

#[cfg(test)]
mod tests;
