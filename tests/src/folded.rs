//! Reads stallwatch's folded output (bcc `offcputime -f -d` layout) back into parts.
//!
//! A line is `[PROC (PID);]COMM;user frames;-;kernel frames[;leaf frames] VALUE_US`, outermost
//! frame first. With `--wakers` the target part is followed by
//! `;--;waker kernel frames;-;waker user frames;WAKER_COMM`, innermost first.

use std::{fmt::Write as _, fs, path::Path};

/// Separator between user and kernel frames.
const STACK_SEPARATOR: &str = "-";
/// Separator between the blocked thread's part and the waker's part.
const WAKER_SEPARATOR: &str = "--";

/// One folded line: its frames and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedLine {
    /// Frames, as written (outermost first for the blocked thread).
    pub frames: Vec<String>,
    /// Off-CPU time in microseconds.
    pub value_us: u64,
}

/// Parses folded text. Panics on a malformed line, quoting it.
pub fn parse(text: &str) -> Vec<FoldedLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (stack, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line without a value: {line:?}"));
            let value_us = value
                .parse()
                .unwrap_or_else(|e| panic!("folded line with a bad value ({e}): {line:?}"));
            FoldedLine {
                frames: stack.split(';').map(str::to_owned).collect(),
                value_us,
            }
        })
        .collect()
}

/// Reads and parses a folded file.
pub fn read(path: &Path) -> Vec<FoldedLine> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text)
}

/// Sum of the values of `lines`.
pub fn total_us<'a>(lines: impl IntoIterator<Item = &'a FoldedLine>) -> u64 {
    lines.into_iter().map(|l| l.value_us).sum()
}

/// The first `max` lines of `lines`, one per row, for failure messages.
pub fn dump<'a>(lines: impl IntoIterator<Item = &'a FoldedLine>, max: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines.into_iter().enumerate() {
        if i == max {
            out.push_str("  ...\n");
            break;
        }
        let _ = writeln!(out, "  {} {}", line.frames.join(";"), line.value_us);
    }
    if out.is_empty() {
        out.push_str("  (no lines)\n");
    }
    out
}

/// A folded line split into its parts.
#[derive(Clone, Debug)]
pub struct Parts<'a> {
    /// `PROC (PID)` frame, with `--process-root`.
    pub process: Option<&'a str>,
    /// Thread name.
    pub comm: &'a str,
    /// User frames, outermost first.
    pub user: &'a [String],
    /// Kernel frames, outermost first.
    pub kernel: &'a [String],
    /// `--wait-leaf` and state leaf frames (`[sleep]`, `[fd=3]`, `[runnable]`...).
    pub leaf: &'a [String],
    /// The waker, with `--wakers` when known.
    pub waker: Option<WakerParts<'a>>,
}

/// The waker part of a folded line.
#[derive(Clone, Debug)]
pub struct WakerParts<'a> {
    /// Waker kernel frames, innermost first.
    pub kernel: &'a [String],
    /// Waker user frames, innermost first.
    pub user: &'a [String],
    /// Waker thread name.
    pub comm: &'a str,
}

impl FoldedLine {
    /// Splits the line; `process_root` says whether it was written with `--process-root`.
    pub fn parts(&self, process_root: bool) -> Parts<'_> {
        let frames = &self.frames[..];
        let (target, waker) = match frames.iter().position(|f| f == WAKER_SEPARATOR) {
            Some(i) => (&frames[..i], Some(waker_parts(&frames[i + 1..]))),
            None => (frames, None),
        };
        let (process, rest) = if process_root {
            (
                target.first().map(String::as_str),
                target.get(1..).unwrap_or(&[]),
            )
        } else {
            (None, target)
        };
        let comm = rest.first().map_or("", String::as_str);
        let stacks = rest.get(1..).unwrap_or(&[]);
        let leaf_start =
            stacks.len() - stacks.iter().rev().take_while(|f| is_leaf_frame(f)).count();
        let (stacks, leaf) = stacks.split_at(leaf_start);
        let (user, kernel) = match stacks.iter().position(|f| f == STACK_SEPARATOR) {
            Some(i) => (&stacks[..i], &stacks[i + 1..]),
            None => (stacks, &stacks[stacks.len()..]),
        };
        Parts {
            process,
            comm,
            user,
            kernel,
            leaf,
            waker,
        }
    }

    /// Pid from the `PROC (PID)` root frame (`--process-root` output only).
    pub fn process_pid(&self) -> Option<u32> {
        let root = self.frames.first()?;
        let inner = root.strip_suffix(')')?;
        let (_, pid) = inner.rsplit_once(" (")?;
        pid.parse().ok()
    }
}

fn waker_parts(frames: &[String]) -> WakerParts<'_> {
    let (comm, stacks) = frames
        .split_last()
        .map_or(("", frames), |(c, s)| (c.as_str(), s));
    let (kernel, user) = match stacks.iter().position(|f| f == STACK_SEPARATOR) {
        Some(i) => (&stacks[..i], &stacks[i + 1..]),
        None => (stacks, &stacks[stacks.len()..]),
    };
    WakerParts { kernel, user, comm }
}

/// Leaf frames are bracketed annotations; `[unknown]` and `[missed kernel stack]` stand for
/// stack frames.
fn is_leaf_frame(frame: &str) -> bool {
    let lower = frame.to_ascii_lowercase();
    frame.starts_with('[')
        && frame.ends_with(']')
        && lower != "[unknown]"
        && !lower.starts_with("[missed")
}

/// True if any frame contains one of `needles`.
pub fn any_frame_contains(frames: &[String], needles: &[&str]) -> bool {
    frames
        .iter()
        .any(|f| needles.iter().any(|needle| f.contains(needle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that a full `--process-root --wait-leaf --wakers` line splits into its parts.
    #[test]
    fn parts_of_full_line() {
        let lines = parse(
            "app (42);sw-pipe;start_thread;pipe_thread;site_pipe_read;-;entry_SYSCALL_64;\
             ksys_read;pipe_read;schedule;[read];[fd=4];--;try_to_wake_up;pipe_write;-;\
             __libc_write;sw-writer 1234\n",
        );
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line.value_us, 1234);
        assert_eq!(line.process_pid(), Some(42));
        let parts = line.parts(true);
        assert_eq!(parts.process, Some("app (42)"));
        assert_eq!(parts.comm, "sw-pipe");
        assert_eq!(
            parts.user,
            ["start_thread", "pipe_thread", "site_pipe_read"]
        );
        assert_eq!(
            parts.kernel,
            ["entry_SYSCALL_64", "ksys_read", "pipe_read", "schedule"]
        );
        assert_eq!(parts.leaf, ["[read]", "[fd=4]"]);
        let waker = parts.waker.expect("waker part");
        assert_eq!(waker.comm, "sw-writer");
        assert_eq!(waker.kernel, ["try_to_wake_up", "pipe_write"]);
        assert_eq!(waker.user, ["__libc_write"]);
    }

    /// Check that `[unknown]` kernel frames are not mistaken for leaf frames.
    #[test]
    fn unknown_frames_are_not_leaves() {
        let lines = parse("t;[unknown];-;schedule;[unknown];[missed kernel stack] 7");
        let parts = lines[0].parts(false);
        assert_eq!(parts.comm, "t");
        assert_eq!(parts.user, ["[unknown]"]);
        assert_eq!(
            parts.kernel,
            ["schedule", "[unknown]", "[missed kernel stack]"]
        );
        assert!(parts.leaf.is_empty());
        assert!(parts.waker.is_none());
        assert_eq!(lines[0].process_pid(), None);
    }
}
