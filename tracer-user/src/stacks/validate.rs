//! Which user addresses of a stack are real frames.
//!
//! BPF walks user stacks by frame pointers. Code built without them (Debian's glibc) leaves
//! rbp holding whatever it was last used for, and the walk then reads "return addresses" out
//! of arbitrary stack words: `profile -- sleep 0.5` showed the sleep's own `timespec`
//! (500,000,000 ns, `0x1dcd6500`) as a frame. A return address points into code, so an
//! address in no executable mapping of the process is no frame.
//!
//! What comes after such an address is dropped too: the walk found it through the same bad
//! frame pointer, so those words are no more trustworthy, even when one of them happens to
//! point into code (a stale return address left on the stack names a function that is not a
//! caller). The stack is cut before the first bad address; the frames inside it, from the
//! instruction pointer up, were read before the walk went astray and are kept. A cut stack is
//! shorter than the truth (its root is missing), which a flame graph shows honestly; a stack
//! with a made-up root would merge with unrelated ones under a frame that never ran.
//!
//! Addresses in anonymous executable memory (JIT code) and the vDSO are code. A process whose
//! maps were never read cannot be judged; its stacks are kept whole. Each cut is counted
//! ([`FrameDrops`]), so the summary says how many stacks were shortened.

use crate::{model::Counters, procs::maps::Maps, symbolize::lookup_addr};

/// How many user frames were dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrameDrops {
    /// Frames in no executable mapping: one per stack cut.
    pub outside_code: u64,
    /// Frames after a frame outside code, dropped with it.
    pub after_bad_frame: u64,
}

impl FrameDrops {
    /// Counts one stack of `total` addresses of which the first `kept` were kept.
    pub(crate) fn count(&mut self, total: usize, kept: usize) {
        if kept < total {
            self.outside_code += 1;
            self.after_bad_frame += (total - kept - 1) as u64;
        }
    }

    /// Adds these drops to `counters`' user-side loss counts.
    pub(crate) fn add_to(self, counters: &mut Counters) {
        counters.user_frames_outside_code += self.outside_code;
        counters.user_frames_after_bad_frame += self.after_bad_frame;
    }
}

/// How many of `addrs` (innermost first; all but the first are return addresses) are real
/// frames: the length of the prefix that lies in executable memory of `maps`. All of them
/// when `maps` is empty (never read).
pub(crate) fn code_prefix_len(maps: &Maps, addrs: &[u64]) -> usize {
    if maps.is_empty() {
        return addrs.len();
    }
    addrs
        .iter()
        .enumerate()
        .position(|(i, &addr)| !maps.is_code(lookup_addr(addr, i == 0)))
        .unwrap_or(addrs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0002000 r--p 00000000 fd:01 123 /usr/bin/sleep
55d0c0002000-55d0c0010000 r-xp 00002000 fd:01 123 /usr/bin/sleep
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f1000000000-7f1000100000 r-xp 00028000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]
7ffe0000-7fff0000 rw-p 00000000 00:00 0 [stack]
";

    /// Check that the `sleep 0.5` stack (libc, then its own timespec's nanoseconds read as a
    /// return address) is cut before the bogus frame, and counted.
    #[test]
    fn stack_is_cut_before_a_frame_outside_code() {
        let maps = Maps::parse(MAPS);
        let stack = [0x7f1000000010, 0x1dcd6500];
        let kept = code_prefix_len(&maps, &stack);
        assert_eq!(kept, 1);
        let mut drops = FrameDrops::default();
        drops.count(stack.len(), kept);
        assert_eq!(
            drops,
            FrameDrops {
                outside_code: 1,
                after_bad_frame: 0
            }
        );
    }

    /// Check that frames after a bad one are dropped even when they point into code, and
    /// counted as such.
    #[test]
    fn frames_after_a_bad_frame_are_dropped() {
        let maps = Maps::parse(MAPS);
        // ip in libc, a good return address into the executable, a stack address, then
        // return addresses into the executable and libc again.
        let stack = [
            0x7f1000000010,
            0x55d0c0002100,
            0x7ffe0100,
            0x55d0c0002200,
            0x7f1000000400,
        ];
        let kept = code_prefix_len(&maps, &stack);
        assert_eq!(kept, 2);
        let mut drops = FrameDrops::default();
        drops.count(stack.len(), kept);
        drops.count(2, 2);
        assert_eq!(
            drops,
            FrameDrops {
                outside_code: 1,
                after_bad_frame: 2
            }
        );
        let mut counters = Counters::default();
        drops.add_to(&mut counters);
        assert_eq!(counters.user_frames_outside_code, 1);
        assert_eq!(counters.user_frames_after_bad_frame, 2);
    }

    /// Check that JIT code and the vDSO are code, that a return address just past the end of
    /// a code mapping (a call as its last instruction) is kept, and that a data mapping
    /// (`r--p`) is not code.
    #[test]
    fn jit_vdso_and_mapping_ends() {
        let maps = Maps::parse(MAPS);
        let stack = [0x7ffd1010, 0x7f0000000800, 0x55d0c0010000, 0x55d0c0000100];
        assert_eq!(code_prefix_len(&maps, &stack), 3);
        // The innermost address is no return address: the end of a mapping is outside it.
        assert_eq!(code_prefix_len(&maps, &[0x55d0c0010000]), 0);
    }

    /// Check that a process whose maps are unknown keeps its stacks whole.
    #[test]
    fn unknown_maps_keep_everything() {
        assert_eq!(code_prefix_len(&Maps::default(), &[1, 2, 3]), 3);
    }
}
