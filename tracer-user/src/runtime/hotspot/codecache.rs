//! Which code blob of the VM's code cache an address is in: the interpreter, a compiled
//! method (`nmethod`), or a stub.
//!
//! The code cache is a few `CodeHeap`s (`CodeCache::_heaps`), each a range of memory cut into
//! segments of `2^_log2_segment_size` bytes, with a segment map of one byte per segment: 0 at
//! a block's first segment, else how many segments to step back towards it (`0xFF`: unused).
//! The block starts with a `HeapBlock` header (its `_used` flag) and the `CodeBlob` follows.
//! That is how the VM itself finds a blob (`CodeHeap::find_start`); a lookup here costs a few
//! reads, and the blob read is checked to contain the address (the VM may be changing the
//! map while it is read).

use super::{HotspotError, frame_layout::FrameLayout, vmstructs::Reader};

/// More code heaps than a VM has (JDK 17 has at most three).
const MAX_HEAPS: u32 = 16;
/// Most steps back through a segment map (a blob of 16 MB in 64-byte segments, each step
/// going up to 254 segments back).
const MAX_SEGMENT_STEPS: usize = 4096;
/// The segment map's mark of an unused segment (`CodeHeap::free_sentinel`).
const FREE_SEGMENT: u8 = 0xFF;

/// What kind of code a blob holds, by the name the VM gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobKind {
    /// The template interpreter (`Interpreter`).
    Interpreter,
    /// A compiled Java method (`nmethod`) or a native method's wrapper (`native nmethod`).
    Nmethod,
    /// Anything else: stubs, adapters.
    Stub,
}

/// A code blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blob {
    /// Its `CodeBlob*`.
    pub addr: u64,
    /// What it holds.
    pub kind: BlobKind,
    /// Its frame's size in words (0 for the interpreter, whose frames vary).
    pub frame_words: u64,
}

/// One code heap: its memory and its segment map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CodeHeap {
    low: u64,
    high: u64,
    segmap: u64,
    log2_segment: u32,
}

/// The code cache's heaps, read once per walk of a process's threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CodeCache {
    heaps: Vec<CodeHeap>,
}

impl CodeCache {
    /// Reads the heaps' bounds.
    pub(crate) fn read(reader: &Reader<'_>, l: &FrameLayout) -> Result<Self, HotspotError> {
        let array = reader.u64(l.code_heaps)?;
        if array == 0 {
            return Err(HotspotError::Implausible("no code heaps"));
        }
        let count = reader.u32(array + l.growable_len)?;
        if count > MAX_HEAPS {
            return Err(HotspotError::Implausible("code heap count"));
        }
        let data = reader.u64(array + l.growable_data)?;
        let mut heaps = Vec::new();
        for i in 0..u64::from(count) {
            let heap = reader.u64(data + i * 8)?;
            let memory = heap + l.heap_memory;
            let log2_segment = reader.u32(heap + l.heap_log2_segment_size)?;
            if !(4..=16).contains(&log2_segment) {
                return Err(HotspotError::Implausible("code heap segment size"));
            }
            heaps.push(CodeHeap {
                low: reader.u64(memory + l.space_low)?,
                high: reader.u64(memory + l.space_high)?,
                segmap: reader.u64(heap + l.heap_segmap + l.space_low)?,
                log2_segment,
            });
        }
        Ok(Self { heaps })
    }

    /// Whether `pc` is in the code cache (Java code, the interpreter, stubs).
    pub(crate) fn contains(&self, pc: u64) -> bool {
        self.heaps.iter().any(|h| (h.low..h.high).contains(&pc))
    }

