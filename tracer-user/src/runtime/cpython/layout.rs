//! Where a CPython version keeps what `profile --python` needs: the thread list, the frame
//! chain BPF walks, and the code objects user space names frames from.
//!
//! 3.13 publishes its offsets in `_Py_DebugOffsets` at the start of `_PyRuntime`
//! (<https://github.com/python/cpython/blob/v3.13.0/Include/internal/pycore_runtime.h>), and
//! they are read from there. 2.7 to 3.12 do not; their offsets are those of the structures in
//! each version's headers, as py-spy's generated bindings lay them out (its
//! `python_bindings::vX_Y_Z` modules are private: the numbers are written here, and were
//! checked with `offset_of!` on a copy of those bindings): `PyInterpreterState.threads`
//! (`Include/internal/pycore_interp.h`), `PyThreadState` and `_PyCFrame`
//! (`Include/cpython/pystate.h`), `_PyInterpreterFrame` (`Include/internal/pycore_frame.h`),
//! `PyCodeObject` (`Include/cpython/code.h`), e.g.
//! <https://github.com/python/cpython/blob/v3.11.0/Include/internal/pycore_frame.h> and
//! <https://github.com/python/cpython/blob/v3.12.0/Include/internal/pycore_frame.h>. 3.10 and
//! older (2.7 too) keep a chain of frame *objects* instead (`tstate->frame`, `f_back`; e.g.
//! <https://github.com/python/cpython/blob/v3.10.0/Include/cpython/frameobject.h>), each run by
//! its own call of the eval loop, whose thread states know their thread only by its
//! `pthread_t`. Frame layouts are stable within a minor version (the test suite runs 2.7.18,
//! 3.6.15, 3.8.18, 3.10.13, 3.11.2, 3.12.1 and 3.13.0; 3.7.16 and 3.9.18 were checked by hand).
//! Other versions are not supported: 3.0–3.5 (not asked for), 3.14 tags its code pointers; both
//! are left for later rather than guessed.

use tracer_common::{PY_FRAME_HEADER_MAX_BYTES, PyThread, py_marker};

use super::PyVersion;
use crate::runtime::read_u64;

/// `_Py_DebugOffsets` starts with this cookie.
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// Where 3.13's `_Py_DebugOffsets` keeps each offset used (after the cookie, the version, the
/// free-threading flag, `runtime_state` {size, finalizing, interpreters_head},
/// `interpreter_state` {size, id, next, threads_head, ...}, `thread_state` {size, prev, next,
/// interp, current_frame, thread_id, native_thread_id, ...}, `interpreter_frame` {size,
/// previous, executable, instr_ptr, localsplus, owner}, `code_object` {size, filename, name,
/// qualname, linetable, firstlineno, argcount, localsplusnames, localspluskinds,
/// co_code_adaptive}).
mod debug_3_13 {
    pub(super) const VERSION: u64 = 8;
    pub(super) const THREADS_HEAD: u64 = 72;
    pub(super) const THREAD_NEXT: u64 = 168;
    pub(super) const THREAD_CURRENT_FRAME: u64 = 184;
    pub(super) const THREAD_NATIVE_ID: u64 = 200;
    pub(super) const FRAME_PREVIOUS: u64 = 232;
    pub(super) const FRAME_EXECUTABLE: u64 = 240;
    pub(super) const FRAME_INSTR_PTR: u64 = 248;
    pub(super) const FRAME_OWNER: u64 = 264;
    pub(super) const CODE_FILENAME: u64 = 280;
    pub(super) const CODE_QUALNAME: u64 = 296;
    pub(super) const CODE_LINETABLE: u64 = 304;
    pub(super) const CODE_FIRSTLINENO: u64 = 312;
    pub(super) const CODE_ADAPTIVE: u64 = 344;
}

/// Offsets of one CPython version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `PyInterpreterState.threads.head` (`tstate_head` up to 3.10).
    pub threads_head: u64,
    /// `PyThreadState.next`.
    pub thread_next: u64,
    /// Where a thread state says which kernel thread it is.
    pub thread_id: ThreadId,
    /// The frame chain as BPF reads it (`tstate`, `tgid` left zero).
    pub frames: PyThread,
    /// Code objects.
    pub code: CodeLayout,
}

/// The field of `PyThreadState` that tells its thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadId {
    /// `native_thread_id`, the kernel tid (3.11+).
    Native(u64),
    /// `thread_id`, the `pthread_t` only (3.10 and older): the tid is found through it
    /// ([`tids`](super::tids)).
    Pthread(u64),
}

