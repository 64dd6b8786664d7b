//! Naming a Python frame recorded by BPF: its code object's name and file, and the line its
//! instruction is on, read from the process's memory.
//!
//! The name is `co_qualname` from 3.11 (`Worker.wait_on_lock`) and `co_name` before
//! (`wait_on_lock`): 3.10 and older code objects keep no qualified name, and none is made up.
//!
//! Lines come from the code object's line table, whose format changed twice
//! ([`LineFormat`]; CPython's `Objects/lnotab_notes.txt` and `Objects/locations.md`):
//! - 3.6–3.9, `co_lnotab`: (byte increment, line increment) pairs, the line increment a
//!   signed byte; the line of byte offset `a` is the first line plus every line increment
//!   whose pair's address, the running sum of the byte increments, is at most `a`.
//! - 3.10, `co_linetable`: (byte length, line increment) pairs, each a range of bytecode;
//!   a line increment of -128 means the range has no line.
//! - 3.11 and later, `co_linetable` as a location table: entries of one header byte (bit 7
//!   set; bits 3–6 a form code, bits 0–2 the number of code units minus one) followed by the
//!   form's varints. Forms 0–9 keep the line, 10–12 add 0–2, 13 and 14 add a signed varint,
//!   15 has no line.

use super::layout::{CodeLayout, LineFormat, Strings};
use crate::runtime::{read_u32, read_u64};

/// Longest string read from a code object (names and paths).
const MAX_STRING_BYTES: u64 = 4096;
/// Longest line table read.
const MAX_LINETABLE_BYTES: u64 = 1 << 20;
/// `PyBytesObject.ob_size` and `.ob_sval`.
const BYTES_SIZE: u64 = 16;
const BYTES_DATA: u64 = 32;
/// `PyStringObject.ob_sval` (2.7; its size is where a `bytes` object's is).
const BYTE_STRING_DATA: u64 = 36;
/// `PyASCIIObject.length` and `.state`.
const STRING_LENGTH: u64 = 16;
const STRING_STATE: u64 = 32;
/// 3.10's line increment for a range without a line.
const NO_LINE_3_10: i8 = -128;

/// What names a code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodeInfo {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// The code object's address.
    pub address: u64,
    /// The line table (`co_lnotab` or `co_linetable`).
    pub linetable: Vec<u8>,
    /// How to read it, and what a recorded instruction is.
    pub format: LineFormat,
}

