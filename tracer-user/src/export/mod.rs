//! Writing captures for other tools: folded stacks and flame graph SVGs.
//!
//! Export works on [`ResolvedSample`]s: a sample with its stacks already turned into
//! [`Frame`]s. [`resolve`] does that once per capture, so every format (and every option
//! combination of one format) reuses the same symbolization, and the formatters stay pure
//! functions that tests drive with hand-made frames.

use std::path::Path;

use crate::{
    model::{Capture, OffCpuSample, RawStack},
    symbolize::{Frame, Symbolizer},
};

pub mod folded;
pub mod svg;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Folded stacks (`frame;frame;frame value` lines), as `flamegraph.pl` reads them.
    Folded,
    /// An interactive flame graph SVG.
    Svg,
}

impl Format {
    /// The format a file name asks for: `.folded`, `.collapsed`, `.txt`, `.stacks` -> folded,
    /// `.svg` -> SVG (case-insensitive); `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "folded" | "collapsed" | "txt" | "stacks" => Some(Format::Folded),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The format named on the command line: `folded` (or `collapsed`), `svg` (or
    /// `flamegraph`), case-insensitive.
    pub fn from_name(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "folded" | "collapsed" => Some(Format::Folded),
            "svg" | "flamegraph" => Some(Format::Svg),
            _ => None,
        }
    }

    /// The canonical name, as accepted by [`Format::from_name`].
    pub fn name(&self) -> &'static str {
        match self {
            Format::Folded => "folded",
            Format::Svg => "svg",
        }
    }
}

/// A sample with its stacks symbolized. All frame lists are innermost first; a stack that is
/// [`RawStack::None`] or [`RawStack::Missed`] gives an empty list (exporters look at the raw
/// stack in `sample` to tell the two apart).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedSample {
    /// The sample as captured.
    pub sample: OffCpuSample,
    /// Name of the process (its main thread's comm, or the thread's comm as a last resort).
    pub process_name: String,
    /// User frames of the blocked thread.
    pub user: Vec<Frame>,
    /// Kernel frames of the blocked thread.
    pub kernel: Vec<Frame>,
    /// User frames of the waker, if any.
    pub waker_user: Vec<Frame>,
    /// Kernel frames of the waker, if any.
    pub waker_kernel: Vec<Frame>,
}

/// Symbolizes every sample of `capture`. The process name comes from
/// `capture.process_names`, else from the symbolizer's memory, else the thread's comm.
pub fn resolve(capture: &Capture, symbolizer: &mut Symbolizer) -> Vec<ResolvedSample> {
    capture
        .samples
        .iter()
        .map(|sample| {
            let process_name = capture
                .process_names
                .get(&sample.pid)
                .cloned()
                .or_else(|| symbolizer.process_name(sample.pid))
                .unwrap_or_else(|| sample.comm.clone());
            let user = user_frames(symbolizer, sample.pid, &sample.user_stack);
            let kernel = kernel_frames(symbolizer, &sample.kernel_stack);
            let (waker_user, waker_kernel) = match &sample.waker {
                Some(w) => (
                    user_frames(symbolizer, w.pid, &w.user_stack),
                    kernel_frames(symbolizer, &w.kernel_stack),
                ),
                None => (Vec::new(), Vec::new()),
            };
            ResolvedSample {
                sample: sample.clone(),
                process_name,
                user,
                kernel,
                waker_user,
                waker_kernel,
            }
        })
        .collect()
}

fn user_frames(symbolizer: &mut Symbolizer, pid: u32, stack: &RawStack) -> Vec<Frame> {
    match stack {
        RawStack::Frames(addrs) => symbolizer.user(pid, addrs),
        RawStack::None | RawStack::Missed => Vec::new(),
    }
}

fn kernel_frames(symbolizer: &mut Symbolizer, stack: &RawStack) -> Vec<Frame> {
    match stack {
        RawStack::Frames(addrs) => strip_tracer_frames(symbolizer.kernel(addrs)),
        RawStack::None | RawStack::Missed => Vec::new(),
    }
}

