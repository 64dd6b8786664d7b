//! The code objects of one process in `profile --python`: each read once, and read again
//! when a new stack shows that its address now holds another.
//!
//! BPF records code object addresses; their names are read while tracing, a few hundred
//! milliseconds after a stack with them is first stored, and kept to the end. A code object
//! freed during the trace (a module reloaded, code `exec`'d again, a closure's code freed
//! with it) can have its address reused by another code object, and naming by address alone
//! would name the second's frames after the first. So each read keeps a fingerprint of the
//! object (its type pointer, first line, and the addresses of its name, filename and line
//! table: one read of the span they lie in), and when a stack BPF stored since (a new stack
//! id) has a frame at an address already read, the fingerprint is read again; if it changed,
//! the object is read again and that stack's frame is named from the new read. Each stack
//! keeps the reads it was named with, so stacks learned before the reuse keep the old names.
//!
//! What is still wrong: a stack is named from memory as it is when it is learned, not when
//! BPF stored it, so a stack stored just before a reuse and learned after it is named after
//! the new object; and two stacks whose every code address and instruction pointer are the
//! same before and after a reuse are one stack for BPF (one id, learned once), named once.
//! If the re-read fails (the object is freed, not reused), the earlier read is kept: the
//! stack was most likely stored while it still lived.

use std::collections::HashMap;

use super::{
    code::{CodeInfo, read_code},
    layout::CodeLayout,
};
use crate::{model::RawPyFrame, runtime::read_u64};

/// `PyObject.ob_type`.
const OB_TYPE: u64 = 8;
/// Most bytes read for a fingerprint (every field lies within the first few hundred bytes of
/// a code object).
const MAX_FINGERPRINT_BYTES: u64 = 1024;

/// What tells one code object from another that later took its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    ob_type: u64,
    first_line: u32,
    name: u64,
    filename: u64,
    linetable: u64,
}

/// The code objects read in one process, and which read names each stack learned.
#[derive(Default)]
pub(crate) struct CodeCache {
    /// Every read, in order (`None`: the object could not be read).
    reads: Vec<Option<CodeInfo>>,
    /// At each address, its latest read: the fingerprint then and its index in `reads`.
    latest: HashMap<u64, (Option<Fingerprint>, usize)>,
    /// Each stack learned (by its frames) and the read naming each of its frames.
    stacks: HashMap<Vec<RawPyFrame>, Vec<usize>>,
}

impl CodeCache {
    /// Reads the code objects of `frames`, a stack BPF just stored: those at addresses not
    /// read yet, and those whose fingerprint changed since their read. The stack is named
    /// from these reads at the end.
    pub(crate) fn learn(
        &mut self,
        frames: &[RawPyFrame],
        layout: &CodeLayout,
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) {
        if self.stacks.contains_key(frames) {
            return;
        }
        let mut checked: HashMap<u64, usize> = HashMap::new();
        let mut named = Vec::with_capacity(frames.len());
        for frame in frames {
            let index = match checked.get(&frame.code) {
                Some(&index) => index,
                None => {
                    let index = self.current(frame.code, layout, read_mem);
                    checked.insert(frame.code, index);
                    index
                }
            };
            named.push(index);
        }
        self.stacks.insert(frames.to_vec(), named);
    }

    /// The code objects naming `frames`, one per frame: as the stack was learned, else the
    /// latest read of each address (read now if there is none).
    pub(crate) fn names(
        &mut self,
        frames: &[RawPyFrame],
        layout: &CodeLayout,
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) -> Vec<Option<&CodeInfo>> {
        let indexes = match self.stacks.get(frames) {
            Some(indexes) => indexes.clone(),
            None => frames
                .iter()
                .map(|f| match self.latest.get(&f.code) {
                    Some(&(_, index)) => index,
                    None => self.read(f.code, layout, read_mem),
                })
                .collect(),
        };
        indexes
            .into_iter()
            .map(|i| self.reads.get(i).and_then(Option::as_ref))
            .collect()
    }

    /// The read that names the code object at `code` now: the latest one, unless its
    /// fingerprint changed and a new read succeeds.
    fn current(
        &mut self,
        code: u64,
        layout: &CodeLayout,
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) -> usize {
        let Some(&(known, index)) = self.latest.get(&code) else {
            return self.read(code, layout, read_mem);
        };
        let now = fingerprint(code, layout, read_mem);
        if now.is_none() || now == known {
            return index;
        }
        match read_code(code, layout, read_mem) {
            Some(info) => {
                self.reads.push(Some(info));
                let index = self.reads.len() - 1;
                self.latest.insert(code, (now, index));
                index
            }
            None => index,
        }
    }

    /// Reads the code object at `code` (its fingerprint first) as the latest at its address.
    fn read(
        &mut self,
        code: u64,
        layout: &CodeLayout,
        read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
    ) -> usize {
        let print = fingerprint(code, layout, read_mem);
        self.reads.push(read_code(code, layout, read_mem));
        let index = self.reads.len() - 1;
        self.latest.insert(code, (print, index));
        index
    }
}