/// Offsets in `PyCodeObject`, and the string objects it points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodeLayout {
    /// `co_filename`.
    pub filename: u64,
    /// `co_qualname` (3.11+), `co_name` before (there is no qualified name).
    pub name: u64,
    /// `co_linetable` (`co_lnotab` up to 3.9; a bytes object).
    pub linetable: u64,
    /// `co_firstlineno` (an int).
    pub first_line: u64,
    /// The line table's format, and what a recorded instruction is.
    pub lines: LineFormat,
    /// The string objects the names are.
    pub strings: Strings,
}

/// How the names of a code object are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strings {
    /// Compact `str` objects (3.3+).
    Compact {
        /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
        ascii_data: u64,
        /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
        compact_data: u64,
    },
    /// 2.7's byte strings, `PyStringObject` (`Include/stringobject.h`).
    Bytes,
}

/// How a version keeps its line table and its frames' instruction ([`code`](super::code)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineFormat {
    /// 3.11+: a location table; the instruction is an address in the code object, whose
    /// instructions (`co_code_adaptive`) start `instructions` bytes in.
    Locations {
        /// Offset of `co_code_adaptive`.
        instructions: u64,
    },
    /// 2.7, 3.6–3.9: `co_lnotab`; the instruction is `f_lasti`, a byte offset.
    Lnotab {
        /// Whether line increments are signed bytes (3.6+) rather than unsigned (2.7).
        signed_lines: bool,
    },
    /// 3.10: `co_linetable` of (length, line) ranges; the instruction is `f_lasti`, an index
    /// of 2-byte code units.
    LineTable310,
}

/// 3.6–3.9's `co_lnotab`.
const LNOTAB: LineFormat = LineFormat::Lnotab { signed_lines: true };

