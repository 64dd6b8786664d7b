//! Stall and deadlock detection over the threads `watch` found blocked: classify each wait
//! (timed or indefinite), build each process's wait-for graph from futex owners, find cycles,
//! and give every blocked thread a verdict. Pure: no `/proc`, no BPF, no clock.

pub mod analyze;
pub mod describe;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod graph;
pub mod model;
pub mod owner;
pub mod timing;
pub mod tracker;
