//! The Python frames put among the native ones, where the eval loop runs them (the way
//! `py-spy dump --native` reads).
//!
//! Each native call of `_PyEval_EvalFrameDefault` (`PyEval_EvalFrameEx` in 2.7) runs a run of
//! Python frames: one frame up to 3.10, from 3.11 every frame down to the one the C code entered the loop with (an *entry*
//! frame; py-spy marks it, or the frame before a 3.12+ shim). Walking both stacks innermost
//! first, each eval-loop native frame is replaced by its run of Python frames. Should the runs
//! and the eval frames not pair up (a native stack cut short, symbols missing), the Python
//! frames left over go after the native ones: never lost, never invented.

use super::{NAME, PyFrame};
use crate::model::{Frame, FrameKind};

/// The eval loop's native function (3.6+).
const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";
/// 2.7's. 3.6–3.10 keep it as a wrapper that calls [`EVAL_FRAME`], so it is taken for the eval
/// loop only in stacks without the latter.
const EVAL_FRAME_2_7: &str = "PyEval_EvalFrameEx";

/// `native` (innermost first) with `python` (innermost first) put in.
pub(crate) fn merge(native: &[Frame], python: &[PyFrame]) -> Vec<Frame> {
    let eval = if native.iter().any(|f| f.name.as_deref() == Some(EVAL_FRAME)) {
        EVAL_FRAME
    } else {
        EVAL_FRAME_2_7
    };
    let mut runs = python
        .split_inclusive(|f| f.entry)
        .map(|run| run.iter().map(to_frame));
    let mut merged = Vec::with_capacity(native.len() + python.len());
    for frame in native {
        if frame.name.as_deref() == Some(eval)
            && let Some(run) = runs.next()
        {
            merged.extend(run);
        } else {
            merged.push(frame.clone());
        }
    }
    merged.extend(runs.flatten());
    merged
}

fn to_frame(frame: &PyFrame) -> Frame {
    Frame {
        file: (!frame.file.is_empty()).then(|| frame.file.clone()),
        line: (frame.line > 0).then_some(frame.line),
        ..Frame::named(
            frame.function.clone(),
            FrameKind::Interpreted {
                runtime: NAME.to_owned(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(function: &str, entry: bool) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: "/app.py".into(),
            line: 7,
            entry,
            locals: Vec::new(),
        }
    }

    fn native(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame::named(*n, FrameKind::Native))
            .collect()
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().filter_map(|f| f.name.as_deref()).collect()
    }

    /// Check 3.11+ runs: frames down to each entry frame replace one eval frame.
    #[test]
    fn runs_replace_eval_frames() {
        let native = native(&[
            "do_futex_wait",
            "PyThread_acquire_lock_timed",
            EVAL_FRAME,
            "method_vectorcall",
            EVAL_FRAME,
            "main",
        ]);
        let python = [
            py("Lock.acquire_inner", false),
            py("worker", true),
            py("<module>", true),
        ];
        let merged = merge(&native, &python);
        assert_eq!(
            names(&merged),
            [
                "do_futex_wait",
                "PyThread_acquire_lock_timed",
                "Lock.acquire_inner",
                "worker",
                "method_vectorcall",
                "<module>",
                "main"
            ]
        );
        assert_eq!(merged[2].file.as_deref(), Some("/app.py"));
        assert_eq!(merged[2].line, Some(7));
        assert!(matches!(merged[2].kind, FrameKind::Interpreted { .. }));
    }

    /// Check that Python frames without eval frames to pair with go after the native ones,
    /// and eval frames without Python frames stay.
    #[test]
    fn leftovers_are_kept() {
        let merged = merge(&native(&["read", "main"]), &[py("f", true)]);
        assert_eq!(names(&merged), ["read", "main", "f"]);
        let merged = merge(&native(&[EVAL_FRAME, EVAL_FRAME]), &[py("f", true)]);
        assert_eq!(names(&merged), ["f", EVAL_FRAME]);
    }

    /// Check that 2.7's eval frames take the runs, and that in a 3.x stack its name (a
    /// wrapper there) is left alone.
    #[test]
    fn eval_frames_of_2_7() {
        let python = [py("f", true), py("g", true)];
        let merged = merge(&native(&[EVAL_FRAME_2_7, EVAL_FRAME_2_7]), &python);
        assert_eq!(names(&merged), ["f", "g"]);
        let merged = merge(&native(&[EVAL_FRAME, EVAL_FRAME_2_7, EVAL_FRAME]), &python);
        assert_eq!(names(&merged), ["f", EVAL_FRAME_2_7, "g"]);
    }
}
