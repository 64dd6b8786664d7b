//! The GHC RTS's green threads, read from its memory: the generations' thread lists and each
//! thread's state object (`StgTSO`).
//!
//! The RTS keeps every Haskell thread on the `threads` list of the generation its TSO lives
//! in (`generation.threads`, linked through `StgTSO.global_link`, ended by
//! `stg_END_TSO_QUEUE_closure`); during a garbage collection they sit on `old_threads`. Debian's
//! GHC ships no DWARF for its RTS, so the offsets come from GHC's own headers
//! (`rts/storage/GC.h`, `rts/storage/TSO.h`, `DerivedConstants.h`, `rts/Constants.h` of the
//! installed GHC), one [`Layout`] per version in [`LAYOUTS`], and are used only for the
//! version they were taken from. Every read is checked against what the RTS must hold
//! (generation numbers, the TSO info pointer), so a wrong layout yields nothing rather than
//! made-up threads. The process keeps running while this is read: a list may change under
//! the reader, which then stops at the first pointer that does not check out.

use crate::{
    model::{GreenState, GreenThread},
    runtime,
};

/// Where the RTS structures' fields are, for one GHC version (x86_64, threaded RTS, no
/// profiling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// `sizeof(generation)` (`SIZEOF_generation`).
    pub generation_size: u64,
    /// `generation.threads`.
    pub generation_threads: u64,
    /// `generation.old_threads` (the last but one field).
    pub generation_old_threads: u64,
    /// `StgTSO.global_link` (after the one-word header).
    pub tso_global_link: u64,
    /// `StgTSO.what_next` (u16).
    pub tso_what_next: u64,
    /// `StgTSO.why_blocked` (u16).
    pub tso_why_blocked: u64,
    /// `StgTSO.id` (u64).
    pub tso_id: u64,
}

/// Layouts by GHC version (`major.minor`). GHC 9.0 (9.0.2 is Debian bookworm's): `generation`
/// is 384 bytes in the threaded RTS (a 128-byte pad and a profiled spin lock before the GC
/// fields), `threads` at 104, `old_threads` at 368; `StgTSO` fields at the
/// `DerivedConstants.h` offsets plus the 8-byte header.
pub(super) const LAYOUTS: &[(&str, Layout)] = &[(
    "9.0",
    Layout {
        generation_size: 384,
        generation_threads: 104,
        generation_old_threads: 368,
        tso_global_link: 8 + 8,
        tso_what_next: 8 + 24,
        tso_why_blocked: 8 + 26,
        tso_id: 8 + 40,
    },
)];

/// The layout for a GHC version string (`9.0.2`), if one is known.
pub(super) fn layout_for(version: &str) -> Option<Layout> {
    let mut parts = version.split('.');
    let major_minor = format!("{}.{}", parts.next()?, parts.next()?);
    LAYOUTS
        .iter()
        .find(|(v, _)| *v == major_minor)
        .map(|(_, l)| *l)
}

/// The RTS addresses the thread lists are read from (symbol values, relocated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RtsAddresses {
    /// `generations`: the pointer to the array of generations.
    pub generations: u64,
    /// `oldest_gen`: the pointer to the last generation (how many there are).
    pub oldest_gen: u64,
    /// `stg_END_TSO_QUEUE_closure`: the end of a thread list.
    pub end_tso_queue: u64,
    /// `stg_TSO_info`: every TSO's info pointer.
    pub tso_info: u64,
}

/// At most this many generations and threads are read (a bound on a list that changes while
/// it is read).
const MAX_GENERATIONS: u64 = 16;
const MAX_THREADS: usize = 100_000;

