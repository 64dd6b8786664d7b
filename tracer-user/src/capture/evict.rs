//! Keeping the stack store from filling during a long `watch`.
//!
//! `profile` needs every stack until it drains at the end, but `watch` only needs the stacks
//! of waits still in flight: a host-wide watch left running for hours would otherwise fill
//! `STACKS` and lose (count) every new stack. Stacks no thread state refers to are deleted, but
//! only after two sweeps in a row found them unreferenced: a stack the kernel stores just before
//! a sweep is referenced by its wait by the next one. What remains possible is a stack found
//! already stored (same content) by a thread in the instant between the sweep's read and its
//! delete; that wait then shows a missed stack.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData};
use tracer_common::{StackTrace, ThreadState};

/// Remembers what the previous sweep found unreferenced.
#[derive(Debug, Default)]
pub(super) struct StackSweeper {
    unreferenced_before: HashSet<u64>,
}

impl StackSweeper {
    /// Deletes stacks unreferenced in this sweep and the previous one; returns how many.
    pub(super) fn sweep(
        &mut self,
        stacks: &mut HashMap<MapData, u64, StackTrace>,
        threads: &HashMap<MapData, u32, ThreadState>,
    ) -> usize {
        let mut referenced = HashSet::new();
        for (_, t) in threads.iter().flatten() {
            referenced.extend([
                t.wait.kernel_stack_id,
                t.wait.user_stack_id,
                t.wait.waker.kernel_stack_id,
                t.wait.waker.user_stack_id,
                t.memo.kernel_stack_id,
                t.memo.user_stack_id,
            ]);
        }
        let unreferenced: HashSet<u64> = stacks
            .keys()
            .flatten()
            .filter(|id| !referenced.contains(id))
            .collect();
        let mut deleted = 0;
        for id in unreferenced.intersection(&self.unreferenced_before) {
            if stacks.remove(id).is_ok() {
                deleted += 1;
            }
        }
        self.unreferenced_before = unreferenced
            .difference(&self.unreferenced_before)
            .copied()
            .collect();
        deleted
    }
}
