//! The CPython interpreters on this machine, the `py_*.py` workloads that get stuck in them,
//! and reading the Python side of a `watch` report.
//!
//! `watch` reads Python stacks from a CPython process's memory, whose layout changes with every
//! minor version, so its tests run the same workloads under every CPython found here: Debian's
//! (`/usr/bin/python3.N`) and each pyenv version (`$(pyenv root)/versions/3.N.M`, the version's
//! own `bin/python3.N`, never a shim) from [`OLDEST`] to [`NEWEST`]. Each workload prints its
//! ground truth (tids, locks, ports, stdlib files) as one JSON line once its threads are really
//! stuck ([`PyWorkload::facts`]); the lines its threads stop at carry a `# LINE: <tag>` comment
//! ([`marker_line`]), so no test hard-codes a line number.

use std::{
    env, fmt, fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{REQUIRE_BPF_ENV, watch_workloads::RunningWorkload, workload_file};

/// Oldest CPython minor version covered (3.N).
pub const OLDEST: u32 = 8;
/// Newest CPython minor version covered (3.N).
pub const NEWEST: u32 = 13;
/// Debian's interpreter, which must always be covered.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
/// Where pyenv keeps its versions when `pyenv` is not on `PATH` and `PYENV_ROOT` is unset.
const DEFAULT_PYENV_ROOT: &str = "/root/.pyenv";
/// How long a workload may take to print its facts line.
pub const FACTS_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an interpreter comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The distribution's package (`/usr/bin`).
    Debian,
    /// A pyenv build.
    Pyenv,
}

/// One CPython interpreter.
#[derive(Clone, Debug)]
pub struct Python {
    /// The interpreter binary.
    pub path: PathBuf,
    /// `(major, minor, micro)` as the interpreter reports it.
    pub version: (u32, u32, u32),
    /// Where it comes from.
    pub origin: Origin,
}

impl Python {
    /// The interpreter at `path`, asked for its version; `None` if it does not run.
    pub fn probe(path: &Path, origin: Origin) -> Option<Self> {
        let output = Command::new(path)
            .args(["-c", "import sys; print('%d %d %d' % sys.version_info[:3])"])
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8(output.stdout).ok()?;
        let numbers: Vec<u32> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [major, minor, micro] = numbers[..] else {
            return None;
        };
        Some(Self {
            path: path.to_owned(),
            version: (major, minor, micro),
            origin,
        })
    }

    /// `3.11.7`.
    pub fn version_string(&self) -> String {
        let (major, minor, micro) = self.version;
        format!("{major}.{minor}.{micro}")
    }

    /// True from 3.11 on, where frames carry `co_qualname` (e.g. `Thread.join`); before, the
    /// plain `co_name` (`join`).
    pub fn has_qualname(&self) -> bool {
        self.version >= (3, 11, 0)
    }

    /// The name a frame of the function `qualname` shows in `python_stack` on this version.
    pub fn frame_name<'a>(&self, qualname: &'a str) -> &'a str {
        if self.has_qualname() {
            qualname
        } else {
            qualname.rsplit('.').next().unwrap_or(qualname)
        }
    }
}

impl fmt::Display for Python {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Debian => "debian",
            Origin::Pyenv => "pyenv",
        };
        write!(
            f,
            "CPython {} ({origin}, {})",
            self.version_string(),
            self.path.display()
        )
    }
}

/// Debian's CPython 3.11; panics if it is missing (it is never skipped).
pub fn debian_python() -> Python {
    Python::probe(Path::new(DEBIAN_PYTHON), Origin::Debian)
        .unwrap_or_else(|| panic!("{DEBIAN_PYTHON} is missing or does not run; install python3.11"))
}

/// Every other `python3.N` in `/usr/bin` in the covered range (besides [`DEBIAN_PYTHON`]).
fn other_system_pythons() -> Vec<Python> {
    (OLDEST..=NEWEST)
        .map(|minor| PathBuf::from(format!("/usr/bin/python3.{minor}")))
        .filter(|path| path != Path::new(DEBIAN_PYTHON) && path.is_file())
        .filter_map(|path| Python::probe(&path, Origin::Debian))
        .collect()
}

/// pyenv's root: `pyenv root`, else `$PYENV_ROOT`, else [`DEFAULT_PYENV_ROOT`].
pub fn pyenv_root() -> PathBuf {
    let from_pyenv = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    from_pyenv
        .or_else(|| env::var("PYENV_ROOT").ok())
        .map_or_else(|| PathBuf::from(DEFAULT_PYENV_ROOT), PathBuf::from)
}

