//! Naming a Python frame recorded by BPF: its code object's qualified name and file, and the
//! line its instruction pointer is on, read from the process's memory.
//!
//! Lines come from `co_linetable`, the location table of 3.11 and later: entries of one
//! header byte (bit 7 set; bits 3–6 a form code, bits 0–2 the number of code units minus one)
//! followed by the form's varints. Forms 0–9 keep the line, 10–12 add 0–2, 13 and 14 add a
//! signed varint, 15 has no line. (CPython's `Objects/locations.md`.)

use super::layout::CodeLayout;
use crate::runtime::{read_u32, read_u64};

/// Longest string read from a code object (names and paths).
const MAX_STRING_BYTES: u64 = 4096;
/// Longest line table read.
const MAX_LINETABLE_BYTES: u64 = 1 << 20;
/// `PyBytesObject.ob_size` and `.ob_sval`.
const BYTES_SIZE: u64 = 16;
const BYTES_DATA: u64 = 32;
/// `PyASCIIObject.length` and `.state`.
const STRING_LENGTH: u64 = 16;
const STRING_STATE: u64 = 32;

/// What names a code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodeInfo {
    /// `co_qualname`.
    pub qualname: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// Where its instructions start in memory.
    pub instructions_at: u64,
    /// `co_linetable`.
    pub linetable: Vec<u8>,
}

impl CodeInfo {
    /// The line of the instruction at `instr` (an address in the instructions), if known.
    pub(crate) fn line_at(&self, instr: u64) -> Option<u32> {
        let index = instr.checked_sub(self.instructions_at)? / 2;
        line_of(&self.linetable, self.first_line, index)
    }
}

/// Reads the code object at `code`; `None` if it cannot be read or does not look like one.
pub(crate) fn read_code(
    code: u64,
    layout: &CodeLayout,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<CodeInfo> {
    let string_at = |offset| {
        let object = read_u64(code + offset, read_mem)?;
        read_string(object, layout, read_mem)
    };
    let qualname = string_at(layout.qualname)?;
    let filename = string_at(layout.filename)?;
    let first_line = read_u32(code + layout.first_line, read_mem)?;
    let linetable = read_u64(code + layout.linetable, read_mem)
        .and_then(|table| read_bytes(table, read_mem))
        .unwrap_or_default();
    Some(CodeInfo {
        qualname,
        filename,
        first_line,
        instructions_at: code + layout.instructions,
        linetable,
    })
}

/// A compact `str` object's text (all code object strings are compact).
fn read_string(
    object: u64,
    layout: &CodeLayout,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<String> {
    let length = read_u64(object + STRING_LENGTH, read_mem)?;
    let state = read_u32(object + STRING_STATE, read_mem)?;
    let kind = (state >> 2) & 7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    if !compact || !(1..=4).contains(&kind) || kind == 3 {
        return None;
    }
    let bytes = length.checked_mul(u64::from(kind))?;
    if bytes > MAX_STRING_BYTES {
        return None;
    }
    let data = object
        + if ascii {
            layout.ascii_data
        } else {
            layout.compact_data
        };
    let mut buf = vec![0u8; usize::try_from(bytes).ok()?];
    if !read_mem(data, &mut buf) {
        return None;
    }
    Some(match kind {
        1 => buf.iter().map(|&b| char::from(b)).collect(),
        2 => buf
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]]))).unwrap_or('?'))
            .collect(),
        _ => buf
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
    })
}