/// The layout of CPython `version` whose `_PyRuntime` is at `runtime` (3.7+; 3.6 has none and
/// needs none); `None` for a version not supported or debug offsets that do not check out.
pub(crate) fn layout(
    version: PyVersion,
    runtime: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Layout> {
    let mut layout = known_layout(version, runtime, read_mem)?;
    layout.frames.header_bytes = header_bytes(&layout.frames)?;
    Some(layout)
}

/// The bytes BPF reads from each frame to take every frame field in one read: up to the end
/// of the furthest field, in whole words. `None` unless pointers are 8-aligned and it fits
/// in [`PY_FRAME_HEADER_MAX_BYTES`].
fn header_bytes(frames: &PyThread) -> Option<u32> {
    let pointers = [
        frames.code_offset,
        frames.previous_offset,
        frames.instr_offset,
    ];
    if pointers.iter().any(|o| o % 8 != 0) {
        return None;
    }
    let end = pointers
        .iter()
        .map(|o| o + 8)
        .chain([frames.marker_offset.checked_add(1)?])
        .max()?;
    let bytes = end.div_ceil(8) * 8;
    (bytes <= PY_FRAME_HEADER_MAX_BYTES as u32).then_some(bytes)
}

/// A chain of frame objects (3.10 and older): `PyThreadState.frame` at `frame_offset`, then
/// `f_back`, `f_code` and `f_lasti` (at `lasti_offset`) in each `PyFrameObject`
/// (`Include/frameobject.h`, `Include/cpython/frameobject.h` from 3.8). Every frame is its
/// own eval-loop call: the marker is the code pointer's low byte, always 0.
fn frame_objects(frame_offset: u32, lasti_offset: u32) -> PyThread {
    PyThread {
        frame_ptr_offset: frame_offset,
        cframe_frame_offset: u32::MAX,
        code_offset: 32,
        previous_offset: 24,
        instr_offset: lasti_offset,
        marker_offset: 32,
        marker: py_marker::FRAME_OBJECT,
        ..PyThread::default()
    }
}

/// The code objects of 3.6–3.10 (`Include/code.h`, `Include/cpython/code.h` from 3.8; 3.8
/// added `co_posonlyargcount` before `co_firstlineno`) and their compact strings
/// (`PyASCIIObject` with `wstr`, 48 bytes, `PyCompactUnicodeObject` 72).
fn frame_object_code(posonly: bool, lines: LineFormat) -> CodeLayout {
    let shift = if posonly { 8 } else { 0 };
    CodeLayout {
        filename: 96 + shift,
        name: 104 + shift,
        linetable: 112 + shift,
        first_line: if posonly { 40 } else { 36 },
        lines,
        strings: Strings::Compact {
            ascii_data: 48,
            compact_data: 72,
        },
    }
}

fn known_layout(
    version: PyVersion,
    runtime: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Layout> {
    // 3.6–3.10: `PyInterpreterState.tstate_head` after `next`; `PyThreadState` starts with
    // `prev`, `next`, `interp`, `frame`; `thread_id` follows the recursion and tracing
    // fields (`Include/pystate.h`, `Include/cpython/pystate.h` from 3.8).
    let frame_object_layout = |thread_id, lasti, code| Layout {
        threads_head: 8,
        thread_next: 8,
        thread_id: ThreadId::Pthread(thread_id),
        frames: frame_objects(24, lasti),
        code,
    };
    match (version.major, version.minor) {
        // 2.7: `PyThreadState` has no `prev` (`next`, `interp`, `frame`), its code objects
        // keep `co_firstlineno` after the names and byte-string names.
        (2, 7) => Some(Layout {
            threads_head: 8,
            thread_next: 0,
            thread_id: ThreadId::Pthread(144),
            frames: frame_objects(16, 120),
            code: CodeLayout {
                filename: 80,
                name: 88,
                linetable: 104,
                first_line: 96,
                lines: LineFormat::Lnotab {
                    signed_lines: false,
                },
                strings: Strings::Bytes,
            },
        }),
        (3, 6) => Some(frame_object_layout(
            152,
            120,
            frame_object_code(false, LNOTAB),
        )),
        (3, 7) => Some(frame_object_layout(
            176,
            104,
            frame_object_code(false, LNOTAB),
        )),
        (3, 8 | 9) => Some(frame_object_layout(
            176,
            104,
            frame_object_code(true, LNOTAB),
        )),
        (3, 10) => Some(frame_object_layout(
            176,
            96,
            frame_object_code(true, LineFormat::LineTable310),
        )),
        (3, 11) => Some(Layout {
            threads_head: 16,
            thread_next: 8,
            thread_id: ThreadId::Native(160),
            frames: PyThread {
                frame_ptr_offset: 56,
                cframe_frame_offset: 8,
                code_offset: 32,
                previous_offset: 48,
                instr_offset: 56,
                marker_offset: 68,
                marker: py_marker::IS_ENTRY,
                ..PyThread::default()
            },
            code: CodeLayout {
                filename: 112,
                name: 128,
                linetable: 136,
                first_line: 72,
                lines: LineFormat::Locations { instructions: 184 },
                strings: Strings::Compact {
                    ascii_data: 48,
                    compact_data: 72,
                },
            },
        }),
        (3, 12) => Some(Layout {
            threads_head: 72,
            thread_next: 8,
            thread_id: ThreadId::Native(144),
            frames: PyThread {
                frame_ptr_offset: 56,
                cframe_frame_offset: 0,
                code_offset: 0,
                previous_offset: 8,
                instr_offset: 56,
                marker_offset: 70,
                marker: py_marker::OWNER_CSTACK,
                ..PyThread::default()
            },
            code: CodeLayout {
                filename: 112,
                name: 128,
                linetable: 136,
                first_line: 68,
                lines: LineFormat::Locations { instructions: 192 },
                strings: Strings::Compact {
                    ascii_data: 40,
                    compact_data: 56,
                },
            },
        }),
        (3, 13) => from_debug_offsets(runtime, read_mem),
        _ => None,
    }
}

/// 3.13's layout from its `_Py_DebugOffsets`.
fn from_debug_offsets(runtime: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Layout> {
    use debug_3_13 as d;
    let mut cookie = [0u8; 8];
    if !read_mem(runtime, &mut cookie) || &cookie != DEBUG_COOKIE {
        return None;
    }
    let hex_version = read_u64(runtime + d::VERSION, read_mem)?;
    if hex_version >> 16 != 0x030d {
        return None;
    }
    let at = |offset: u64| read_u64(runtime + offset, read_mem);
    let small = |offset: u64| {
        at(offset)
            .filter(|&v| v < 1 << 20)
            .and_then(|v| u32::try_from(v).ok())
    };
    Some(Layout {
        threads_head: at(d::THREADS_HEAD)?,
        thread_next: at(d::THREAD_NEXT)?,
        thread_id: ThreadId::Native(at(d::THREAD_NATIVE_ID)?),
        frames: PyThread {
            frame_ptr_offset: small(d::THREAD_CURRENT_FRAME)?,
            cframe_frame_offset: u32::MAX,
            code_offset: small(d::FRAME_EXECUTABLE)?,
            previous_offset: small(d::FRAME_PREVIOUS)?,
            instr_offset: small(d::FRAME_INSTR_PTR)?,
            marker_offset: small(d::FRAME_OWNER)?,
            marker: py_marker::OWNER_CSTACK,
            ..PyThread::default()
        },
        code: CodeLayout {
            filename: at(d::CODE_FILENAME)?,
            name: at(d::CODE_QUALNAME)?,
            linetable: at(d::CODE_LINETABLE)?,
            first_line: at(d::CODE_FIRSTLINENO)?,
            lines: LineFormat::Locations {
                instructions: at(d::CODE_ADAPTIVE)?,
            },
            strings: Strings::Compact {
                ascii_data: 40,
                compact_data: 56,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::Memory;

    fn v(minor: u64) -> PyVersion {
        PyVersion {
            major: 3,
            minor,
            patch: 0,
        }
    }

    /// Check that 3.13's offsets come from `_Py_DebugOffsets` (values recorded from a 3.13.0
    /// `_PyRuntime`), that frame fields BPF could not take from the frame header, another
    /// version number there or no cookie give none, and that versions without a known layout
    /// give none.
    #[test]
    fn layouts_by_version() {
        let mut memory = Memory::default();
        memory.bytes(0x1000, b"xdebugpy");
        memory.u64(0x1000 + 8, 0x030d_00f0);
        for (offset, value) in [
            (72, 7344),
            (168, 8),
            (184, 72),
            (200, 160),
            (232, 8),
            (240, 0),
            (248, 56),
            (264, 70),
            (280, 112),
            (296, 128),
            (304, 136),
            (312, 68),
            (344, 200),
        ] {
            memory.u64(0x1000 + offset, value);
        }
        let layout = layout(v(13), 0x1000, &memory.reader()).expect("3.13 layout");
        assert_eq!(layout.threads_head, 7344);
        assert_eq!(layout.thread_id, ThreadId::Native(160));
        assert_eq!(layout.frames.frame_ptr_offset, 72);
        assert_eq!(layout.frames.cframe_frame_offset, u32::MAX);
        assert_eq!(layout.frames.instr_offset, 56);
        assert_eq!(layout.frames.marker_offset, 70);
        assert_eq!(layout.frames.header_bytes, 72);
        assert_eq!(
            layout.code.lines,
            LineFormat::Locations { instructions: 200 }
        );
        memory.u64(0x1000 + 264, 128); // an owner byte past what BPF can read
        assert_eq!(super::layout(v(13), 0x1000, &memory.reader()), None);
        memory.u64(0x1000 + 264, 70);
        memory.u64(0x1000 + 248, 52); // an unaligned pointer
        assert_eq!(super::layout(v(13), 0x1000, &memory.reader()), None);
        memory.u64(0x1000 + 248, 56);
        memory.u64(0x1000 + 8, 0x030e_00f0);
        assert_eq!(super::layout(v(13), 0x1000, &memory.reader()), None);
        let empty = Memory::default();
        assert_eq!(super::layout(v(13), 0x1000, &empty.reader()), None);
        assert_eq!(
            super::layout(v(11), 0, &empty.reader()).map(|l| l.frames.marker),
            Some(py_marker::IS_ENTRY)
        );
        assert_eq!(super::layout(v(5), 0, &empty.reader()), None);
        assert_eq!(super::layout(v(14), 0, &empty.reader()), None);
    }

    /// Check that 2.7 and 3.6–3.10 walk frame objects, each read up to its `f_lasti` (what BPF
    /// reads grows from 3.11's 72 bytes to 104–128), that 3.11 and 3.12 read 72 bytes, that
    /// only 3.8+ code objects have `co_posonlyargcount` before their names and that 2.7's
    /// thread states and names differ.
    #[test]
    fn frame_object_versions() {
        let empty = Memory::default();
        let at = |minor| layout(v(minor), 0, &empty.reader()).expect("a layout");
        for (minor, header_bytes, name) in [
            (6, 128, 104),
            (7, 112, 104),
            (8, 112, 112),
            (9, 112, 112),
            (10, 104, 112),
            (11, 72, 128),
            (12, 72, 128),
        ] {
            let layout = at(minor);
            assert_eq!(layout.frames.header_bytes, header_bytes, "3.{minor}");
            assert_eq!(layout.code.name, name, "3.{minor}");
            assert_eq!(
                layout.frames.marker == py_marker::FRAME_OBJECT,
                minor <= 10,
                "3.{minor}"
            );
        }
        assert_eq!(at(6).thread_id, ThreadId::Pthread(152));
        let v27 = PyVersion {
            major: 2,
            minor: 7,
            patch: 18,
        };
        let layout27 = layout(v27, 0, &empty.reader()).expect("2.7");
        assert_eq!(layout27.frames.frame_ptr_offset, 16);
        assert_eq!(layout27.frames.header_bytes, 128);
        assert_eq!(layout27.code.strings, Strings::Bytes);
        assert_eq!(at(10).code.lines, LineFormat::LineTable310);
        assert_eq!(at(9).code.lines, LNOTAB);
        assert_eq!(at(10).frames.cframe_frame_offset, u32::MAX);
    }
}
