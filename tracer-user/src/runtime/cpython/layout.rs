//! Where a CPython version keeps what `profile --python` needs: the thread list, the frame
//! chain BPF walks, and the code objects user space names frames from.
//!
//! 3.13 publishes its offsets in `_Py_DebugOffsets` at the start of `_PyRuntime`
//! (<https://github.com/python/cpython/blob/v3.13.0/Include/internal/pycore_runtime.h>), and
//! they are read from there. 3.11 and 3.12 do not; their offsets are those of the structures in
//! each version's headers, as py-spy's generated bindings lay them out:
//! `PyInterpreterState.threads` (`Include/internal/pycore_interp.h`), `PyThreadState` and
//! `_PyCFrame` (`Include/cpython/pystate.h`), `_PyInterpreterFrame`
//! (`Include/internal/pycore_frame.h`), `PyCodeObject` (`Include/cpython/code.h`), e.g.
//! <https://github.com/python/cpython/blob/v3.11.0/Include/internal/pycore_frame.h> and
//! <https://github.com/python/cpython/blob/v3.12.0/Include/internal/pycore_frame.h>. Frame
//! layouts are stable within a minor version (the test suite checks 3.11.2 and 3.13.0; 3.12.1
//! was checked by hand). Other versions are not
//! supported: 3.10 and earlier keep a frame *object* chain (`tstate->frame`), 3.14 tags its
//! code pointers; both are left for later rather than guessed.

use tracer_common::{PY_FRAME_HEADER_BYTES, PyThread, py_marker};

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
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u64,
    /// `PyThreadState.next`.
    pub thread_next: u64,
    /// `PyThreadState.native_thread_id` (the kernel tid).
    pub thread_native_id: u64,
    /// The frame chain as BPF reads it (`tstate`, `tgid` left zero).
    pub frames: PyThread,
    /// Code objects.
    pub code: CodeLayout,
}

/// Offsets in `PyCodeObject`, and the string objects it points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodeLayout {
    /// `co_filename`.
    pub filename: u64,
    /// `co_qualname`.
    pub qualname: u64,
    /// `co_linetable` (a bytes object).
    pub linetable: u64,
    /// `co_firstlineno` (an int).
    pub first_line: u64,
    /// `co_code_adaptive`: where the instructions start.
    pub instructions: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_data: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub compact_data: u64,
}

/// The layout of CPython `version` whose `_PyRuntime` is at `runtime`; `None` for a version
/// not supported or debug offsets that do not check out.
pub(crate) fn layout(
    version: PyVersion,
    runtime: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Layout> {
    known_layout(version, runtime, read_mem).filter(|l| fits_frame_header(&l.frames))
}

/// Whether BPF can take every frame field from the frame's header: 8-aligned pointers and the
/// marker byte within [`PY_FRAME_HEADER_BYTES`].
fn fits_frame_header(frames: &PyThread) -> bool {
    let header = PY_FRAME_HEADER_BYTES as u32;
    [
        frames.code_offset,
        frames.previous_offset,
        frames.instr_offset,
    ]
    .iter()
    .all(|&o| o % 8 == 0 && o + 8 <= header)
        && frames.marker_offset < header
}

fn known_layout(
    version: PyVersion,
    runtime: u64,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Layout> {
    match (version.major, version.minor) {
        (3, 11) => Some(Layout {
            threads_head: 16,
            thread_next: 8,
            thread_native_id: 160,
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
                qualname: 128,
                linetable: 136,
                first_line: 72,
                instructions: 184,
                ascii_data: 48,
                compact_data: 72,
            },
        }),
        (3, 12) => Some(Layout {
            threads_head: 72,
            thread_next: 8,
            thread_native_id: 144,
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
                qualname: 128,
                linetable: 136,
                first_line: 68,
                instructions: 192,
                ascii_data: 40,
                compact_data: 56,
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
        thread_native_id: at(d::THREAD_NATIVE_ID)?,
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
            qualname: at(d::CODE_QUALNAME)?,
            linetable: at(d::CODE_LINETABLE)?,
            first_line: at(d::CODE_FIRSTLINENO)?,
            instructions: at(d::CODE_ADAPTIVE)?,
            ascii_data: 40,
            compact_data: 56,
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
        assert_eq!(layout.thread_native_id, 160);
        assert_eq!(layout.frames.frame_ptr_offset, 72);
        assert_eq!(layout.frames.cframe_frame_offset, u32::MAX);
        assert_eq!(layout.frames.instr_offset, 56);
        assert_eq!(layout.frames.marker_offset, 70);
        assert_eq!(layout.code.instructions, 200);
        memory.u64(0x1000 + 264, 72); // an owner byte past the frame header
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
        assert_eq!(super::layout(v(10), 0, &empty.reader()), None);
        assert_eq!(super::layout(v(14), 0, &empty.reader()), None);
    }
}