/// Reads every green thread, sorted by id (`None` if the RTS structures do not check out).
pub(super) fn green_threads(
    layout: &Layout,
    rts: &RtsAddresses,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Vec<GreenThread>> {
    let read_u64 = |addr| runtime::read_u64(addr, read_mem);
    let read_u32 = |addr| runtime::read_u32(addr, read_mem);
    let read_u16 = |addr| runtime::read_u16(addr, read_mem);
    let generations = read_u64(rts.generations)?;
    let oldest = read_u64(rts.oldest_gen)?;
    let span = oldest.checked_sub(generations)?;
    if generations == 0 || span % layout.generation_size != 0 {
        return None;
    }
    let count = span / layout.generation_size + 1;
    if count > MAX_GENERATIONS {
        return None;
    }
    let mut threads = Vec::new();
    for g in 0..count {
        let gen_addr = generations + g * layout.generation_size;
        if read_u32(gen_addr)? != g as u32 {
            return None;
        }
        for list in [layout.generation_threads, layout.generation_old_threads] {
            let mut tso = read_u64(gen_addr + list)?;
            while tso != rts.end_tso_queue && tso != 0 {
                if threads.len() >= MAX_THREADS || read_u64(tso)? != rts.tso_info {
                    return None;
                }
                let what_next = read_u16(tso + layout.tso_what_next)?;
                let why_blocked = read_u16(tso + layout.tso_why_blocked)?;
                threads.push(GreenThread {
                    id: read_u64(tso + layout.tso_id)?,
                    label: None,
                    state: state(what_next, why_blocked),
                });
                tso = read_u64(tso + layout.tso_global_link)?;
            }
        }
    }
    threads.sort_by_key(|t| t.id);
    threads.dedup_by_key(|t| t.id);
    Some(threads)
}

/// `ThreadKilled`, `ThreadComplete` (`rts/Constants.h`).
const WHAT_NEXT_KILLED: u16 = 3;
const WHAT_NEXT_COMPLETE: u16 = 4;

/// A TSO's state from `what_next` and `why_blocked` (`rts/Constants.h`).
fn state(what_next: u16, why_blocked: u16) -> GreenState {
    if matches!(what_next, WHAT_NEXT_KILLED | WHAT_NEXT_COMPLETE) {
        return GreenState::Finished;
    }
    match why_blocked {
        // NotBlocked, ThreadMigrating
        0 | 13 => GreenState::Running,
        // BlockedOnMVar, BlockedOnMVarRead
        1 | 14 => GreenState::BlockedOnMvar,
        2 => GreenState::BlockedOnBlackHole,
        // BlockedOnRead, BlockedOnWrite, BlockedOnIOCompletion (non-threaded I/O)
        3 | 4 | 15 => GreenState::BlockedOnIo,
        5 => GreenState::Delay,
        6 => GreenState::BlockedOnStm,
        // BlockedOnCCall, BlockedOnCCall_Interruptible
        10 | 11 => GreenState::ForeignCall,
        12 => GreenState::BlockedOnThrowTo,
        code => GreenState::Other {
            code: u32::from(code),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake process memory: little-endian words written at addresses.
    #[derive(Default)]
    struct Memory(Vec<(u64, Vec<u8>)>);

    impl Memory {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            self.0.push((addr, bytes.to_vec()));
        }
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let found = self
                .0
                .iter()
                .rev()
                .find(|(a, b)| *a <= addr && addr + buf.len() as u64 <= *a + b.len() as u64);
            match found {
                Some((a, b)) => {
                    let start = (addr - a) as usize;
                    buf.copy_from_slice(&b[start..start + buf.len()]);
                    true
                }
                None => false,
            }
        }
    }

    const RTS: RtsAddresses = RtsAddresses {
        generations: 0x1000,
        oldest_gen: 0x1008,
        end_tso_queue: 0xe0d,
        tso_info: 0x7150,
    };

    /// Writes a TSO at `addr` (zeroed, 128 bytes) with its fields.
    fn tso(mem: &mut Memory, l: &Layout, addr: u64, id: u64, next: u64, what: u16, why: u16) {
        let mut bytes = vec![0u8; 128];
        bytes[..8].copy_from_slice(&RTS.tso_info.to_le_bytes());
        let at = |o: u64| o as usize;
        bytes[at(l.tso_global_link)..at(l.tso_global_link) + 8]
            .copy_from_slice(&next.to_le_bytes());
        bytes[at(l.tso_what_next)..at(l.tso_what_next) + 2].copy_from_slice(&what.to_le_bytes());
        bytes[at(l.tso_why_blocked)..at(l.tso_why_blocked) + 2].copy_from_slice(&why.to_le_bytes());
        bytes[at(l.tso_id)..at(l.tso_id) + 8].copy_from_slice(&id.to_le_bytes());
        mem.put(addr, &bytes);
    }

    /// Two generations as GHC 9.0 lays them out: generation 0 holds threads 4, 5 (blocked on
    /// MVars) and 2 (in a foreign call), generation 1 holds thread 1 (finished).
    fn two_generations() -> (Memory, Layout) {
        let l = layout_for("9.0.2").expect("9.0 is known");
        let mut mem = Memory::default();
        let gens = 0x2000u64;
        mem.put(RTS.generations, &gens.to_le_bytes());
        mem.put(RTS.oldest_gen, &(gens + l.generation_size).to_le_bytes());
        for g in 0..2u64 {
            let mut bytes = vec![0u8; l.generation_size as usize];
            bytes[..4].copy_from_slice(&(g as u32).to_le_bytes());
            let first = if g == 0 { 0x3000u64 } else { 0x3300 };
            let at = l.generation_threads as usize;
            bytes[at..at + 8].copy_from_slice(&first.to_le_bytes());
            let old = l.generation_old_threads as usize;
            bytes[old..old + 8].copy_from_slice(&RTS.end_tso_queue.to_le_bytes());
            mem.put(gens + g * l.generation_size, &bytes);
        }
        tso(&mut mem, &l, 0x3000, 5, 0x3100, 1, 1);
        tso(&mut mem, &l, 0x3100, 4, 0x3200, 1, 14);
        tso(&mut mem, &l, 0x3200, 2, RTS.end_tso_queue, 1, 10);
        tso(&mut mem, &l, 0x3300, 1, RTS.end_tso_queue, 4, 0);
        (mem, l)
    }

    /// Check that the green threads are read from every generation's list, with their
    /// states, sorted by id.
    #[test]
    fn threads_of_every_generation() {
        let (mem, l) = two_generations();
        let threads = green_threads(&l, &RTS, &|a, b| mem.read(a, b)).expect("threads");
        let got: Vec<(u64, GreenState)> = threads.into_iter().map(|t| (t.id, t.state)).collect();
        assert_eq!(
            got,
            [
                (1, GreenState::Finished),
                (2, GreenState::ForeignCall),
                (4, GreenState::BlockedOnMvar),
                (5, GreenState::BlockedOnMvar),
            ]
        );
    }

    /// Check that a list running into something that is not a TSO, or a generation whose
    /// number is wrong, gives nothing rather than made-up threads.
    #[test]
    fn bad_structures_give_nothing() {
        let (mut mem, l) = two_generations();
        mem.put(0x3100, &0xdeadu64.to_le_bytes());
        assert_eq!(green_threads(&l, &RTS, &|a, b| mem.read(a, b)), None);
        let (mut mem, l) = two_generations();
        mem.put(0x2000 + l.generation_size, &7u32.to_le_bytes());
        assert_eq!(green_threads(&l, &RTS, &|a, b| mem.read(a, b)), None);
        assert_eq!(layout_for("9.4.7"), None);
        assert_eq!(layout_for("9"), None);
    }

    /// Check the states GHC 9.0's `why_blocked` numbers map to.
    #[test]
    fn states_from_rts_constants() {
        assert_eq!(state(1, 0), GreenState::Running);
        assert_eq!(state(1, 2), GreenState::BlockedOnBlackHole);
        assert_eq!(state(1, 5), GreenState::Delay);
        assert_eq!(state(1, 6), GreenState::BlockedOnStm);
        assert_eq!(state(1, 12), GreenState::BlockedOnThrowTo);
        assert_eq!(state(3, 1), GreenState::Finished);
        assert_eq!(state(1, 99), GreenState::Other { code: 99 });
    }
}
