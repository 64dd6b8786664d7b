//! stallwatch: off-CPU and blocking tracer (library half of the `stallwatch` binary).
//!
//! Data flows one way: BPF maps -> `capture` -> `model` -> `stacks` (unwind, symbolize,
//! runtimes' frames) -> `export` / `report`. Only `capture` knows aya; everything after it
//! is pure Rust. `watch` adds a live path: in-flight waits and the `inspect`ed `/proc`
//! state -> `watch::gather` (facts) -> `stall` (owners, verdicts, deadlock cycles) ->
//! `report::watch`. `procs` is the one registry of the processes looked at; `runtime` is
//! what stallwatch knows about the code threads run in; `record` saves what the pure stages
//! consume, and `replay` renders it again.
//!
//! The library's API is what the binary calls: the command line (`cli`) and one `run` per
//! subcommand. Everything else is `pub(crate)`.

mod capture;
pub mod cli;
mod clock;
mod command;
mod export;
#[cfg(test)]
mod golden;
mod inspect;
mod model;
mod procs;
pub mod profile;
mod record;
pub mod replay;
mod report;
mod runtime;
mod stacks;
mod stall;
mod symbolize;
mod ticker;
mod unwind;
pub mod watch;