impl CodeInfo {
    /// The line of the recorded instruction `instr`, if known: an address in the code object
    /// from 3.11, else the frame object's `f_lasti` in the low 32 bits (bytes up to 3.9, code
    /// units in 3.10; -1 before the first instruction, which is on the first line).
    pub(crate) fn line_at(&self, instr: u64) -> Option<u32> {
        // The `int f_lasti`; the high half of the recorded word is `f_lineno`.
        let lasti = i64::from(instr as u32 as i32);
        match self.format {
            LineFormat::Locations { instructions } => {
                let index = instr.checked_sub(self.address + instructions)? / 2;
                line_of(&self.linetable, self.first_line, index)
            }
            LineFormat::Lnotab { signed_lines } => {
                lnotab_line(&self.linetable, self.first_line, lasti, signed_lines)
            }
            LineFormat::LineTable310 => {
                linetable_310_line(&self.linetable, self.first_line, lasti * 2)
            }
        }
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
    let name = string_at(layout.name)?;
    let filename = string_at(layout.filename)?;
    let first_line = read_u32(code + layout.first_line, read_mem)?;
    let linetable = read_u64(code + layout.linetable, read_mem)
        .and_then(|table| read_bytes(table, layout.strings, read_mem))
        .unwrap_or_default();
    Some(CodeInfo {
        name,
        filename,
        first_line,
        address: code,
        linetable,
        format: layout.lines,
    })
}

/// A compact `str` object's text (all code object strings are compact).
fn read_string(
    object: u64,
    layout: &CodeLayout,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<String> {
    match layout.strings {
        Strings::Compact {
            ascii_data,
            compact_data,
        } => read_compact_string(object, ascii_data, compact_data, read_mem),
        Strings::Bytes => read_byte_string(object, read_mem),
    }
}

/// A 2.7 `str` (`PyStringObject`): its bytes, which end with a NUL, as UTF-8.
fn read_byte_string(object: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<String> {
    let size = read_u64(object + BYTES_SIZE, read_mem)?;
    if size > MAX_STRING_BYTES {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(size + 1).ok()?];
    if !read_mem(object + BYTE_STRING_DATA, &mut buf) || buf.pop() != Some(0) {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A compact 3.x `str`, whose characters start `ascii_data` (ASCII) or `compact_data` bytes
/// in.
fn read_compact_string(
    object: u64,
    ascii_data: u64,
    compact_data: u64,
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
    let data = object + if ascii { ascii_data } else { compact_data };
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

/// A `bytes` object's contents (a `str`'s in 2.7, whose code objects hold `strings`
/// [`Strings::Bytes`]).
fn read_bytes(
    object: u64,
    strings: Strings,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<Vec<u8>> {
    let size = read_u64(object + BYTES_SIZE, read_mem)?;
    if size > MAX_LINETABLE_BYTES {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    let data = match strings {
        Strings::Compact { .. } => BYTES_DATA,
        Strings::Bytes => BYTE_STRING_DATA,
    };
    read_mem(object + data, &mut buf).then_some(buf)
}

/// The line of byte offset `offset` by the `co_lnotab` `table` (2.7, 3.6–3.9; line
/// increments `signed` from 3.6) of a code object starting at `first_line`:
/// `PyCode_Addr2Line` of those versions (a negative offset, a frame that has not started, is
/// on the first line).
pub(crate) fn lnotab_line(table: &[u8], first_line: u32, offset: i64, signed: bool) -> Option<u32> {
    let mut line = i64::from(first_line);
    let mut address = 0i64;
    for pair in table.chunks_exact(2) {
        address += i64::from(pair[0]);
        if address > offset {
            break;
        }
        line += if signed {
            i64::from(pair[1] as i8)
        } else {
            i64::from(pair[1])
        };
    }
    u32::try_from(line).ok()
}

/// The line of byte offset `offset` by the `co_linetable` `table` of 3.10 of a code object
/// starting at `first_line`: the range holding it, `None` if that range has no line or the
/// offset is past the table (a negative offset is on the first line, as CPython has it).
pub(crate) fn linetable_310_line(table: &[u8], first_line: u32, offset: i64) -> Option<u32> {
    if offset < 0 {
        return Some(first_line);
    }
    let mut line = i64::from(first_line);
    let mut end = 0i64;
    for pair in table.chunks_exact(2) {
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let has_line = delta != NO_LINE_3_10;
        if has_line {
            line += i64::from(delta);
        }
        if offset < end {
            return has_line.then(|| u32::try_from(line).ok()).flatten();
        }
    }
    None
}

/// The line of code unit `index` by location table `table` (3.11+) of a code object starting
/// at `first_line`.
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
    use crate::runtime::cpython::tests_memory::{CODE_LAYOUT, Memory};

    /// Line tables of a real code object, recorded by `testdata/line_tables.py` on CPython
    /// 2.7 and 3.6 to 3.10, with the lines CPython itself gave for some of their instructions.
    const RECORDED_TABLES: &str = include_str!("testdata/line_tables.txt");

    /// One recorded table: version, first line, table, and (byte offset, line) pairs.
    type Recorded = (String, u32, Vec<u8>, Vec<(i64, u32)>);

    fn recorded_tables() -> Vec<Recorded> {
        let mut tables: Vec<Recorded> = Vec::new();
        for line in RECORDED_TABLES.lines() {
            let (key, value) = line.split_once(' ').expect("key value");
            match key {
                "version" => tables.push((value.to_owned(), 0, Vec::new(), Vec::new())),
                "first_line" => {
                    tables.last_mut().expect("a version").1 = value.parse().expect("line")
                }
                "table" => {
                    tables.last_mut().expect("a version").2 = (0..value.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
                        .collect();
                }
                "lasti" => {
                    let (offset, line) = value.split_once(' ').expect("lasti line");
                    tables
                        .last_mut()
                        .expect("a version")
                        .3
                        .push((offset.parse().expect("offset"), line.parse().expect("line")));
                }
                _ => panic!("unknown recorded line {line:?}"),
            }
        }
        tables
    }

    /// Check that the `co_lnotab` (2.7, 3.6–3.9) and 3.10 `co_linetable` decoders give, on
    /// real tables, the lines CPython gave for the same instructions (a negative line step, a
    /// jump of more than 127 lines and more than 255 bytes on one line among them), through
    /// `line_at` with `f_lasti` as the frame keeps it (code units in 3.10, `f_lineno` in the
    /// high half of the recorded word).
    #[test]
    fn recorded_line_tables_give_cpythons_lines() {
        let tables = recorded_tables();
        let versions: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            versions,
            ["2.7.18", "3.6.15", "3.7.16", "3.8.18", "3.9.18", "3.10.13"]
        );
        for (version, first_line, table, points) in &tables {
            assert!(points.len() >= 10, "{version}");
            let is_3_10 = version.starts_with("3.10.");
            let info = CodeInfo {
                name: "sample".into(),
                filename: "sample.py".into(),
                first_line: *first_line,
                address: 0x1000,
                linetable: table.clone(),
                format: if is_3_10 {
                    LineFormat::LineTable310
                } else {
                    LineFormat::Lnotab {
                        signed_lines: !version.starts_with("2."),
                    }
                },
            };
            for &(offset, line) in points {
                let lasti = if is_3_10 { offset / 2 } else { offset };
                let recorded = (0xdead_u64 << 32) | lasti as u64;
                assert_eq!(info.line_at(recorded), Some(line), "{version} at {offset}");
            }
            assert_eq!(
                info.line_at(u64::from(u32::MAX)),
                Some(*first_line),
                "{version} f_lasti -1"
            );
        }
    }

    /// Check 3.10's cases the recorded table lacks: a range without a line (-128), an empty
    /// range that only moves the line, and an offset past the table.
    #[test]
    fn line_table_3_10_ranges_without_lines() {
        let table = [6, 1, 4, 0x80, 0, 3, 2, 0xff];
        let line = |offset| linetable_310_line(&table, 10, offset);
        assert_eq!(line(0), Some(11));
        assert_eq!(line(5), Some(11));
        assert_eq!(line(6), None);
        assert_eq!(line(10), Some(13));
        assert_eq!(line(12), None);
    }

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
        let info = read_code(code, &CODE_LAYOUT, &memory.reader()).expect("code");
        assert_eq!(info.name, "Worker.wait_on_lock");
        assert_eq!(info.filename, "/tmp/app.py");
        assert_eq!(info.line_at(code + 200 + 2), Some(40));
        assert_eq!(info.line_at(code + 200 + 4), Some(41));
        assert_eq!(info.line_at(code), None);
        memory.u32(0x30_000 + STRING_STATE, 1 << 2);
        assert_eq!(read_code(code, &CODE_LAYOUT, &memory.reader()), None);
    }

    /// Check that 2.7's byte-string names are read up to their NUL, its line table from a
    /// byte string too, and that a name without its NUL is refused.
    #[test]
    fn byte_string_names() {
        let layout = CodeLayout {
            filename: 80,
            name: 88,
            linetable: 104,
            first_line: 96,
            lines: LineFormat::Lnotab {
                signed_lines: false,
            },
            strings: Strings::Bytes,
        };
        let mut memory = Memory::default();
        let code = 0x10_000;
        for (offset, object, text) in [(88, 0x20_000, "wait_on_lock"), (80, 0x30_000, "/a.py")] {
            memory.u64(code + offset, object);
            memory.u64(object + BYTES_SIZE, text.len() as u64);
            memory.bytes(object + BYTE_STRING_DATA, text.as_bytes());
            memory.bytes(object + BYTE_STRING_DATA + text.len() as u64, &[0]);
        }
        memory.u32(code + 96, 7);
        memory.u64(code + 104, 0x40_000);
        memory.u64(0x40_000 + BYTES_SIZE, 4);
        memory.bytes(0x40_000 + BYTE_STRING_DATA, &[0, 1, 9, 1, 0]);
        let info = read_code(code, &layout, &memory.reader()).expect("code");
        assert_eq!(
            (info.name.as_str(), info.filename.as_str()),
            ("wait_on_lock", "/a.py")
        );
        assert_eq!(info.line_at(u64::from(u32::MAX)), Some(7));
        assert_eq!(info.line_at(8), Some(8));
        assert_eq!(info.line_at(9), Some(9));
        memory.bytes(0x30_000 + BYTE_STRING_DATA + 5, b"x");
        assert_eq!(read_code(code, &layout, &memory.reader()), None);
    }
}
