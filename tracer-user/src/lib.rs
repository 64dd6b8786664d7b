//! stallwatch: off-CPU and blocking tracer (library half of the `stallwatch` binary).
//!
//! Data flows one way: BPF maps -> [`capture`] -> [`model`] -> [`symbolize`] ->
//! [`export`] / [`report`]. Only `capture` knows aya; everything after it is pure Rust.
//! `watch` adds a live path: in-flight waits and the [`inspect`]ed `/proc` state -> [`stall`]
//! (verdicts, deadlock cycles) -> `report::watch`.
//! [`unwind`] re-unwinds the user stacks of threads that stay blocked, with DWARF CFI read
//! from their modules, where the BPF frame-pointer walk loses frames.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod command;
pub mod export;
pub mod inspect;
pub mod model;
mod procmaps;
pub mod profile;
pub mod report;
pub mod stall;
pub mod symbolize;
pub mod ticker;
pub mod unwind;
pub mod watch;
