//! One stack pipeline for both commands: whatever a stack was recorded as, turn it into
//! frames people can read.
//!
//! A stack reaches user space in one of four shapes: kernel addresses from BPF, kernel
//! function names from `/proc/PID/task/TID/stack`, user addresses from BPF's frame-pointer
//! walk (`profile`), or the user registers of a thread that stays blocked, whose stack is then
//! unwound with DWARF CFI from its memory (`watch`). [`StackInput`] names them, and
//! [`Stacks::frames`] takes each through the same steps: unwind ([`crate::unwind`]) where
//! needed, drop user addresses that are no frames ([`validate`]), symbolize
//! ([`crate::symbolize`]) once per unique address, drop the tracer's own kernel frames. (Runtime frames are put in by `watch::gather` from one view per process
//! and scan, [`crate::runtime::views`].) Processes' maps, memory and files come from the registry
//! ([`crate::procs`]).

mod sites;
mod text_ranges;
mod validate;

pub(crate) use sites::Sites;
pub(crate) use text_ranges::TextRangesGiven;
pub(crate) use validate::FrameDrops;

use crate::{
    inspect::KernelFrameName,
    model::{Capture, Frame, FrameKind, RawStack, ResolvedSample, StackCopy, UserRegs},
    procs::Procs,
    symbolize::Symbolizer,
    unwind::Unwinder,
};

/// Deepest user stack unwound.
const MAX_USER_FRAMES: usize = 127;