/// Whether a kernel frame belongs to the tracepoint machinery that ran our BPF program.
fn is_tracepoint_frame(frame: &Frame) -> bool {
    frame.name.as_deref().is_some_and(|n| {
        n.starts_with("bpf_trace_run")
            || n.starts_with("__traceiter_")
            || n.starts_with("__bpf_trace_")
    })
}

/// Drops the innermost frames up to the tracepoint dispatch (`__traceiter_sched_switch`,
/// `bpf_trace_run4`, the JIT-ed program itself): they are the tracer, not the traced thread,
/// and the JIT-ed program's address has no reliable symbol. Found by name rather than by a
/// fixed skip count, because which of them appear varies with kernel version and inlining.
pub fn strip_tracer_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    // Only the innermost few frames can be tracer frames.
    let window = frames.len().min(8);
    if let Some(last) = frames[..window].iter().rposition(is_tracepoint_frame) {
        frames.drain(..=last);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Frame {
        Frame {
            addr: 1,
            name: Some(name.into()),
            module: None,
            offset: 0,
            file: None,
            line: None,
            inlined: false,
        }
    }

    /// Check that the tracepoint dispatch frames above `__schedule` are removed, and nothing
    /// when there are none.
    #[test]
    fn tracer_frames_are_stripped() {
        let names = |v: Vec<Frame>| v.into_iter().map(|f| f.name.unwrap()).collect::<Vec<_>>();
        let stack = [
            "bpf_prog_x",
            "bpf_trace_run4",
            "__traceiter_sched_switch",
            "__schedule",
            "schedule",
        ];
        let frames = stack.iter().map(|n| named(n)).collect();
        assert_eq!(
            names(strip_tracer_frames(frames)),
            ["__schedule", "schedule"]
        );
        let plain: Vec<Frame> = ["__schedule", "schedule"]
            .iter()
            .map(|n| named(n))
            .collect();
        assert_eq!(
            names(strip_tracer_frames(plain)),
            ["__schedule", "schedule"]
        );
    }

    /// Check that file extensions map to formats, case-insensitively, and others to none.
    #[test]
    fn format_from_path_knows_the_extensions() {
        for (name, want) in [
            ("out.folded", Some(Format::Folded)),
            ("out.collapsed", Some(Format::Folded)),
            ("out.txt", Some(Format::Folded)),
            ("dir/out.stacks", Some(Format::Folded)),
            ("OUT.SVG", Some(Format::Svg)),
            ("out.json", None),
            ("out", None),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), want, "{name}");
        }
    }

    /// Check that format names round-trip through `name` and `from_name`.
    #[test]
    fn format_names_round_trip() {
        for f in [Format::Folded, Format::Svg] {
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
        assert_eq!(Format::from_name("flamegraph"), Some(Format::Svg));
        assert_eq!(Format::from_name("pprof"), None);
    }

    /// Check that resolve takes the process name from the capture first and keeps
    /// missing stacks empty.
    #[test]
    fn resolve_names_processes_and_keeps_missing_stacks_empty() {
        let mut capture = Capture::default();
        capture.process_names.insert(4242, "server".into());
        capture.samples.push(OffCpuSample {
            pid: 4242,
            tid: 4243,
            comm: "worker".into(),
            user_stack: RawStack::Missed,
            kernel_stack: RawStack::None,
            total_ns: 1_000,
            count: 1,
            ..OffCpuSample::default()
        });
        capture.samples.push(OffCpuSample {
            pid: u32::MAX - 3,
            comm: "gone".into(),
            ..OffCpuSample::default()
        });
        let resolved = resolve(&capture, &mut Symbolizer::new());
        assert_eq!(resolved[0].process_name, "server");
        assert!(resolved[0].user.is_empty() && resolved[0].kernel.is_empty());
        assert_eq!(resolved[1].process_name, "gone");
    }
}