/// The pyenv versions from 3.[`OLDEST`] to 3.[`NEWEST`], oldest first (one per directory
/// `versions/3.N.M`, run as its own `bin/python3.N`).
pub fn pyenv_pythons() -> Vec<Python> {
    let versions = pyenv_root().join("versions");
    let Ok(entries) = fs::read_dir(&versions) else {
        return Vec::new();
    };
    let mut pythons: Vec<Python> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let mut parts = name.split('.');
            let (major, minor) = (parts.next()?, parts.next()?.parse::<u32>().ok()?);
            if major != "3" || !(OLDEST..=NEWEST).contains(&minor) {
                return None;
            }
            let binary = entry.path().join(format!("bin/python3.{minor}"));
            Python::probe(&binary, Origin::Pyenv)
        })
        .collect();
    pythons.sort_by_key(|p| p.version);
    pythons
}

/// pyenv's `major.minor` (the newest patch level there), also outside the range the other
/// tests cover (`profile --python` reads 3.6 and 3.7 too); `None` if pyenv has none.
pub fn pyenv_python(major: u32, minor: u32) -> Option<Python> {
    let versions = pyenv_root().join("versions");
    let prefix = format!("{major}.{minor}.");
    let mut found: Vec<Python> = fs::read_dir(&versions)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|entry| {
            let binary = entry.path().join(format!("bin/python{major}.{minor}"));
            Python::probe(&binary, Origin::Pyenv)
        })
        .collect();
    found.sort_by_key(|p| p.version);
    found.pop()
}

/// Fails under `STALLWATCH_REQUIRE_BPF=1` if there are no pyenv versions at all (CI must cover
/// more than one CPython); otherwise says so.
pub fn require_pyenv(pyenv: &[Python]) {
    if !pyenv.is_empty() {
        return;
    }
    let root = pyenv_root();
    if env::var(REQUIRE_BPF_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{REQUIRE_BPF_ENV}=1 but no pyenv CPython 3.{OLDEST}..3.{NEWEST} under {}",
            root.display()
        );
    }
    eprintln!(
        "only Debian's CPython: no pyenv versions under {}",
        root.display()
    );
}

/// Debian's 3.11, the other `/usr/bin` versions, then every pyenv version.
pub fn all_pythons() -> Vec<Python> {
    let pyenv = pyenv_pythons();
    require_pyenv(&pyenv);
    let mut all = vec![debian_python()];
    all.extend(other_system_pythons());
    all.extend(pyenv);
    all
}

/// Debian's 3.11 and the newest pyenv version (if any): the pair the detailed tests run on.
pub fn debian_and_newest() -> Vec<Python> {
    let pyenv = pyenv_pythons();
    require_pyenv(&pyenv);
    let mut pythons = vec![debian_python()];
    pythons.extend(pyenv.into_iter().max_by_key(|p| p.version));
    pythons
}

/// Names of the workloads' scripts, in `workloads/`.
pub mod scripts {
    /// An asyncio loop stuck in `ThreadPoolExecutor.shutdown` joining a worker stuck in `recv`.
    pub const EXECUTOR_SHUTDOWN: &str = "py_executor_shutdown.py";
    /// An ABBA deadlock on two `threading.RLock`s.
    pub const RLOCK_ABBA: &str = "py_rlock_abba.py";
    /// main waits on a plain `threading.Lock` another thread keeps.
    pub const LOCK_WAIT: &str = "py_lock_wait.py";
    /// One thread blocked in a subinterpreter, main blocked in the main interpreter.
    pub const SUBINTERP: &str = "py_subinterp.py";
}

/// A `py_*.py` workload running under one interpreter; killed on drop (see
/// [`RunningWorkload`]).
pub struct PyWorkload {
    /// The running process (its `pid` and `BLOCKING` lines follow the watch protocol).
    pub running: RunningWorkload,
    /// The interpreter it runs in.
    pub python: Python,
    /// Absolute path of the script (what its frames' `file` says).
    pub script: PathBuf,
}