/// The fingerprint of the object at `code`, from one read of the span its fields lie in.
fn fingerprint(
    code: u64,
    layout: &CodeLayout,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Fingerprint> {
    let end = [
        OB_TYPE + 8,
        layout.first_line + 4,
        layout.name + 8,
        layout.filename + 8,
        layout.linetable + 8,
    ]
    .into_iter()
    .max()?;
    if end > MAX_FINGERPRINT_BYTES {
        return None;
    }
    let mut span = vec![0u8; usize::try_from(end).ok()?];
    if !read_mem(code, &mut span) {
        return None;
    }
    let from_span = |at: u64, buf: &mut [u8]| {
        let start = usize::try_from(at).ok();
        match start.and_then(|s| span.get(s..s + buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    };
    let mut first_line = [0u8; 4];
    from_span(layout.first_line, &mut first_line).then_some(())?;
    Some(Fingerprint {
        ob_type: read_u64(OB_TYPE, &from_span)?,
        first_line: u32::from_ne_bytes(first_line),
        name: read_u64(layout.name, &from_span)?,
        filename: read_u64(layout.filename, &from_span)?,
        linetable: read_u64(layout.linetable, &from_span)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::{CODE_LAYOUT, Memory};

    const CODE: u64 = 0x10_000;

    /// Writes a compact ASCII string object at `at`.
    fn ascii(memory: &mut Memory, at: u64, text: &str) {
        memory.u64(at + 16, text.len() as u64);
        memory.u32(at + 32, (1 << 2) | (1 << 5) | (1 << 6));
        memory.bytes(at + 40, text.as_bytes());
    }

    /// Writes a code object named `qualname` at `CODE`, its strings at `strings`.
    fn code_object(memory: &mut Memory, strings: u64, qualname: &str, first_line: u32) {
        memory.bytes(CODE, &[0; 200]);
        memory.u64(CODE + OB_TYPE, 0x7777);
        memory.u64(CODE + 128, strings);
        ascii(memory, strings, qualname);
        memory.u64(CODE + 112, strings + 0x100);
        ascii(memory, strings + 0x100, "/tmp/app.py");
        memory.u32(CODE + 68, first_line);
        memory.u64(CODE + 136, strings + 0x200);
        memory.u64(strings + 0x200 + 16, 0);
    }

    fn frames(instr: u64) -> Vec<RawPyFrame> {
        vec![RawPyFrame {
            code: CODE,
            instr: CODE + 200 + instr,
            marker: 0,
        }]
    }

    fn qualnames(cache: &mut CodeCache, frames: &[RawPyFrame], memory: &Memory) -> Vec<String> {
        cache
            .names(frames, &CODE_LAYOUT, &memory.reader())
            .into_iter()
            .map(|info| info.map_or("?".to_owned(), |i| i.name.clone()))
            .collect()
    }

    /// Check that a code object freed and its address reused by another names the stacks
    /// learned after the reuse by the new object and keeps the old name for those learned
    /// before, that a stack at an unchanged object is not read again, and that a failed
    /// re-read keeps the earlier name.
    #[test]
    fn reused_code_addresses_are_read_again() {
        let mut memory = Memory::default();
        code_object(&mut memory, 0x20_000, "first", 10);
        let mut cache = CodeCache::default();
        let before = frames(0);
        cache.learn(&before, &CODE_LAYOUT, &memory.reader());
        let unchanged = frames(2);
        cache.learn(&unchanged, &CODE_LAYOUT, &memory.reader());
        assert_eq!(cache.reads.len(), 1, "an unchanged object is read once");
        // The object is freed and another takes its address.
        code_object(&mut memory, 0x30_000, "second", 20);
        let after = frames(4);
        cache.learn(&after, &CODE_LAYOUT, &memory.reader());
        assert_eq!(qualnames(&mut cache, &before, &memory), ["first"]);
        assert_eq!(qualnames(&mut cache, &unchanged, &memory), ["first"]);
        assert_eq!(qualnames(&mut cache, &after, &memory), ["second"]);
        // A stack never learned is named from the latest read.
        assert_eq!(qualnames(&mut cache, &frames(6), &memory), ["second"]);
        // Freed again, its memory no longer a readable code object: the re-read fails and
        // the latest name stays.
        memory.u64(CODE + OB_TYPE, 0x8888);
        memory.u64(CODE + 128, 0x40_000);
        let freed = frames(8);
        cache.learn(&freed, &CODE_LAYOUT, &memory.reader());
        assert_eq!(qualnames(&mut cache, &freed, &memory), ["second"]);
    }

    /// Check that a fingerprint changes with each of its fields and is `None` for memory that
    /// cannot be read.
    #[test]
    fn fingerprints_cover_their_fields() {
        let mut memory = Memory::default();
        code_object(&mut memory, 0x20_000, "f", 10);
        let print = |memory: &Memory| fingerprint(CODE, &CODE_LAYOUT, &memory.reader());
        let first = print(&memory).expect("fingerprint");
        assert_eq!(first.name, 0x20_000);
        assert_eq!(first.first_line, 10);
        for (offset, size) in [(OB_TYPE, 8), (68, 4), (112, 8), (128, 8), (136, 8)] {
            let mut changed = Memory::default();
            code_object(&mut changed, 0x20_000, "f", 10);
            changed.bytes(CODE + offset, &vec![0xee; size]);
            assert_ne!(print(&changed), Some(first), "field at {offset}");
        }
        assert_eq!(fingerprint(0x90_000, &CODE_LAYOUT, &memory.reader()), None);
    }
}