/// A stack as it was recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StackInput<'a> {
    /// Kernel addresses from BPF, innermost first.
    Kernel(&'a RawStack),
    /// Kernel function names from `/proc/PID/task/TID/stack`, innermost first.
    KernelNames(&'a [KernelFrameName]),
    /// User addresses from BPF's frame-pointer walk, innermost first.
    User {
        /// The process.
        pid: u32,
        /// The addresses.
        stack: &'a RawStack,
    },
    /// A blocked thread's user stack, unwound from its registers (when known) through its
    /// memory; the frame-pointer walk BPF made, if any, is the fallback.
    Blocked {
        /// The process.
        pid: u32,
        /// Its user registers when it blocked.
        regs: Option<UserRegs>,
        /// BPF's frame-pointer walk of the same stack.
        frame_pointer_walk: &'a RawStack,
    },
}

/// The pipeline, with what it caches across stacks.
#[derive(Debug, Default)]
pub(crate) struct Stacks {
    symbolizer: Symbolizer,
    unwinder: Unwinder,
    /// User frames dropped so far as no real frames.
    drops: FrameDrops,
}

impl Stacks {
    /// A pipeline with nothing cached yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The frames of a stack, innermost first; empty when there is no stack or it was lost.
    pub(crate) fn frames(&mut self, procs: &mut Procs, input: StackInput<'_>) -> Vec<Frame> {
        match input {
            StackInput::Kernel(RawStack::Frames(addrs)) => {
                strip_tracer_frames(self.symbolizer.kernel(addrs))
            }
            StackInput::KernelNames(names) => names
                .iter()
                .map(|f| Frame {
                    offset: f.offset,
                    module: Some("[kernel]".to_string()),
                    ..Frame::named(f.name.clone(), FrameKind::Kernel)
                })
                .collect(),
            StackInput::User {
                pid,
                stack: RawStack::Frames(addrs),
            } => self.user(procs, pid, addrs),
            StackInput::Blocked {
                pid,
                regs,
                frame_pointer_walk,
            } => self.blocked(procs, pid, regs, frame_pointer_walk),
            StackInput::Kernel(_) | StackInput::User { .. } => Vec::new(),
        }
    }

    /// A blocked thread's user frames: DWARF-unwound from its registers, unless that gives
    /// less than BPF's frame-pointer walk did. (The runtimes put their own frames in at
    /// gathering, from one view of the whole process: `watch::gather`.)
    fn blocked(
        &mut self,
        procs: &mut Procs,
        pid: u32,
        regs: Option<UserRegs>,
        frame_pointer_walk: &RawStack,
    ) -> Vec<Frame> {
        let unwound =
            regs.and_then(|regs| self.unwinder.unwind(procs, pid, regs, MAX_USER_FRAMES).ok());
        let addrs = match (unwound, frame_pointer_walk) {
            (Some(addrs), RawStack::Frames(fp)) if addrs.len() < 2 && fp.len() > addrs.len() => {
                fp.clone()
            }
            (Some(addrs), _) => addrs,
            (None, RawStack::Frames(fp)) => fp.clone(),
            (None, _) => Vec::new(),
        };
        self.user(procs, pid, &addrs)
    }

    /// User addresses -> frames, cut before the first address that is no frame
    /// ([`validate`]), against the process's maps as fresh as the symbolizer makes them.
    fn user(&mut self, procs: &mut Procs, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.symbolizer.refresh_if_stale(procs, pid, addrs);
        let kept = procs
            .get(pid)
            .map_or(addrs.len(), |p| validate::code_prefix_len(&p.maps, addrs));
        self.drops.count(addrs.len(), kept);
        self.symbolizer.user(procs, pid, &addrs[..kept])
    }

    /// Unwinds a site's stack copy into `sites` (`--unwind dwarf|auto`), with this
    /// pipeline's unwinder and its cached CFI.
    pub(crate) fn add_site(&mut self, sites: &mut Sites, procs: &mut Procs, copy: &StackCopy) {
        sites.add(&mut self.unwinder, procs, copy);
    }

    /// The user frames dropped so far as no real frames (every stack this pipeline made).
    pub(crate) fn drops(&self) -> FrameDrops {
        self.drops
    }

    /// Every sample of `capture` with its frames (`profile`). The process name comes from
    /// `capture.process_names`, else from the registry, else the thread's comm.
    pub(crate) fn resolve_capture(
        &mut self,
        procs: &mut Procs,
        capture: &Capture,
    ) -> Vec<ResolvedSample> {
        capture
            .samples
            .iter()
            .map(|sample| {
                let process_name = capture
                    .process_names
                    .get(&sample.pid)
                    .cloned()
                    .or_else(|| procs.name(sample.pid))
                    .unwrap_or_else(|| sample.comm.clone());
                let user = StackInput::User {
                    pid: sample.pid,
                    stack: &sample.user_stack,
                };
                let (waker_user, waker_kernel) = match &sample.waker {
                    Some(w) => {
                        let user = StackInput::User {
                            pid: w.pid,
                            stack: &w.user_stack,
                        };
                        (
                            self.frames(procs, user),
                            self.frames(procs, StackInput::Kernel(&w.kernel_stack)),
                        )
                    }
                    None => (Vec::new(), Vec::new()),
                };
                ResolvedSample {
                    sample: sample.clone(),
                    process_name,
                    user: self.frames(procs, user),
                    kernel: self.frames(procs, StackInput::Kernel(&sample.kernel_stack)),
                    waker_user,
                    waker_kernel,
                }
            })
            .collect()
    }

    /// Drops what is cached for `pid` (call after the registry forgot it).
    pub(crate) fn forget(&mut self, pid: u32, procs: &Procs) {
        self.symbolizer.forget_process(pid, procs);
        self.unwinder.forget(pid);
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
fn strip_tracer_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
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
    use crate::model::OffCpuSample;

    fn named(name: &str) -> Frame {
        Frame {
            addr: 1,
            ..Frame::named(name, FrameKind::Kernel)
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
        let resolved = Stacks::new().resolve_capture(&mut Procs::new(), &capture);
        assert_eq!(resolved[0].process_name, "server");
        assert!(resolved[0].user.is_empty() && resolved[0].kernel.is_empty());
        assert_eq!(resolved[1].process_name, "gone");
    }

    /// Check that kernel names from `/proc` become kernel frames in the `[kernel]` module.
    #[test]
    fn kernel_names_become_kernel_frames() {
        let names = [KernelFrameName {
            name: "futex_wait_queue".into(),
            offset: 0x5e,
            size: 0x90,
        }];
        let frames = Stacks::new().frames(&mut Procs::new(), StackInput::KernelNames(&names));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].name.as_deref(), Some("futex_wait_queue"));
        assert_eq!(frames[0].offset, 0x5e);
        assert_eq!(frames[0].kind, FrameKind::Kernel);
        assert_eq!(frames[0].module.as_deref(), Some("[kernel]"));
    }
}