impl PyWorkload {
    /// Starts `workloads/SCRIPT ARGS` under `python`.
    pub fn spawn(python: &Python, script: &str, args: &[&str]) -> Self {
        let script = workload_file(script);
        let mut argv = vec![script.to_str().expect("UTF-8 workload path")];
        argv.extend_from_slice(args);
        Self {
            running: RunningWorkload::spawn(&python.path, &argv),
            python: python.clone(),
            script,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// The facts line (the first line that is a JSON object), waiting up to [`FACTS_TIMEOUT`]
    /// for the workload to be stuck; panics with everything it printed otherwise.
    pub fn facts(&self) -> Value {
        let deadline = Instant::now() + FACTS_TIMEOUT;
        loop {
            let lines = self.running.lines();
            if let Some(line) = lines.iter().find(|l| l.starts_with('{')) {
                return serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad facts line {line}: {e}"));
            }
            assert!(
                Instant::now() < deadline,
                "{} under {} printed no facts within {FACTS_TIMEOUT:?}:\n{}",
                self.script.display(),
                self.python,
                lines.join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The line of `# LINE: <tag>` in the script.
    pub fn line(&self, tag: &str) -> u64 {
        marker_line(&self.script, tag)
    }

    /// Expects a frame of the script's `qualname` (named as this version names it) at `# LINE:
    /// <tag>`.
    pub fn frame(&self, qualname: &str, tag: &str) -> ExpectedFrame {
        ExpectedFrame {
            function: self.python.frame_name(qualname).to_owned(),
            file: Some(self.script.display().to_string()),
            line: Some(self.line(tag)),
        }
    }
}

/// The 1-based line of `path` that carries the comment `# LINE: <tag>`; panics unless there is
/// exactly one.
pub fn marker_line(path: &Path, tag: &str) -> u64 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let marker = format!("# LINE: {tag}");
    let lines: Vec<u64> = text
        .lines()
        .zip(1..)
        .filter(|(line, _)| line.trim_end().ends_with(&marker))
        .map(|(_, number)| number)
        .collect();
    match lines[..] {
        [line] => line,
        _ => panic!(
            "{marker:?} is on lines {lines:?} of {}, not on exactly one",
            path.display()
        ),
    }
}

/// The 1-based line of the first line containing `needle` inside the `def <function>(` of the
/// Python source `path` (a stdlib file, whose line numbers change between versions).
pub fn def_line(path: &Path, function: &str, needle: &str) -> u64 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let def = format!("def {function}(");
    let mut lines = text.lines().zip(1..);
    let Some((def_text, _)) = lines.find(|(line, _)| line.trim_start().starts_with(&def)) else {
        panic!("no {def:?} in {}", path.display());
    };
    let indent = def_text.len() - def_text.trim_start().len();
    for (line, number) in lines {
        let outside = !line.trim().is_empty() && line.len() - line.trim_start().len() <= indent;
        if outside {
            break;
        }
        if line.contains(needle) {
            return number;
        }
    }
    panic!("no {needle:?} in {def:?} of {}", path.display())
}

/// One frame of a thread object's `python_stack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: String,
    /// `co_filename`.
    pub file: String,
    /// The line being executed.
    pub line: u64,
}

impl fmt::Display for PyFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

/// A thread object's `python_stack`, innermost first; panics (with the thread) if it has none.
pub fn python_stack(thread: &Value) -> Vec<PyFrame> {
    let Some(frames) = thread["python_stack"].as_array() else {
        panic!("no python_stack in thread object:\n{thread:#}");
    };
    frames
        .iter()
        .map(|f| PyFrame {
            function: f["function"].as_str().unwrap_or_default().to_owned(),
            file: f["file"].as_str().unwrap_or_default().to_owned(),
            line: f["line"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// A frame a test expects; `None` fields match anything.
#[derive(Clone, Debug)]
pub struct ExpectedFrame {
    /// Function name as the version shows it.
    pub function: String,
    /// `co_filename`.
    pub file: Option<String>,
    /// Line.
    pub line: Option<u64>,
}

impl ExpectedFrame {
    /// A frame of `function` in `file` at `line`.
    pub fn at(function: &str, file: &Path, line: u64) -> Self {
        Self {
            function: function.to_owned(),
            file: Some(file.display().to_string()),
            line: Some(line),
        }
    }

    /// A frame of `function`, wherever.
    pub fn named(function: &str) -> Self {
        Self {
            function: function.to_owned(),
            file: None,
            line: None,
        }
    }

    fn matches(&self, frame: &PyFrame) -> bool {
        frame.function == self.function
            && self.file.as_ref().is_none_or(|f| *f == frame.file)
            && self.line.is_none_or(|l| l == frame.line)
    }
}

/// Panics unless `stack` (innermost first) starts with `expected[0]` and holds the rest in
/// order after it (other frames may sit between them).
pub fn assert_stack(stack: &[PyFrame], expected: &[ExpectedFrame], context: &str) {
    let shown = || {
        stack
            .iter()
            .map(|f| format!("  {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (Some(first), Some(innermost)) = (expected.first(), stack.first()) else {
        panic!("{context}: empty python_stack, expected {expected:?}");
    };
    assert!(
        first.matches(innermost),
        "{context}: innermost Python frame is {innermost}, expected {first:?}; stack:\n{}",
        shown()
    );
    let mut rest = stack.iter();
    for want in expected {
        assert!(
            rest.any(|f| want.matches(f)),
            "{context}: no {want:?} (in order) in python_stack:\n{}",
            shown()
        );
    }
}
