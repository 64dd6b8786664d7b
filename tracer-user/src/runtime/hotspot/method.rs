//! A Java method's name, source file and line, as `jstack` prints them
//! (`MonitorDeadlock.take(MonitorDeadlock.java:19)`), read from its `Method*`.
//!
//! `Method::_constMethod` holds the immutable part: the constant pool (`_constants`), the
//! name's index in it (`_name_index`, the pool's slots are `Symbol*`s after the
//! `ConstantPool`), the bytecodes right after the `ConstMethod` and, when `_flags` says so,
//! the compressed line number table right after them. The class is the pool's holder
//! (`_pool_holder`, its `Klass::_name`), the file the pool's `_source_file_name_index`.
//!
//! The line table is a stream of (bci, line) deltas: one byte `bci_delta << 3 | line_delta`
//! when both are small, else `0xFF` and two signed `UNSIGNED5` numbers, ended by a 0 byte
//! (`CompressedLineNumberWriteStream`). The line of a bci is that of the entry with the
//! largest bci not above it, as `Method::line_number_from_bci` picks it.

use super::{
    HotspotError,
    frame_layout::{ACC_NATIVE, FrameLayout},
    scopes::unsigned5,
    vmstructs::Reader,
};

/// Longest name read, bytes.
const MAX_SYMBOL_BYTES: u16 = 1024;
/// Most line table bytes read.
const MAX_LINE_TABLE_BYTES: u64 = 64 * 1024;
/// Line table bytes read at once.
const LINE_TABLE_CHUNK: usize = 64;

/// A method as a stack trace shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JavaMethod {
    /// `pkg.Class.method` (`java.lang.Object.wait`, `Outer$Inner.lambda$main$0`).
    pub name: String,
    /// The source file the class was compiled from (`MonitorDeadlock.java`), if recorded.
    pub file: Option<String>,
    /// The source line, if the frame's bytecode index and the line table are known.
    pub line: Option<u32>,
    /// A native method (`Native Method` in `jstack`).
    pub native: bool,
}

/// Where in its method a frame is, for its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    /// A bytecode pointer (an interpreted frame).
    Bcp(u64),
    /// A bytecode index (a compiled frame's scope; negative at the method's entry).
    Bci(i32),
    /// Unknown.
    Unknown,
}

/// Reads method `method`; `at` gives the line.
pub(crate) fn read(
    reader: &Reader<'_>,
    l: &FrameLayout,
    method: u64,
    at: At,
) -> Result<JavaMethod, HotspotError> {
    if method == 0 {
        return Err(HotspotError::Implausible("null Method*"));
    }
    let constant = reader.u64(method + l.method_const)?;
    let native = reader.u32(method + l.method_access_flags)? & ACC_NATIVE != 0;
    let pool = reader.u64(constant + l.const_constants)?;
    let holder = reader.u64(pool + l.cp_holder)?;
    let class = external_name(&symbol(reader, l, reader.u64(holder + l.klass_name)?)?);
    let name_index = u64::from(reader.u16(constant + l.const_name_index)?);
    let name = symbol(reader, l, reader.u64(pool + l.cp_size + name_index * 8)?)?;
    let file = match u64::from(reader.u16(pool + l.cp_source_file)?) {
        0 => None,
        index => symbol(reader, l, reader.u64(pool + l.cp_size + index * 8)?).ok(),
    };
    let line = match at {
        _ if native => None,
        At::Unknown => None,
        at => line_of(reader, l, constant, at).ok().flatten(),
    };
    Ok(JavaMethod {
        name: format!("{class}.{name}"),
        file,
        line,
        native,
    })
}

/// A class name as Java prints it: dotted, and a hidden class's `+` before its address a `/`
/// (`Main$$Lambda$1/0x0000000800c00a08`, as `Klass::external_name` does).
fn external_name(internal: &str) -> String {
    let mut name = internal.replace('/', ".");
    if let Some(plus) = name.rfind("+0x") {
        name.replace_range(plus..=plus, "/");
    }
    name
}

