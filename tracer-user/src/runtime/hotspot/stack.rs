//! A blocked Java thread's Java frames, walked from its frame anchor, innermost first.
//!
//! A thread in native or VM code (a parked or blocked thread always is) has its last Java
//! frame in `JavaThread::_anchor`: `_last_Java_sp`, `_last_Java_fp`, `_last_Java_pc` (0 until
//! made walkable: then the return address just below sp). From there each frame is found by
//! what code its pc is in ([`CodeCache`]):
//! - the interpreter: the `Method*` and the bytecode pointer are in slots below fp; the caller
//!   resumes at fp's saved return address with the saved fp, its sp two words above fp and its
//!   unextended sp (before the interpreter extended it for locals) in the sender-sp slot;
//! - a compiled method (`nmethod`, also a native method's wrapper): `CompiledMethod::_method`;
//!   its frame is `CodeBlob::_frame_size` words above sp, ending with the return address and
//!   the caller's saved fp. The methods inlined at its pc are read later from its scopes
//!   ([`scopes`](super::scopes));
//! - the call stub (its return address `StubRoutines::_call_stub_return_address`): where the
//!   VM called into Java. The frames below it are the VM's (native); Java frames further out,
//!   if any, start at the anchor saved in its `JavaCallWrapper`. The walk returns one run of
//!   Java frames per such entry;
//! - another stub (a runtime stub the compiled code called): skipped by its frame size.
//!
//! Every sp and fp must lie in the thread's stack; the walk stops cleanly, keeping what it
//! found, at anything it cannot read or does not know.

use std::ops::Range;

use super::{
    HotspotError,
    codecache::{BlobKind, CodeCache},
    frame_layout::{FrameLayout, LINK_SLOT, RETURN_SLOT, SENDER_SP_SLOT},
    vmstructs::Reader,
};

/// The deepest Java stack walked, frames.
const MAX_FRAMES: usize = 1024;
/// The most VM-to-Java entries followed.
const MAX_ENTRIES: usize = 64;
/// Bytes per stack slot.
const WORD: u64 = 8;

/// One Java frame as found on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawJavaFrame {
    /// The frame's pc.
    pub pc: u64,
    /// Its `Method*`.
    pub method: u64,
    /// Its bytecode pointer (interpreted frames).
    pub bcp: Option<u64>,
    /// Its `nmethod` (compiled frames: their scopes name the methods inlined there).
    pub nmethod: Option<u64>,
}

/// Where a frame is: its sp, its unextended sp (the sp before the interpreter extended it),
/// its fp and its pc.
#[derive(Clone, Copy, Debug)]
struct FrameAt {
    sp: u64,
    unextended_sp: u64,
    fp: u64,
    pc: u64,
}

/// The Java frames of the thread at `JavaThread*` `thread` whose stack is `stack`: one run per
/// entry from the VM into Java, innermost first.
pub(crate) fn java_frames(
    reader: &Reader<'_>,
    l: &FrameLayout,
    cache: &CodeCache,
    thread: u64,
    stack: &Range<u64>,
) -> Vec<Vec<RawJavaFrame>> {
    let mut runs = Vec::new();
    let mut anchor = thread + l.thread_anchor;
    let mut frames = 0;
    for _ in 0..MAX_ENTRIES {
        let Ok(Some(start)) = from_anchor(reader, l, anchor, stack) else {
            break;
        };
        let mut run = Vec::new();
        let outcome = walk_run(reader, l, cache, start, stack, &mut run, &mut frames);
        if !run.is_empty() {
            runs.push(run);
        }
        match outcome {
            Ok(Some(wrapper)) => anchor = wrapper + l.call_wrapper_anchor,
            _ => break,
        }
    }
    runs
}

/// The last Java frame an anchor records; `None` if it records none.
fn from_anchor(
    reader: &Reader<'_>,
    l: &FrameLayout,
    anchor: u64,
    stack: &Range<u64>,
) -> Result<Option<FrameAt>, HotspotError> {
    let sp = reader.u64(anchor + l.anchor_sp)?;
    if sp == 0 {
        return Ok(None);
    }
    if !stack.contains(&sp) {
        return Err(HotspotError::Implausible("last Java sp"));
    }
    let fp = reader.u64(anchor + l.anchor_fp)?;
    let pc = match reader.u64(anchor + l.anchor_pc)? {
        0 => reader.u64(sp - WORD)?,
        pc => pc,
    };
    Ok(Some(FrameAt {
        sp,
        unextended_sp: sp,
        fp,
        pc,
    }))
}