/// A `bytes` object's contents.
fn read_bytes(object: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Vec<u8>> {
    let size = read_u64(object + BYTES_SIZE, read_mem)?;
    if size > MAX_LINETABLE_BYTES {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    read_mem(object + BYTES_DATA, &mut buf).then_some(buf)
}

/// The line of code unit `index` by location table `table` of a code object starting at
/// `first_line`.
pub(crate) fn line_of(table: &[u8], first_line: u32, index: u64) -> Option<u32> {
    let mut at = 0usize;
    let mut line = i64::from(first_line);
    let mut start = 0u64;
    while at < table.len() {
        let header = table[at];
        if header & 0x80 == 0 {
            return None; // not at an entry start: a table this reader does not understand
        }
        at += 1;
        let form = (header >> 3) & 0xf;
        let units = u64::from(header & 7) + 1;
        let has_line = match form {
            15 => false,
            14 => {
                line += signed_varint(table, &mut at)?;
                for _ in 0..3 {
                    varint(table, &mut at)?;
                }
                true
            }
            13 => {
                line += signed_varint(table, &mut at)?;
                true
            }
            10..=12 => {
                line += i64::from(form - 10);
                at += 2;
                true
            }
            _ => {
                at += 1;
                true
            }
        };
        if index < start + units {
            return has_line.then(|| u32::try_from(line).ok()).flatten();
        }
        start += units;
    }
    None
}

/// An unsigned varint of the location table: 6 bits a byte, bit 6 set when more follow.
fn varint(table: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *table.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x3f) << shift;
        if byte & 0x40 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 60 {
            return None;
        }
    }
}

/// A signed varint: the sign in bit 0.
fn signed_varint(table: &[u8], at: &mut usize) -> Option<i64> {
    let value = varint(table, at)?;
    let magnitude = i64::try_from(value >> 1).ok()?;
    Some(if value & 1 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::Memory;

    const LAYOUT: CodeLayout = CodeLayout {
        filename: 112,
        qualname: 128,
        linetable: 136,
        first_line: 68,
        instructions: 200,
        ascii_data: 40,
        compact_data: 56,
    };

    fn ascii(memory: &mut Memory, at: u64, text: &str) {
        memory.u64(at + STRING_LENGTH, text.len() as u64);
        memory.u32(at + STRING_STATE, (1 << 2) | (1 << 5) | (1 << 6));
        memory.bytes(at + 40, text.as_bytes());
    }

    /// Check the line table forms: a short entry keeps the first line, a one-line entry adds
    /// to it, a no-column entry adds a signed delta (here -1), a no-location entry has no
    /// line, and an index past the table has none.
    #[test]
    fn line_table_forms() {
        let table = [
            0x80 | 1, // short form (0), 2 units: line 10
            0x05,
            0x80 | (12 << 3), // one-line form +2, 1 unit: line 12
            0x01,
            0x02,
            0x80 | (13 << 3) | 2, // no column, -1, 3 units: line 11
            0x03,
            0x80 | (15 << 3), // no location, 1 unit
            0x80 | (14 << 3), // long form +5: line 16
            0x0a,
            0x00,
            0x01,
            0x02,
        ];
        let line = |index| line_of(&table, 10, index);
        assert_eq!(line(0), Some(10));
        assert_eq!(line(1), Some(10));
        assert_eq!(line(2), Some(12));
        assert_eq!(line(3), Some(11));
        assert_eq!(line(5), Some(11));
        assert_eq!(line(6), None);
        assert_eq!(line(7), Some(16));
        assert_eq!(line(8), None);
        assert_eq!(line_of(&[0x01], 1, 0), None);
    }

    /// Check that a code object's names, first line and instruction lines are read from
    /// recorded bytes, and that a non-compact string is refused.
    #[test]
    fn code_objects_are_named() {
        let mut memory = Memory::default();
        let code = 0x10_000;
        memory.u64(code + 128, 0x20_000);
        ascii(&mut memory, 0x20_000, "Worker.wait_on_lock");
        memory.u64(code + 112, 0x30_000);
        ascii(&mut memory, 0x30_000, "/tmp/app.py");
        memory.u32(code + 68, 40);
        memory.u64(code + 136, 0x40_000);
        memory.u64(0x40_000 + BYTES_SIZE, 4);
        memory.bytes(0x40_000 + BYTES_DATA, &[0x80 | 1, 0, 0x80 | (11 << 3), 0]);
        let info = read_code(code, &LAYOUT, &memory.reader()).expect("code");
        assert_eq!(info.qualname, "Worker.wait_on_lock");
        assert_eq!(info.filename, "/tmp/app.py");
        assert_eq!(info.line_at(code + 200 + 2), Some(40));
        assert_eq!(info.line_at(code + 200 + 4), Some(41));
        assert_eq!(info.line_at(code), None);
        memory.u32(0x30_000 + STRING_STATE, 1 << 2);
        assert_eq!(read_code(code, &LAYOUT, &memory.reader()), None);
    }
}
