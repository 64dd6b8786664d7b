//! The Java frames put among the native ones, where the Java code runs (the way a mixed-mode
//! `jstack -m` reads).
//!
//! Natively, Java frames are addresses in the code cache: the interpreter, compiled methods,
//! the call stub (anonymous memory, shown as unknown `jit` frames when the unwinder gets
//! through them at all). Walking the native stack innermost first, each run of code cache
//! frames is replaced by the next run of Java frames (one per entry from the VM into Java,
//! [`stack`](super::stack)). Java runs left over (the native unwinder stopped at the first
//! code cache frame, or before) go after the native frames: never lost, never invented.

use crate::model::Frame;

/// `native` (innermost first) with the Java `runs` (innermost first) put in; `in_code_cache`
/// says whether an address is Java code.
pub(crate) fn merge(
    native: &[Frame],
    runs: Vec<Vec<Frame>>,
    in_code_cache: impl Fn(u64) -> bool,
) -> Vec<Frame> {
    let mut runs = runs.into_iter();
    let mut merged = Vec::with_capacity(native.len() + runs.len() * 8);
    let mut replacing = false;
    for frame in native {
        if !in_code_cache(frame.addr) {
            replacing = false;
            merged.push(frame.clone());
            continue;
        }
        if replacing {
            continue;
        }
        match runs.next() {
            Some(run) => {
                merged.extend(run);
                replacing = true;
            }
            None => merged.push(frame.clone()),
        }
    }
    merged.extend(runs.flatten());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrameKind;

    const CODE: std::ops::Range<u64> = 0x7f00_0000..0x7f10_0000;

    fn native(frames: &[(&str, u64)]) -> Vec<Frame> {
        frames
            .iter()
            .map(|&(name, addr)| Frame {
                addr,
                ..Frame::named(name, FrameKind::Native)
            })
            .collect()
    }

    fn java(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| {
                Frame::named(
                    *n,
                    FrameKind::Interpreted {
                        runtime: "hotspot".into(),
                    },
                )
            })
            .collect()
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().filter_map(|f| f.name.as_deref()).collect()
    }

    /// Check that each run of code cache frames is replaced by one Java run, the VM's frames
    /// between and around them kept.
    #[test]
    fn java_runs_replace_code_cache_runs() {
        let native = native(&[
            ("futex_wait", 0x1000),
            ("ObjectMonitor::enter", 0x2000),
            ("[unknown]", 0x7f00_0100),
            ("[unknown]", 0x7f00_0200),
            ("JavaCalls::call_helper", 0x3000),
            ("[unknown]", 0x7f00_0300),
            ("thread_native_entry", 0x4000),
        ]);
        let merged = merge(
            &native,
            vec![java(&["A.inner", "A.outer"]), java(&["Thread.run"])],
            |a| CODE.contains(&a),
        );
        assert_eq!(
            names(&merged),
            [
                "futex_wait",
                "ObjectMonitor::enter",
                "A.inner",
                "A.outer",
                "JavaCalls::call_helper",
                "Thread.run",
                "thread_native_entry"
            ]
        );
    }

    /// Check that Java runs without code cache frames to replace go after the native ones,
    /// and code cache frames without Java runs stay.
    #[test]
    fn leftovers_are_kept() {
        let merged = merge(
            &native(&[("futex_wait", 0x1000), ("Unsafe_Park", 0x2000)]),
            vec![java(&["Unsafe.park", "LockSupport.park"])],
            |a| CODE.contains(&a),
        );
        assert_eq!(
            names(&merged),
            [
                "futex_wait",
                "Unsafe_Park",
                "Unsafe.park",
                "LockSupport.park"
            ]
        );
        let merged = merge(
            &native(&[("[unknown]", 0x7f00_0100), ("start_thread", 0x2000)]),
            Vec::new(),
            |a| CODE.contains(&a),
        );
        assert_eq!(names(&merged), ["[unknown]", "start_thread"]);
    }
}
