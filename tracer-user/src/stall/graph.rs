//! The wait-for graph: waiter -> the lock it waits for -> the thread that holds it.
//!
//! Each blocked thread waits for at most one thing, so every node has at most one outgoing
//! edge and a cycle is found by walking from each node until a node repeats (jstack's
//! deadlock finder does the same over Java monitors). Edges come only from trusted owners
//! (see `owner`), and only between threads of one process: a cycle is never guessed.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Cycle, CycleEdge, FutexOwner};

/// One waiter's outgoing edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edge {
    /// The lock it waits for.
    pub lock_uaddr: u64,
    /// Who holds it.
    pub owner: FutexOwner,
}

/// The wait-for graph of one process.
#[derive(Clone, Debug, Default)]
pub(crate) struct WaitForGraph {
    edges: BTreeMap<u32, Edge>,
}

impl WaitForGraph {
    /// Adds `tid -> lock -> owner`.
    pub(crate) fn add(&mut self, tid: u32, lock_uaddr: u64, owner: FutexOwner) {
        self.edges.insert(tid, Edge { lock_uaddr, owner });
    }

    /// Every cycle, each starting at its lowest tid, in order of that tid.
    pub(crate) fn cycles(&self, pid: u32) -> Vec<Cycle> {
        let mut found: BTreeMap<u32, Cycle> = BTreeMap::new();
        let mut done: BTreeSet<u32> = BTreeSet::new();
        for &start in self.edges.keys() {
            let mut path: Vec<u32> = Vec::new();
            let mut node = start;
            while !done.contains(&node) {
                if let Some(pos) = path.iter().position(|&n| n == node) {
                    let members = &path[pos..];
                    let first = *members.iter().min().expect("non-empty cycle");
                    found.insert(first, self.cycle_from(pid, first));
                    break;
                }
                path.push(node);
                match self.edges.get(&node) {
                    Some(edge) => node = edge.owner.tid,
                    None => break,
                }
            }
            done.extend(path);
        }
        found.into_values().collect()
    }

    fn cycle_from(&self, pid: u32, first: u32) -> Cycle {
        let mut edges = Vec::new();
        let mut node = first;
        loop {
            let edge = self.edges[&node];
            edges.push(CycleEdge {
                tid: node,
                lock_uaddr: edge.lock_uaddr,
                owner: edge.owner,
            });
            node = edge.owner.tid;
            if node == first {
                return Cycle { pid, edges };
            }
        }
    }

    /// The cycle member `tid`'s chain of owners leads into, if any (for threads blocked
    /// behind a deadlock without being part of it).
    pub(crate) fn leads_into(&self, tid: u32, members: &BTreeSet<u32>) -> Option<u32> {
        let mut node = tid;
        for _ in 0..=self.edges.len() {
            let owner = self.edges.get(&node)?.owner.tid;
            if members.contains(&owner) {
                return Some(owner);
            }
            node = owner;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OwnerSource;

    fn graph(edges: &[(u32, u32)]) -> WaitForGraph {
        let mut g = WaitForGraph::default();
        for &(from, to) in edges {
            let owner = FutexOwner {
                tid: to,
                source: OwnerSource::GlibcMutex,
            };
            g.add(from, 0x1000 + u64::from(to), owner);
        }
        g
    }

    /// Check that an ABBA pair is one cycle starting at the lower tid, edges in order.
    #[test]
    fn abba_is_one_cycle() {
        let cycles = graph(&[(11, 10), (10, 11)]).cycles(1);
        assert_eq!(cycles.len(), 1);
        let tids: Vec<(u32, u32)> = cycles[0]
            .edges
            .iter()
            .map(|e| (e.tid, e.owner.tid))
            .collect();
        assert_eq!(tids, [(10, 11), (11, 10)]);
        assert_eq!(cycles[0].edges[0].lock_uaddr, 0x1000 + 11);
    }

    /// Check that chains and trees without a loop yield no cycle.
    #[test]
    fn chains_are_not_cycles() {
        assert!(graph(&[(1, 2), (2, 3), (4, 3)]).cycles(1).is_empty());
        assert!(WaitForGraph::default().cycles(1).is_empty());
    }

    /// Check that a three-thread cycle with a waiter hanging off it is found once, and the
    /// waiter leads into it.
    #[test]
    fn three_cycle_with_tail() {
        let g = graph(&[(5, 1), (1, 2), (2, 3), (3, 1)]);
        let cycles = g.cycles(7);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].edges.len(), 3);
        assert_eq!(cycles[0].edges[0].tid, 1);
        let members: BTreeSet<u32> = [1, 2, 3].into();
        assert_eq!(g.leads_into(5, &members), Some(1));
        assert_eq!(g.leads_into(9, &members), None);
    }

    /// Check that two separate cycles are both reported.
    #[test]
    fn two_cycles() {
        let cycles = graph(&[(1, 2), (2, 1), (3, 4), (4, 3)]).cycles(1);
        assert_eq!(cycles.len(), 2);
    }
}