    /// The blob holding `pc`; `None` outside the code cache or in free space.
    pub(crate) fn blob(
        &self,
        reader: &Reader<'_>,
        l: &FrameLayout,
        pc: u64,
    ) -> Result<Option<Blob>, HotspotError> {
        let Some(heap) = self.heaps.iter().find(|h| (h.low..h.high).contains(&pc)) else {
            return Ok(None);
        };
        let mut segment = (pc - heap.low) >> heap.log2_segment;
        let mut steps = 0;
        loop {
            let step = reader.u8(heap.segmap + segment)?;
            if step == FREE_SEGMENT {
                return Ok(None);
            }
            if step == 0 {
                break;
            }
            segment = segment
                .checked_sub(u64::from(step))
                .ok_or(HotspotError::Implausible("segment map"))?;
            steps += 1;
            if steps > MAX_SEGMENT_STEPS {
                return Err(HotspotError::Implausible("segment map"));
            }
        }
        let block = heap.low + (segment << heap.log2_segment);
        if reader.u8(block + l.heap_block_used)? == 0 {
            return Ok(None);
        }
        let addr = block + l.heap_block_size;
        let code = reader.u64(addr + l.blob_code_begin)?..reader.u64(addr + l.blob_code_end)?;
        if !code.contains(&pc) {
            return Err(HotspotError::Implausible("code blob bounds"));
        }
        let name = reader.c_string(reader.u64(addr + l.blob_name)?)?;
        let kind = match name.as_deref() {
            Some("Interpreter") => BlobKind::Interpreter,
            Some("nmethod" | "native nmethod") => BlobKind::Nmethod,
            _ => BlobKind::Stub,
        };
        let frame_words = u64::try_from(reader.u32(addr + l.blob_frame_size)? as i32).unwrap_or(0);
        Ok(Some(Blob {
            addr,
            kind,
            frame_words,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{
        super::{frame_layout::tests::jdk17, vmstructs::tests::Image},
        *,
    };

    /// Where the test code heap's pieces are.
    pub(crate) const HEAP_LOW: u64 = 0x20_0000;
    const SEGMAP: u64 = 0x30_0000;
    const HEAP_STRUCT: u64 = 0x31_0000;
    const NAMES: u64 = 0x32_0000;

    /// Puts a code heap of 64-byte segments at `HEAP_LOW` into `image`, with the globals the
    /// layout names (`CodeCache::_heaps` at `layout.code_heaps`), and blobs: (first segment,
    /// segments, name, frame size in words). Returns each blob's address.
    pub(crate) fn code_heap(image: &mut Image, blobs: &[(u64, u64, &str, u32)]) -> Vec<u64> {
        let l = jdk17();
        let array = HEAP_STRUCT + 0x800;
        image.put_u64(l.code_heaps, array);
        image.put(array + l.growable_len, &1u32.to_le_bytes());
        image.put_u64(array + l.growable_data, array + 0x40);
        image.put_u64(array + 0x40, HEAP_STRUCT);
        let segments = 0x400;
        image.put_u64(HEAP_STRUCT + l.heap_memory + l.space_low, HEAP_LOW);
        image.put_u64(
            HEAP_STRUCT + l.heap_memory + l.space_high,
            HEAP_LOW + segments * 64,
        );
        image.put_u64(HEAP_STRUCT + l.heap_segmap + l.space_low, SEGMAP);
        image.put(HEAP_STRUCT + l.heap_log2_segment_size, &6u32.to_le_bytes());
        image.put(SEGMAP, &vec![FREE_SEGMENT; segments as usize]);
        let mut names = NAMES;
        let mut addrs = Vec::new();
        for &(first, count, name, frame_words) in blobs {
            for i in 0..count {
                // As the VM writes it: 0 at the start, then 1 to 254 over and over.
                let step = if i == 0 { 0 } else { (i - 1) % 0xFE + 1 };
                image.put(SEGMAP + first + i, &[step as u8]);
            }
            let block = HEAP_LOW + first * 64;
            image.put(block + l.heap_block_used, &[1]);
            let blob = block + l.heap_block_size;
            image.put_u64(blob + l.blob_code_begin, blob + 0x20);
            image.put_u64(blob + l.blob_code_end, block + count * 64);
            image.put(blob + l.blob_frame_size, &frame_words.to_le_bytes());
            image.put(names, name.as_bytes());
            image.put_u64(blob + l.blob_name, names);
            names += name.len() as u64 + 1;
            addrs.push(blob);
        }
        addrs
    }

    /// Check that an address anywhere in a blob, even hundreds of segments in, finds the
    /// blob's start and kind; free space and addresses outside the heap find none.
    #[test]
    fn finds_blob_through_segment_map() {
        let mut image = Image::new(0x10_0000, 0x30_0000);
        let blobs = code_heap(
            &mut image,
            &[
                (0, 300, "Interpreter", 0),
                (300, 4, "nmethod", 6),
                (310, 2, "RuntimeStub", 2),
                (320, 2, "native nmethod", 4),
            ],
        );
        let l = jdk17();
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let cache = CodeCache::read(&reader, &l).expect("code cache");
        let find = |pc| cache.blob(&reader, &l, pc).expect("readable");
        let interpreter = find(HEAP_LOW + 299 * 64 + 5).expect("interpreter");
        assert_eq!(interpreter.addr, blobs[0]);
        assert_eq!(interpreter.kind, BlobKind::Interpreter);
        let nmethod = find(HEAP_LOW + 302 * 64).expect("nmethod");
        assert_eq!((nmethod.addr, nmethod.kind), (blobs[1], BlobKind::Nmethod));
        assert_eq!(nmethod.frame_words, 6);
        assert_eq!(
            find(HEAP_LOW + 311 * 64).map(|b| b.kind),
            Some(BlobKind::Stub)
        );
        assert_eq!(find(HEAP_LOW + 305 * 64), None);
        assert_eq!(
            find(HEAP_LOW + 321 * 64).map(|b| b.kind),
            Some(BlobKind::Nmethod)
        );
        assert_eq!(find(HEAP_LOW - 8), None);
        assert!(cache.contains(HEAP_LOW + 8) && !cache.contains(0x10));
    }
}
