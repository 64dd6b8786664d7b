//! Sites (`--unwind dwarf|auto`): the stack copies BPF ships once per new site, unwound once
//! each with DWARF CFI while their process lives, and kept by site id so that every wait the
//! in-kernel aggregate charged to the site gets the same frames.
//!
//! `auto` ships the frame-pointer walk with each copy as well and picks, per site: the DWARF
//! unwind when it reached the stack's root (CFI says the outermost frame has no caller:
//! `_start`, `clone3`), since then nothing is missing; otherwise whichever of the two keeps
//! more real frames (a frame-pointer walk is cut at its first address outside code,
//! [`super::validate`]), so a stack deeper than the copy still gets the frames its frame
//! pointers give.

use std::collections::HashMap;

use super::{MAX_USER_FRAMES, validate};
use crate::{
    model::{Counters, RawStack, StackCopy},
    procs::Procs,
    unwind::{UnwindError, Unwinder},
};

/// The frames of every site received so far, and how many could not be unwound, by reason.
#[derive(Debug, Default)]
pub(crate) struct Sites {
    stacks: HashMap<u64, RawStack>,
    not_unwound: u64,
    process_gone: u64,
}

impl Sites {
    /// The user stack of each site so far, by site id (what `Session::finish` takes).
    pub(crate) fn stacks(&self) -> &HashMap<u64, RawStack> {
        &self.stacks
    }

    /// Adds the failures to `counters`: copies that gave no frame beyond the instruction
    /// pointer, and copies of processes whose maps were gone before they could be read.
    pub(crate) fn add_to(&self, counters: &mut Counters) {
        counters.sites_not_unwound += self.not_unwound;
        counters.sites_process_gone += self.process_gone;
    }

    /// Unwinds a new site (once: a site id seen before keeps its frames).
    pub(crate) fn add(&mut self, unwinder: &mut Unwinder, procs: &mut Procs, copy: &StackCopy) {
        if self.stacks.contains_key(&copy.site_id) {
            return;
        }
        let unwound = match unwinder.unwind_copy(procs, copy, MAX_USER_FRAMES) {
            Ok(unwound) => Some(unwound),
            Err(UnwindError::ProcessGone { .. }) => {
                self.process_gone += 1;
                None
            }
            Err(_) => None,
        };
        if unwound.as_ref().is_some_and(|(addrs, _)| addrs.len() < 2) {
            self.not_unwound += 1;
        }
        let maps = procs.maps(copy.pid);
        let real = |addrs: &[u64]| {
            maps.as_ref()
                .map_or(addrs.len(), |m| validate::code_prefix_len(m, addrs))
        };
        let stack = choose(unwound, &copy.frame_pointer_walk, copy.regs.ip, real);
        self.stacks.insert(copy.site_id, stack);
    }
}

/// The stack of a site: the DWARF unwind (addresses, reached the root), or the frame-pointer
/// walk when that keeps more real frames (`real` counts them) and the unwind stopped short.
fn choose(
    unwound: Option<(Vec<u64>, bool)>,
    frame_pointer_walk: &RawStack,
    ip: u64,
    real: impl Fn(&[u64]) -> usize,
) -> RawStack {
    let fp = match frame_pointer_walk {
        RawStack::Frames(addrs) => Some(addrs),
        _ => None,
    };
    match (unwound, fp) {
        (Some((addrs, true)), _) => RawStack::Frames(addrs),
        (Some((addrs, false)), Some(fp)) if real(fp) > real(&addrs) => RawStack::Frames(fp.clone()),
        (Some((addrs, false)), _) if !addrs.is_empty() => RawStack::Frames(addrs),
        (_, Some(fp)) => RawStack::Frames(fp.clone()),
        _ if ip != 0 => RawStack::Frames(vec![ip]),
        _ => RawStack::Missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(addrs: &[u64]) -> usize {
        addrs.len()
    }

    /// Check that a DWARF unwind that reached the root wins over a longer frame-pointer walk,
    /// and that a walk cut short loses to a frame-pointer walk with more real frames.
    #[test]
    fn choose_prefers_complete_dwarf_then_more_real_frames() {
        let fp = RawStack::Frames(vec![1, 2, 3, 4]);
        let complete = Some((vec![1, 5, 6], true));
        assert_eq!(
            choose(complete, &fp, 1, all),
            RawStack::Frames(vec![1, 5, 6])
        );
        let cut = Some((vec![1, 5], false));
        assert_eq!(
            choose(cut.clone(), &fp, 1, all),
            RawStack::Frames(vec![1, 2, 3, 4])
        );
        // Only the first two frame-pointer frames are real: the DWARF walk keeps as many.
        let two = |a: &[u64]| a.len().min(2);
        assert_eq!(choose(cut, &fp, 1, two), RawStack::Frames(vec![1, 5]));
    }

    /// Check that without any walk the site keeps its instruction pointer, and without that
    /// it is a missed stack.
    #[test]
    fn choose_falls_back_to_ip() {
        assert_eq!(
            choose(None, &RawStack::None, 7, all),
            RawStack::Frames(vec![7])
        );
        assert_eq!(choose(None, &RawStack::None, 0, all), RawStack::Missed);
        let fp = RawStack::Frames(vec![7, 8]);
        assert_eq!(choose(None, &fp, 7, all), RawStack::Frames(vec![7, 8]));
    }
}