/// The text of `Symbol*` `symbol`.
fn symbol(reader: &Reader<'_>, l: &FrameLayout, symbol: u64) -> Result<String, HotspotError> {
    if symbol == 0 {
        return Err(HotspotError::Implausible("null Symbol*"));
    }
    let length = reader.u16(symbol + l.symbol_length)?;
    if length > MAX_SYMBOL_BYTES {
        return Err(HotspotError::Implausible("symbol length"));
    }
    let body = reader.vec(symbol + l.symbol_body, usize::from(length))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The source line of `at` in `ConstMethod` `constant`; `None` if the method has no line
/// table or `at` is not in its bytecodes.
fn line_of(
    reader: &Reader<'_>,
    l: &FrameLayout,
    constant: u64,
    at: At,
) -> Result<Option<u32>, HotspotError> {
    let code = constant + l.const_size;
    let code_size = u64::from(reader.u16(constant + l.const_code_size)?);
    let bci = match at {
        At::Bcp(bcp) => bcp.wrapping_sub(code),
        // The method's entry (`InvocationEntryBci`, -1): its first line, as the VM shows it.
        At::Bci(bci) => u64::try_from(bci).unwrap_or(0),
        At::Unknown => return Ok(None),
    };
    if bci >= code_size || reader.u16(constant + l.const_flags)? & l.has_line_table == 0 {
        return Ok(None);
    }
    let mut table = TableBytes {
        reader,
        next: code + code_size,
        end: code + code_size + MAX_LINE_TABLE_BYTES,
        buffer: Vec::new(),
        at: 0,
    };
    Ok(line_for_bci(&mut table, bci as u32))
}

/// The line table's bytes, read a chunk at a time (it may end near the end of a mapping).
struct TableBytes<'r, 'a> {
    reader: &'r Reader<'a>,
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl Iterator for TableBytes<'_, '_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.at == self.buffer.len() {
            if self.next >= self.end {
                return None;
            }
            self.buffer = self
                .reader
                .vec(self.next, LINE_TABLE_CHUNK)
                .or_else(|_| self.reader.vec(self.next, 1))
                .ok()?;
            self.next += self.buffer.len() as u64;
            self.at = 0;
        }
        self.at += 1;
        Some(self.buffer[self.at - 1])
    }
}

/// The line of `bci` in a compressed line number table; `None` if no entry is at or before it.
pub(crate) fn line_for_bci(table: &mut impl Iterator<Item = u8>, bci: u32) -> Option<u32> {
    let (mut entry_bci, mut entry_line) = (0i64, 0i64);
    let mut best: Option<(i64, i64)> = None;
    let bci = i64::from(bci);
    loop {
        let byte = table.next()?;
        match byte {
            0 => break,
            0xFF => {
                entry_bci += i64::from(signed_unsigned5(table)?);
                entry_line += i64::from(signed_unsigned5(table)?);
            }
            _ => {
                entry_bci += i64::from(byte >> 3);
                entry_line += i64::from(byte & 7);
            }
        }
        if entry_bci == bci {
            return u32::try_from(entry_line).ok();
        }
        if entry_bci < bci && best.is_none_or(|(b, _)| entry_bci >= b) {
            best = Some((entry_bci, entry_line));
        }
    }
    best.and_then(|(_, line)| u32::try_from(line).ok())
}