/// Walks one run of Java frames from `frame` into `run`; `Ok(Some(wrapper))` when it ended at
/// the call stub whose `JavaCallWrapper*` is `wrapper`.
fn walk_run(
    reader: &Reader<'_>,
    l: &FrameLayout,
    cache: &CodeCache,
    mut frame: FrameAt,
    stack: &Range<u64>,
    run: &mut Vec<RawJavaFrame>,
    frames: &mut usize,
) -> Result<Option<u64>, HotspotError> {
    let slot = |fp: u64, words: i64| fp.wrapping_add_signed(words * WORD as i64);
    while *frames < MAX_FRAMES {
        *frames += 1;
        if frame.pc == reader.u64(l.call_stub_return_address)? {
            if !stack.contains(&frame.fp) {
                return Err(HotspotError::Implausible("entry frame fp"));
            }
            let wrapper = reader.u64(slot(frame.fp, l.entry_call_wrapper_slot))?;
            return Ok((wrapper != 0).then_some(wrapper));
        }
        let Some(blob) = cache.blob(reader, l, frame.pc)? else {
            return Ok(None);
        };
        frame = match blob.kind {
            BlobKind::Interpreter => {
                let fp = frame.fp;
                if !stack.contains(&fp) {
                    return Err(HotspotError::Implausible("interpreter fp"));
                }
                run.push(RawJavaFrame {
                    pc: frame.pc,
                    method: reader.u64(slot(fp, l.interp_method_slot))?,
                    bcp: Some(reader.u64(slot(fp, l.interp_bcp_slot))?),
                    nmethod: None,
                });
                FrameAt {
                    sp: fp + SENDER_SP_SLOT * WORD,
                    unextended_sp: reader.u64(slot(fp, l.interp_sender_sp_slot))?,
                    fp: reader.u64(fp + LINK_SLOT * WORD)?,
                    pc: reader.u64(fp + RETURN_SLOT * WORD)?,
                }
            }
            BlobKind::Nmethod | BlobKind::Stub => {
                if blob.kind == BlobKind::Nmethod {
                    run.push(RawJavaFrame {
                        pc: frame.pc,
                        method: reader.u64(blob.addr + l.compiled_method)?,
                        bcp: None,
                        nmethod: Some(blob.addr),
                    });
                }
                if blob.frame_words == 0 {
                    return Ok(None);
                }
                let sender_sp = frame.unextended_sp + blob.frame_words * WORD;
                FrameAt {
                    sp: sender_sp,
                    unextended_sp: sender_sp,
                    fp: reader.u64(sender_sp - SENDER_SP_SLOT * WORD)?,
                    pc: reader.u64(sender_sp - WORD)?,
                }
            }
        };
        if !stack.contains(&frame.sp) || !stack.contains(&frame.unextended_sp) {
            return Err(HotspotError::Implausible("sender sp"));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{
        super::{
            codecache::tests::{HEAP_LOW, code_heap},
            frame_layout::tests::jdk17,
            vmstructs::tests::Image,
        },
        *,
    };

    /// The test thread's stack, and its `JavaThread`.
    pub(crate) const STACK: Range<u64> = 0x3a_0000..0x3c_0000;
    pub(crate) const THREAD: u64 = 0x3c_0000;
    const WRAPPER: u64 = 0x3c_1000;

    /// A pc in segment `segment` of the test code heap.
    pub(crate) fn pc_in(segment: u64) -> u64 {
        HEAP_LOW + segment * 64 + 0x38
    }

    /// Lays out, as JDK 17 on x86-64 would, the stack of a thread blocked in the VM: the
    /// anchor on an interpreted frame (`inner`, bcp `inner_bcp`), called by a compiled frame
    /// (`middle`, 4 words) through a runtime stub-free call, called by an interpreted frame
    /// (`outer`, bcp `outer_bcp`), called from the call stub. The interpreter's blob is at
    /// segment 0, the nmethod at 300, the call stub at 320.
    pub(crate) fn blocked_stack(
        image: &mut Image,
        inner: (u64, u64),
        middle: u64,
        outer: (u64, u64),
    ) {
        let l = jdk17();
        let nmethods = code_heap(
            image,
            &[
                (0, 300, "Interpreter", 0),
                (300, 4, "nmethod", 4),
                (320, 2, "StubRoutines (1)", 0),
            ],
        );
        image.put_u64(nmethods[1] + l.compiled_method, middle);
        let call_stub_return = pc_in(320);
        image.put_u64(l.call_stub_return_address, call_stub_return);
        let put_slot = |image: &mut Image, fp: u64, slot: i64, value: u64| {
            image.put_u64(fp.wrapping_add_signed(slot * 8), value);
        };
        // Entry (call stub) frame, outermost: its fp, the JavaCallWrapper below it.
        let entry_fp: u64 = 0x3b_f000;
        put_slot(image, entry_fp, l.entry_call_wrapper_slot, WRAPPER);
        // Outer interpreted frame.
        let outer_fp: u64 = 0x3b_e000;
        put_slot(image, outer_fp, 0, entry_fp);
        put_slot(image, outer_fp, 1, call_stub_return);
        put_slot(image, outer_fp, l.interp_sender_sp_slot, 0x3b_e800);
        put_slot(image, outer_fp, l.interp_method_slot, outer.0);
        put_slot(image, outer_fp, l.interp_bcp_slot, outer.1);
        // Compiled frame: 4 words from its sp (the inner frame's unextended sp), the last two
        // the saved fp (the outer frame's) and the return address into the interpreter.
        let compiled_sp = 0x3b_d000;
        image.put_u64(compiled_sp + 2 * 8, outer_fp);
        image.put_u64(compiled_sp + 3 * 8, pc_in(150));
        // Inner interpreted frame, the anchor on it.
        let inner_fp: u64 = 0x3b_c000;
        put_slot(image, inner_fp, 0, 0x3b_c0f0);
        put_slot(image, inner_fp, 1, pc_in(301));
        put_slot(image, inner_fp, l.interp_sender_sp_slot, compiled_sp);
        put_slot(image, inner_fp, l.interp_method_slot, inner.0);
        put_slot(image, inner_fp, l.interp_bcp_slot, inner.1);
        let last_sp = inner_fp - 0x60;
        image.put_u64(last_sp - 8, pc_in(42));
        let anchor = THREAD + l.thread_anchor;
        image.put_u64(anchor + l.anchor_sp, last_sp);
        image.put_u64(anchor + l.anchor_fp, inner_fp);
        image.put_u64(anchor + l.anchor_pc, 0);
    }

    /// Check the walk through an interpreted, a compiled and an interpreted frame to the call
    /// stub, whose wrapper records no earlier Java frames; and that a thread with no anchor
    /// (running Java, or never in Java) has none.
    #[test]
    fn walks_interpreted_and_compiled_frames_to_the_entry() {
        let mut image = Image::new(0x10_0000, 0x30_0000);
        blocked_stack(&mut image, (0x11, 0x111), 0x22, (0x33, 0x333));
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let l = jdk17();
        let cache = CodeCache::read(&reader, &l).expect("code cache");
        let runs = java_frames(&reader, &l, &cache, THREAD, &STACK);
        assert_eq!(
            runs,
            [vec![
                RawJavaFrame {
                    pc: pc_in(42),
                    method: 0x11,
                    bcp: Some(0x111),
                    nmethod: None,
                },
                RawJavaFrame {
                    pc: pc_in(301),
                    method: 0x22,
                    bcp: None,
                    nmethod: Some(HEAP_LOW + 300 * 64 + l.heap_block_size),
                },
                RawJavaFrame {
                    pc: pc_in(150),
                    method: 0x33,
                    bcp: Some(0x333),
                    nmethod: None,
                },
            ]]
        );
        image.put_u64(THREAD + l.thread_anchor + l.anchor_sp, 0);
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        assert!(java_frames(&reader, &l, &cache, THREAD, &STACK).is_empty());
    }

    /// Check that a walk leaving the stack (a torn or stale frame) stops with the frames found
    /// before, and that a wrapper's saved anchor starts a second run.
    #[test]
    fn stops_cleanly_and_follows_entries() {
        let mut image = Image::new(0x10_0000, 0x30_0000);
        blocked_stack(&mut image, (0x11, 0x111), 0x22, (0x33, 0x333));
        let l = jdk17();
        // The compiled frame's caller fp points off the stack.
        image.put_u64(0x3b_d000 + 2 * 8, 0x10);
        {
            let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
            let reader = Reader {
                read_mem: &read_mem,
            };
            let cache = CodeCache::read(&reader, &l).expect("code cache");
            let runs = java_frames(&reader, &l, &cache, THREAD, &STACK);
            let methods: Vec<u64> = runs.iter().flatten().map(|f| f.method).collect();
            assert_eq!(methods, [0x11, 0x22]);
        }
        // Repaired; the wrapper's anchor names an earlier interpreted frame.
        image.put_u64(0x3b_d000 + 2 * 8, 0x3b_e000);
        let earlier_fp: u64 = 0x3b_f800;
        image.put_u64(
            earlier_fp.wrapping_add_signed(l.interp_method_slot * 8),
            0x44,
        );
        image.put_u64(earlier_fp.wrapping_add_signed(l.interp_bcp_slot * 8), 0x444);
        image.put_u64(earlier_fp + 8, 0x5000); // returns into the VM: the walk ends
        image.put_u64(earlier_fp, 0x3b_f900);
        image.put_u64(
            earlier_fp.wrapping_add_signed(l.interp_sender_sp_slot * 8),
            0x3b_f880,
        );
        let saved = WRAPPER + l.call_wrapper_anchor;
        image.put_u64(saved + l.anchor_sp, earlier_fp - 0x40);
        image.put_u64(saved + l.anchor_fp, earlier_fp);
        image.put_u64(saved + l.anchor_pc, pc_in(7));
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let cache = CodeCache::read(&reader, &l).expect("code cache");
        let runs = java_frames(&reader, &l, &cache, THREAD, &STACK);
        let methods: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|f| f.method).collect())
            .collect();
        assert_eq!(methods, [vec![0x11, 0x22, 0x33], vec![0x44]]);
    }
}
