//! Golden files: expected outputs checked in under `tests/golden/`, compared whole
//! (inferno's habit). `UPDATE_GOLDEN=1 cargo test -p tracer-user` rewrites them after an
//! intended change; review the diff like code.

use std::{fs, path::PathBuf};

/// Where golden files live.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Where recorded inputs live (`watch --record`, `profile --record` of real runs).
pub(crate) fn record(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/records")
        .join(name)
}

/// Panics unless `got` is the golden file `name`; rewrites it instead with `UPDATE_GOLDEN=1`.
pub(crate) fn assert_golden(name: &str, got: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(golden_dir()).expect("creating tests/golden");
        fs::write(&path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from the output at line {}; UPDATE_GOLDEN=1 rewrites it.\n\
             --- got ---\n{got}",
            path.display(),
            line + 1
        );
    }
}
