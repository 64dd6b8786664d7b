//! Rust's standard library: `std::sync::Mutex`/`RwLock` waits and `std::thread::park`.
//!
//! std's futex-based locks keep no owner in their word (0 unlocked, 1 locked, 2 contended), so
//! this runtime names waiting code but never an owner: a Rust ABBA deadlock is reported as
//! stalled locks, never as an invented cycle.

use super::{Runtime, WaitName};
use crate::{model::WaitingCode, procs::maps::Maps};

/// Rust's std.
pub(super) struct RustStd;

const LOCK: WaitingCode = WaitingCode::Lock { glibc_mutex: false };

impl Runtime for RustStd {
    fn name(&self) -> &'static str {
        "rust_std"
    }

    /// Every process: std is linked statically into Rust programs and leaves no trace in the
    /// mappings; its frame names identify it.
    fn detect(&self, _maps: &Maps) -> bool {
        true
    }

    fn wait_names(&self) -> &'static [WaitName] {
        const NAMES: &[WaitName] = &[
            WaitName::new("park", WaitingCode::Condition),
            WaitName::new("mutex", LOCK),
            WaitName::new("lock_contended", LOCK),
            WaitName::new("rwlock", LOCK),
        ];
        NAMES
    }
}