/// One `UNSIGNED5` number with its sign folded into the low bit (`read_signed_int`).
fn signed_unsigned5(table: &mut impl Iterator<Item = u8>) -> Option<i32> {
    let folded = unsigned5(table)?;
    Some(((folded >> 1) as i32) ^ -((folded & 1) as i32))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{
        super::{frame_layout::tests::jdk17, vmstructs::tests::Image},
        *,
    };

    /// A line table like `javac`'s for a small method (bci -> line: 0 -> 12, 4 -> 13,
    /// 10 -> 15, 16 -> 18, 19 -> 20, 26 -> 21, 36 -> 22, 38 -> 23, 48 -> 24), compressed as
    /// HotSpot does it (the first entry in the long form: its line delta needs 4 bits).
    pub(crate) const TAKE_LINES: &[u8] = &[
        0xFF, 0x00, 0x18, // bci +0, line +12
        0x21, // bci +4, line +1
        0x32, // bci +6, line +2
        0x33, // bci +6, line +3
        0x1a, // bci +3, line +2
        0x39, // bci +7, line +1
        0x51, // bci +10, line +1
        0x11, // bci +2, line +1
        0x51, // bci +10, line +1
        0,
    ];

    /// Check the line of exact and in-between bcis, of a bci before the first entry and of
    /// the long form with a multi-byte number.
    #[test]
    fn line_numbers_from_compressed_table() {
        let line = |table: &[u8], bci| line_for_bci(&mut table.iter().copied(), bci);
        assert_eq!(line(TAKE_LINES, 0), Some(12));
        assert_eq!(line(TAKE_LINES, 19), Some(20));
        assert_eq!(line(TAKE_LINES, 21), Some(20));
        assert_eq!(line(TAKE_LINES, 60), Some(24));
        // bci +1000 (signed: 2000 = 208 + 64 * 28) and line +300 (600 = 216 + 64 * 6).
        let long = [0xFF, 0xD0, 0x1C, 0xD8, 0x06, 0x09, 0];
        assert_eq!(line(&long, 999), None);
        assert_eq!(line(&long, 1000), Some(300));
        assert_eq!(line(&long, 1200), Some(301));
        // A table cut short gives no line rather than a wrong one.
        assert_eq!(line(&[0xFF, 0xD0], 0), None);
    }

    /// Where the test method's pieces are.
    const METHOD: u64 = 0x38_0000;
    const CONST_METHOD: u64 = 0x38_1000;
    const POOL: u64 = 0x38_2000;
    const KLASS: u64 = 0x38_3000;
    const SYMBOLS: u64 = 0x38_4000;

    /// Puts a method of class `class` (slashes, as the VM stores it) named `name` into
    /// `image`, from file `file`, with `code_size` bytes of bytecodes and line table `lines`;
    /// returns the `Method*` and the address of its first bytecode.
    pub(crate) fn put_method(
        image: &mut Image,
        slot: u64,
        class: &str,
        name: &str,
        file: &str,
        native: bool,
        lines: &[u8],
    ) -> (u64, u64) {
        let l = jdk17();
        let at = slot * 0x200;
        let (method, constant, pool, klass) =
            (METHOD + at, CONST_METHOD + at, POOL + at, KLASS + at);
        let mut symbols = SYMBOLS + at;
        let mut symbol = |image: &mut Image, text: &str| {
            let s = symbols;
            image.put(s + l.symbol_length, &(text.len() as u16).to_le_bytes());
            image.put(s + l.symbol_body, text.as_bytes());
            symbols += 0x40;
            s
        };
        image.put_u64(method + l.method_const, constant);
        let flags: u32 = if native { ACC_NATIVE | 1 } else { 1 };
        image.put(method + l.method_access_flags, &flags.to_le_bytes());
        image.put_u64(constant + l.const_constants, pool);
        let code_size: u16 = 64;
        image.put(constant + l.const_code_size, &code_size.to_le_bytes());
        image.put(constant + l.const_name_index, &3u16.to_le_bytes());
        let has_lines = if lines.is_empty() {
            0
        } else {
            l.has_line_table
        };
        image.put(constant + l.const_flags, &has_lines.to_le_bytes());
        image.put(constant + l.const_size + u64::from(code_size), lines);
        image.put_u64(pool + l.cp_holder, klass);
        image.put(pool + l.cp_source_file, &5u16.to_le_bytes());
        let name_symbol = symbol(image, name);
        image.put_u64(pool + l.cp_size + 3 * 8, name_symbol);
        let file_symbol = symbol(image, file);
        image.put_u64(pool + l.cp_size + 5 * 8, file_symbol);
        let class_symbol = symbol(image, class);
        image.put_u64(klass + l.klass_name, class_symbol);
        (method, constant + l.const_size)
    }

    /// Check that a method reads as `jstack` prints it: dotted class, method name, file and
    /// the line of its bcp; a native method has no line; a null `Method*` is an error.
    #[test]
    fn reads_method_name_file_and_line() {
        let mut image = Image::new(0x10_0000, 0x30_0000);
        let (take, code) = put_method(
            &mut image,
            0,
            "MonitorDeadlock",
            "take",
            "MonitorDeadlock.java",
            false,
            TAKE_LINES,
        );
        let (park, _) = put_method(
            &mut image,
            1,
            "jdk/internal/misc/Unsafe",
            "park",
            "Unsafe.java",
            true,
            &[],
        );
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let l = jdk17();
        let method = read(&reader, &l, take, At::Bcp(code + 36)).expect("method");
        assert_eq!(
            method,
            JavaMethod {
                name: "MonitorDeadlock.take".into(),
                file: Some("MonitorDeadlock.java".into()),
                line: Some(22),
                native: false,
            }
        );
        assert_eq!(
            read(&reader, &l, take, At::Unknown).expect("method").line,
            None
        );
        assert_eq!(
            read(&reader, &l, take, At::Bci(19)).expect("method").line,
            Some(20)
        );
        assert_eq!(
            read(&reader, &l, take, At::Bci(-1)).expect("method").line,
            Some(12)
        );
        assert_eq!(
            read(&reader, &l, take, At::Bcp(code + 4096))
                .expect("method")
                .line,
            None
        );
        let native = read(&reader, &l, park, At::Bcp(0)).expect("native");
        assert_eq!(native.name, "jdk.internal.misc.Unsafe.park");
        assert!(native.native && native.line.is_none());
        assert_eq!(
            external_name("MonitorDeadlock$$Lambda$1+0x00007f6618000a08"),
            "MonitorDeadlock$$Lambda$1/0x00007f6618000a08"
        );
        assert!(read(&reader, &l, 0, At::Unknown).is_err());
    }
}
