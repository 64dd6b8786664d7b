//! stallwatch: off-CPU and blocking tracer (library half of the `stallwatch` binary).
//!
//! Data flows one way: BPF maps -> [`capture`] -> [`model`] -> [`symbolize`] ->
//! [`export`] / [`report`]. Only `capture` knows aya; everything after it is pure Rust.

pub mod capture;
pub mod cli;
pub mod command;
pub mod export;
pub mod inspect;
pub mod model;
pub mod profile;
pub mod report;
pub mod symbolize;
