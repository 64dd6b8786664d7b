//! Reports for people: the end-of-run summary (text on stderr, JSON on request) and the
//! per-scan reports of `watch` (text, or JSON Lines for scripts), with the words they are made
//! of ([`describe`]).
//!
//! Flame graphs answer "where"; the summary answers "how much, in whom, on what, and can I
//! trust it" (losses), which is what one wants to see first after a run.

pub(crate) mod describe;
pub(crate) mod summary;
pub(crate) mod watch;
