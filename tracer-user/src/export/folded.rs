//! Folded stacks: one `frame;frame;... VALUE` line per distinct stack.
//!
//! The layout follows bcc's `offcputime -f -d` (and `offwaketime -f` with wakers), so the
//! output feeds `flamegraph.pl`, `inferno-flamegraph` and speedscope unchanged, and people
//! who know bcc read it without a manual. `docs/formats.md` documents every element; keep the
//! two in sync.
//!
//! Values are microseconds of off-CPU time. Identical lines are merged before rounding, so
//! many tiny waits on one stack add up instead of each rounding to zero.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use tracer_common::syscalls;

use crate::model::{
    Frame, FrameKind, RawStack, ResolvedSample, SyscallCall, ThreadState, WaitKind,
};

/// What goes into each folded line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedOptions {
    /// Start each stack with a `PROCNAME (PID)` frame, so threads group under their process.
    pub process_root: bool,
    /// End each blocked stack with what it waited on: `[KIND]`, `[FUTEX_OP]`, `[LABEL]`.
    pub wait_leaf: bool,
    /// Append ` [file:line]` to frames with debug info.
    pub source_lines: bool,
    /// Include user-space frames.
    pub user_stacks: bool,
    /// Include kernel frames.
    pub kernel_stacks: bool,
    /// Separate user and kernel frames with a `-` frame (only when both are included).
    pub delimiter: bool,
}

impl Default for FoldedOptions {
    fn default() -> Self {
        Self {
            process_root: false,
            wait_leaf: false,
            source_lines: false,
            user_stacks: true,
            kernel_stacks: true,
            delimiter: true,
        }
    }
}

/// Folds samples into lines `STACK VALUE`: identical stacks merged (time summed), sorted by
/// stack, value in microseconds rounded to nearest (at least 1 for non-zero time, so no wait
/// vanishes). Samples with zero time produce no line.
pub(crate) fn folded_lines(samples: &[ResolvedSample], opts: &FoldedOptions) -> Vec<String> {
    let mut totals_ns: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples {
        if s.sample.total_ns == 0 {
            continue;
        }
        *totals_ns.entry(stack_of(s, opts)).or_default() += s.sample.total_ns;
    }
    totals_ns
        .into_iter()
        .map(|(stack, ns)| format!("{stack} {}", ns_to_us(ns)))
        .collect()
}

