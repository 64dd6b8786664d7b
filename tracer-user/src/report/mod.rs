//! Reports for people: the end-of-run summary (text on stderr, JSON on request) and the
//! per-scan reports of `watch` (text, or JSON Lines for scripts).
//!
//! Flame graphs answer "where"; the summary answers "how much, in whom, on what, and can I
//! trust it" (losses), which is what one wants to see first after a run.

pub mod summary;
pub mod watch;
