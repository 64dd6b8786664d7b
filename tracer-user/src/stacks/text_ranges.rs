//! Where each process's code is, for BPF's site ids (`--unwind dwarf|auto`): a stack copy is
//! hashed by the words that lie in these ranges only (`tracer-ebpf/src/sites.rs`), so heap
//! pointers and clocks an interpreter leaves on its stack do not make a new site at every
//! wait. Built from the registry's maps and given again whenever the process's executable
//! mappings change (exec, dlopen, JIT code), which the registry notices when it re-reads the
//! maps: at a process's first wait, every few seconds for named processes, and whenever an
//! unwound site leaves the known code.

use std::collections::HashMap;

use tracer_common::{TEXT_RANGE_UNUSED, TEXT_RANGES_MAX, TextRanges};

use crate::procs::maps::Maps;

/// End of the x86_64 user half: no return address lies above it (`[vsyscall]` does).
const USER_END: u64 = 1 << 47;

/// The executable ranges of `maps` as BPF takes them: sorted, touching ranges joined, and at
/// most [`TEXT_RANGES_MAX`], by joining the ranges across the smallest gaps first (a word in
/// a joined gap then counts too: a site may split more often, never merge with another).
pub(crate) fn from_maps(maps: &Maps) -> TextRanges {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for m in maps.code().filter(|m| m.start < USER_END) {
        let end = m.end.min(USER_END);
        match ranges.last_mut() {
            Some(last) if m.start <= last.1 => last.1 = last.1.max(end),
            _ => ranges.push((m.start, end)),
        }
    }
    if ranges.len() > TEXT_RANGES_MAX {
        // Join across the smallest gaps: gap `i` lies between ranges `i` and `i + 1`.
        let mut gaps: Vec<(u64, usize)> = ranges
            .windows(2)
            .enumerate()
            .map(|(i, w)| (w[1].0 - w[0].1, i))
            .collect();
        gaps.sort_unstable();
        let mut joined = vec![false; ranges.len()];
        for &(_, i) in &gaps[..ranges.len() - TEXT_RANGES_MAX] {
            joined[i] = true;
        }
        let mut kept: Vec<(u64, u64)> = Vec::with_capacity(TEXT_RANGES_MAX);
        let mut join_next = false;
        for (i, &(start, end)) in ranges.iter().enumerate() {
            match kept.last_mut() {
                Some(last) if join_next => last.1 = end,
                _ => kept.push((start, end)),
            }
            join_next = joined[i];
        }
        ranges = kept;
    }
    let mut out = TextRanges::default();
    for (i, (start, end)) in ranges.into_iter().enumerate() {
        out.starts[i] = start;
        out.ends[i] = end;
    }
    debug_assert!(out.starts.iter().all(|&s| s <= TEXT_RANGE_UNUSED));
    out
}

/// Which processes' ranges BPF holds, by the code hash of the maps they were built from.
#[derive(Debug, Default)]
pub(crate) struct TextRangesGiven {
    given: HashMap<u32, u64>,
}

impl TextRangesGiven {
    /// The ranges to give BPF for `pid`, when its code changed since they were last given.
    pub(crate) fn update(&mut self, pid: u32, maps: &Maps) -> Option<TextRanges> {
        if maps.is_empty() || self.given.get(&pid) == Some(&maps.code_hash()) {
            return None;
        }
        self.given.insert(pid, maps.code_hash());
        Some(from_maps(maps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(lines: &[&str]) -> Maps {
        Maps::parse(&lines.join("\n"))
    }

    fn used(ranges: &TextRanges) -> Vec<(u64, u64)> {
        ranges
            .starts
            .iter()
            .zip(&ranges.ends)
            .take_while(|(s, _)| **s != TEXT_RANGE_UNUSED)
            .map(|(&s, &e)| (s, e))
            .collect()
    }

    /// Check that only executable mappings count, touching ones are joined, and nothing above
    /// the user half is given.
    #[test]
    fn executable_mappings_in_order() {
        let m = maps(&[
            "555555554000-555555556000 r--p 00000000 08:01 10 /usr/bin/cat",
            "555555556000-55555555a000 r-xp 00002000 08:01 10 /usr/bin/cat",
            "55555555a000-55555555c000 r--p 00006000 08:01 10 /usr/bin/cat",
            "555555560000-555555581000 rw-p 00000000 00:00 0 [heap]",
            "7ffff7c00000-7ffff7c28000 r--p 00000000 08:01 20 /usr/lib/libc.so.6",
            "7ffff7c28000-7ffff7dbd000 r-xp 00028000 08:01 20 /usr/lib/libc.so.6",
            "7ffff7dbd000-7ffff7dc0000 r-xp 00000000 00:00 0",
            "7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0 [vdso]",
            "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]",
        ]);
        assert_eq!(
            used(&from_maps(&m)),
            vec![
                (0x5555_5555_6000, 0x5555_5555_a000),
                (0x7fff_f7c2_8000, 0x7fff_f7dc_0000),
                (0x7fff_f7fc_1000, 0x7fff_f7fc_3000),
            ]
        );
    }

    /// Check that past the limit the ranges closest together are joined, and every byte of
    /// code stays covered.
    #[test]
    fn too_many_ranges_join_across_the_smallest_gaps() {
        let lines: Vec<String> = (0..100u64)
            .map(|i| {
                // Every tenth gap is large, the others small and growing.
                let start =
                    0x7f00_0000_0000 + i * 0x100_0000 + if i % 10 == 0 { 0 } else { i * 0x1000 };
                format!(
                    "{:x}-{:x} r-xp 00000000 08:01 {} /lib{i}.so",
                    start,
                    start + 0x1000,
                    i + 1
                )
            })
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let m = maps(&lines);
        let ranges = used(&from_maps(&m));
        assert_eq!(ranges.len(), TEXT_RANGES_MAX);
        assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{ranges:x?}");
        for code in m.code() {
            assert!(
                ranges
                    .iter()
                    .any(|&(s, e)| s <= code.start && code.end <= e),
                "{:#x} not covered",
                code.start
            );
        }
    }

    /// Check that ranges are given again only when the process's code changed.
    #[test]
    fn given_again_only_when_code_changes() {
        let mut given = TextRangesGiven::default();
        let a = maps(&["400000-401000 r-xp 00000000 08:01 1 /bin/a"]);
        let grown = maps(&[
            "400000-401000 r-xp 00000000 08:01 1 /bin/a",
            "600000-700000 rw-p 00000000 00:00 0 [heap]",
        ]);
        let dlopened = maps(&[
            "400000-401000 r-xp 00000000 08:01 1 /bin/a",
            "7f0000000000-7f0000001000 r-xp 00000000 08:01 2 /lib/b.so",
        ]);
        assert!(given.update(1, &a).is_some());
        assert!(given.update(1, &a).is_none());
        assert!(given.update(1, &grown).is_none());
        assert!(given.update(1, &dlopened).is_some());
        assert!(given.update(2, &a).is_some());
        assert!(given.update(3, &maps(&[])).is_none());
    }
}