/// Writes lines, each followed by a newline.
pub(crate) fn write_folded(lines: &[String], w: &mut impl Write) -> io::Result<()> {
    for line in lines {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Nanoseconds to microseconds, rounded to nearest, never rounding non-zero time to 0.
fn ns_to_us(ns: u64) -> u64 {
    match ns {
        0 => 0,
        _ => (ns.saturating_add(500) / 1000).max(1),
    }
}

/// The `;`-joined stack (without value) of one sample.
fn stack_of(s: &ResolvedSample, opts: &FoldedOptions) -> String {
    let sample = &s.sample;
    let both = opts.user_stacks && opts.kernel_stacks && opts.delimiter;
    let mut frames: Vec<String> = Vec::new();

    if opts.process_root {
        frames.push(clean(format!("{} ({})", s.process_name, sample.pid)));
    }
    frames.push(clean(sample.comm.clone()));
    if opts.user_stacks {
        push_stack(&mut frames, &sample.user_stack, &s.user, "user", true, opts);
    }
    if both {
        frames.push("-".into());
    }
    if opts.kernel_stacks {
        push_stack(
            &mut frames,
            &sample.kernel_stack,
            &s.kernel,
            "kernel",
            true,
            opts,
        );
    }

    // Leaves: runnable time is CPU wait, never mixed with blocked time, so it is always
    // marked, and gets no wait kind (the thread was not waiting on that resource).
    if sample.state == Some(ThreadState::Runnable) {
        frames.push("[runnable]".into());
    } else if opts.wait_leaf {
        let call = sample.call.as_ref();
        frames.push(format!(
            "[{}]",
            call.map_or(WaitKind::Other, |c| c.kind).name()
        ));
        if let Some(cmd) = call.and_then(SyscallCall::futex_cmd) {
            frames.push(format!("[{}]", syscalls::futex_op_name(cmd)));
        }
        if let Some(label) = call.and_then(resource_label) {
            frames.push(clean(format!("[{label}]")));
        }
    }
    if sample.still_blocked {
        frames.push("[still blocked]".into());
    }

    // bcc offwaketime: the waker's stacks follow innermost first, then its comm, so the
    // flame graph shows the wakeup path growing out of the blocked stack.
    if let Some(waker) = &sample.waker {
        frames.push("--".into());
        if opts.kernel_stacks {
            push_stack(
                &mut frames,
                &waker.kernel_stack,
                &s.waker_kernel,
                "kernel",
                false,
                opts,
            );
        }
        if both {
            frames.push("-".into());
        }
        if opts.user_stacks {
            push_stack(
                &mut frames,
                &waker.user_stack,
                &s.waker_user,
                "user",
                false,
                opts,
            );
        }
        frames.push(clean(waker.comm.clone()));
    }
    frames.join(";")
}

/// Appends one stack: its frames (outermost first if `outermost_first`, else innermost
/// first), `[missed KIND stack]` if it was lost, nothing if there is none.
fn push_stack(
    out: &mut Vec<String>,
    raw: &RawStack,
    frames: &[Frame],
    what: &str,
    outermost_first: bool,
    opts: &FoldedOptions,
) {
    match raw {
        RawStack::None => {}
        RawStack::Missed => out.push(format!("[missed {what} stack]")),
        RawStack::Frames(_) => {
            let names = frames.iter().map(|f| frame_name(f, opts.source_lines));
            if outermost_first {
                out.extend(names.rev());
            } else {
                out.extend(names);
            }
        }
    }
}

/// The wait leaf label of the resource, for the kinds that have one: `uaddr=0x..` (futex),
/// `epfd=N`, `fd=N` (read, recv, accept), `pid=N` (wait-child).
fn resource_label(call: &SyscallCall) -> Option<String> {
    // fds and pids are C ints: the register's upper half is not part of the value.
    match call.kind {
        WaitKind::Futex | WaitKind::FutexWaitv => Some(format!("uaddr=0x{:x}", call.resource)),
        WaitKind::Epoll => Some(format!("epfd={}", call.resource as i32)),
        WaitKind::Read | WaitKind::Recv | WaitKind::Accept => {
            Some(format!("fd={}", call.resource as i32))
        }
        WaitKind::WaitChild => Some(format!("pid={}", call.resource as i32)),
        _ => None,
    }
}

/// A frame as one element of a folded stack: the name (with ` (inlined)` for inlined
/// frames, and ` [file:line]` when `source_lines` and known), else `module+0xOFF`, else
/// `[unknown 0xADDR]`. Never contains `;` or a line break, which would corrupt the folded
/// format.
pub(crate) fn frame_name(frame: &Frame, source_lines: bool) -> String {
    let mut out = match (&frame.name, &frame.module) {
        (Some(name), _) if matches!(frame.kind, FrameKind::Interpreted { .. }) => {
            interpreted_name(name, frame)
        }
        (Some(name), _) => {
            let mut s = name.clone();
            if frame.inlined {
                s.push_str(" (inlined)");
            }
            if source_lines && let Some(file) = &frame.file {
                s.push_str(" [");
                s.push_str(basename(file));
                if let Some(line) = frame.line {
                    s.push_str(&format!(":{line}"));
                }
                s.push(']');
            }
            s
        }
        (None, Some(module)) => format!("{}+0x{:x}", basename(module), frame.offset),
        (None, None) => format!("[unknown 0x{:x}]", frame.addr),
    };
    sanitize_in_place(&mut out);
    out
}

/// An interpreted function (a Python frame): `function (file.py:line)`, the file's base name,
/// the line when known; always, since the file is what tells one language's frames from
/// another's (and inferno's palettes match on it).
fn interpreted_name(name: &str, frame: &Frame) -> String {
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{name} ({}:{line})", basename(file)),
        (Some(file), None) => format!("{name} ({})", basename(file)),
        (None, _) => name.to_owned(),
    }
}

/// The names, as [`frame_name`] writes them, of every interpreted frame of `samples` (the
/// SVG colours them apart).
pub(crate) fn interpreted_names(
    samples: &[ResolvedSample],
    opts: &FoldedOptions,
) -> std::collections::BTreeSet<String> {
    samples
        .iter()
        .flat_map(|s| s.user.iter().chain(&s.waker_user))
        .filter(|f| matches!(f.kind, FrameKind::Interpreted { .. }))
        .map(|f| frame_name(f, opts.source_lines))
        .collect()
}

/// Replaces the characters that have a meaning in folded stacks: `;` (frame separator)
/// becomes `:`, line breaks become spaces.
fn sanitize_in_place(s: &mut String) {
    if s.contains([';', '\n', '\r']) {
        *s = s.replace(';', ":").replace(['\n', '\r'], " ");
    }
}

/// Last path component (`/usr/lib/libc.so.6` -> `libc.so.6`); `[vdso]` stays as is.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A free-text frame (comm, process name, label) made safe for the format; an empty one
/// would make an empty frame, so it becomes `[unnamed]`.
fn clean(mut s: String) -> String {
    sanitize_in_place(&mut s);
    if s.trim().is_empty() {
        "[unnamed]".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
