//! Stall and deadlock detection over the threads `watch` found blocked: infer who holds what
//! each waits for, classify each wait (timed or indefinite), build each process's wait-for
//! graph from the owners, find cycles, give every blocked thread a verdict and a structured
//! reason, and follow which waits were reported. Pure: no `/proc`, no BPF, no clock.

pub(crate) mod analyze;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod graph;
pub(crate) mod owner;
pub(crate) mod peer_chain;
pub(crate) mod periodic;
pub(crate) mod pipe_wait;
pub(crate) mod socket_wait;
pub(crate) mod timing;
pub(crate) mod tracker;
