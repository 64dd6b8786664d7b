//! The common scenario: trace one `offcpu_sites` run with `-p`/`-t` and read the results.

use crate::{
    TempDir,
    folded::{self, FoldedLine, any_frame_contains},
    tracer::{RunOutput, Tracer},
    workload::{self, OffcpuSites, SiteResults, Tids},
};

/// Kernel frames that show a futex wait across kernel versions (`futex_wait_queue`,
/// `futex_wait`, `__futex_wait`, 6.18's `futex_do_wait`).
pub const FUTEX_WAIT_FRAMES: &[&str] = &["futex_wait", "futex_do_wait"];

/// One traced workload run.
pub struct SitesTrace {
    /// The workload's tids line.
    pub tids: Tids,
    /// The workload's ground truth.
    pub truth: SiteResults,
    /// The folded output (written with `--process-root`).
    pub lines: Vec<FoldedLine>,
    /// How the tracer ended.
    pub output: RunOutput,
    /// Where the outputs are.
    pub dir: TempDir,
}

/// Starts `offcpu_sites`, attaches `stallwatch profile --process-root -o DIR/out.folded` plus
/// `filter(tids)` and `extra_args`, runs the measured phase, then stops the tracer with
/// `stop_signal` and checks it exited with 0.
pub fn trace_sites(
    label: &str,
    iterations: u32,
    filter: impl FnOnce(&Tids) -> Vec<String>,
    extra_args: &[&str],
    stop_signal: libc::c_int,
) -> SitesTrace {
    trace_sites_binary(
        crate::offcpu_sites_bin(),
        label,
        iterations,
        filter,
        extra_args,
        stop_signal,
    )
}

/// [`trace_sites`] on a given build of the workload (e.g. the one without frame pointers).
pub fn trace_sites_binary(
    binary: &std::path::Path,
    label: &str,
    iterations: u32,
    filter: impl FnOnce(&Tids) -> Vec<String>,
    extra_args: &[&str],
    stop_signal: libc::c_int,
) -> SitesTrace {
    let dir = TempDir::new(label);
    let folded_path = dir.join("out.folded");
    let mut workload = OffcpuSites::spawn_binary(binary, iterations);
    let tids = workload.tids.clone();

    let mut args: Vec<String> = vec!["profile".into(), "--process-root".into(), "-o".into()];
    args.push(folded_path.display().to_string());
    args.extend(filter(&tids));
    args.extend(extra_args.iter().map(|a| a.to_string()));
    let mut tracer = Tracer::spawn(&args);
    tracer.wait_tracing();

    workload.go();
    let truth = workload.finish();
    let output = tracer.stop(stop_signal);
    output.assert_code(0);
    assert!(
        folded_path.is_file(),
        "no folded output at {}; stderr:\n{}",
        folded_path.display(),
        output.stderr
    );
    let lines = folded::read(&folded_path);
    SitesTrace {
        tids,
        truth,
        lines,
        output,
        dir,
    }
}

/// `-p PID` of the workload.
pub fn pid_filter(tids: &Tids) -> Vec<String> {
    vec!["-p".into(), tids.pid.to_string()]
}

impl SitesTrace {
    /// Lines of the workload process whose thread name is `comm`.
    pub fn thread_lines(&self, comm: &str) -> Vec<&FoldedLine> {
        self.lines
            .iter()
            .filter(|l| l.process_pid() == Some(self.tids.pid) && l.parts(true).comm == comm)
            .collect()
    }

    /// Lines of `thread` at its site: the site function among the user frames, or for
    /// [`workload::CONDVAR`] (whose user stack is broken inside glibc) a futex wait in the
    /// kernel frames.
    pub fn site_lines(&self, thread: &str) -> Vec<&FoldedLine> {
        self.thread_lines(thread)
            .into_iter()
            .filter(|l| {
                let parts = l.parts(true);
                match workload::site_function(thread) {
                    Some(function) => any_frame_contains(parts.user, &[function]),
                    None => {
                        any_frame_contains(parts.kernel, FUTEX_WAIT_FRAMES)
                            && !any_frame_contains(parts.user, &[workload::GATE_FUNCTION])
                    }
                }
            })
            .collect()
    }

    /// Failure context: the lines of `comm`, then the tracer's stderr.
    pub fn context(&self, comm: &str) -> String {
        format!(
            "folded lines of {comm} in {}:\n{}tracer stderr:\n{}",
            self.dir.path().display(),
            folded::dump(self.thread_lines(comm), 40),
            self.output.stderr
        )
    }

    /// Failure context: every line.
    pub fn context_all(&self) -> String {
        format!(
            "folded lines:\n{}tracer stderr:\n{}",
            folded::dump(&self.lines, 80),
            self.output.stderr
        )
    }
}
