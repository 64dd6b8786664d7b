//! Python objects a thread can wait for, read from memory: their type's name and, for the
//! `_thread` module's locks, the fields that say which lock a waiter sleeps on and who holds
//! it.
//!
//! Every object starts with `ob_refcnt` and `ob_type`, and every type object keeps `tp_name`
//! after its own object header and `ob_size`: those offsets have not changed since Python 3.0
//! (default, GIL builds). The lock objects are C structures of `Modules/_threadmodule.c`:
//! - `_thread.RLock`: `rlock_lock` (the `PyThread_type_lock` its waiters sleep on),
//!   `rlock_owner` (the owner's thread ident, 0 when free), `rlock_count`;
//! - `_thread.lock`: `lock_lock` (a `PyThread_type_lock`). A plain lock records no owner.
//!
//! Up to 3.13 a `PyThread_type_lock` is a glibc `sem_t` (POSIX semaphores are used wherever
//! they exist) whose futex word is at its start, so a waiter's futex address is the lock's
//! `PyThread_type_lock` itself. 3.14 rebuilt both locks on `PyMutex` (waiters park on
//! semaphores of their own); their layouts are not read ([`read_lock`] gives nothing there).

use super::PyVersion;
use crate::runtime::{read_u32, read_u64};

/// Where `ob_type` is in every object.
const OB_TYPE: u64 = 8;
/// Where `tp_name` is in every type object.
const TP_NAME: u64 = 24;
/// Longest type name read.
const MAX_TYPE_NAME: usize = 128;
/// Where the lock objects keep their first field (after the object header).
const FIRST_FIELD: u64 = 16;

/// A `_thread` lock object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PyLock {
    /// `_thread.RLock`.
    RLock {
        /// The address its waiters wait on (the `PyThread_type_lock`).
        waited_at: u64,
        /// The owner's thread ident, 0 when nobody holds it.
        owner_ident: u64,
    },
    /// `_thread.lock` (`threading.Lock`).
    Lock {
        /// The address its waiters wait on.
        waited_at: u64,
    },
}

/// The name of `object`'s type (`_thread.RLock`), if readable.
pub(crate) fn type_name(object: u64, read_mem: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<String> {
    let type_object = read_u64(object + OB_TYPE, read_mem).filter(|&t| t != 0)?;
    let name_at = read_u64(type_object + TP_NAME, read_mem).filter(|&n| n != 0)?;
    let mut bytes = [0u8; MAX_TYPE_NAME];
    // The name may sit near the end of a mapping: read less until it fits.
    let read = [MAX_TYPE_NAME, 32]
        .into_iter()
        .find(|&len| read_mem(name_at, &mut bytes[..len]))?;
    let len = bytes[..read].iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&bytes[..len]).ok()?;
    let plausible = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    plausible.then(|| name.to_owned())
}

/// The lock `object` is, if it is one of the `_thread` module's locks and `version` lays it
/// out as this module knows (3.x up to 3.13).
pub(crate) fn read_lock(
    object: u64,
    type_name: &str,
    version: PyVersion,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<PyLock> {
    if version.major != 3 || version.at_least(3, 14) {
        return None;
    }
    match type_name {
        "_thread.RLock" => Some(PyLock::RLock {
            waited_at: read_u64(object + FIRST_FIELD, read_mem).filter(|&a| a != 0)?,
            owner_ident: read_u64(object + FIRST_FIELD + 8, read_mem)?,
        }),
        "_thread.lock" => Some(PyLock::Lock {
            waited_at: read_u64(object + FIRST_FIELD, read_mem).filter(|&a| a != 0)?,
        }),
        _ => None,
    }
}

/// Where `tp_members` (the `PyMemberDef` array: slots and C members) is in every type object.
const TP_MEMBERS: u64 = 240;
/// Size of one `PyMemberDef`: name, type, offset, flags, doc.
const MEMBER_DEF: u64 = 40;
/// Most members looked at in one type.
const MAX_MEMBERS: u64 = 64;
/// Longest string read.
const MAX_STR: u64 = 256;

/// The object in member (a `__slots__` slot or a C member) `name` of `object`.
pub(crate) fn member(
    object: u64,
    name: &str,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<u64> {
    let type_object = read_u64(object + OB_TYPE, read_mem).filter(|&t| t != 0)?;
    let members = read_u64(type_object + TP_MEMBERS, read_mem).filter(|&m| m != 0)?;
    for i in 0..MAX_MEMBERS {
        let def = members + i * MEMBER_DEF;
        let name_at = read_u64(def, read_mem)?;
        if name_at == 0 {
            return None;
        }
        let mut bytes = vec![0u8; name.len() + 1];
        if read_mem(name_at, &mut bytes)
            && bytes[..name.len()] == *name.as_bytes()
            && bytes[name.len()] == 0
        {
            let offset = read_u64(def + 16, read_mem)?;
            return read_u64(object + offset, read_mem).filter(|&o| o != 0);
        }
    }
    None
}

/// The text of a `str` object (compact strings: every `str` made by Python code), or of a
/// small `int` as its decimal digits.
pub(crate) fn read_text(
    object: u64,
    version: PyVersion,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<String> {
    match type_name(object, read_mem)?.as_str() {
        "str" => read_str(object, version, read_mem),
        // One 30-bit digit after the header (`ob_size` before 3.12, `lv_tag` from 3.12).
        "int" => read_u32(object + 24, read_mem).map(|digit| digit.to_string()),
        _ => None,
    }
}

/// A compact `str`: `length` at 16, the `state` bit field at 32 (`kind` in bits 2-4,
/// `compact` bit 5, `ascii` bit 6), the characters right after the header, whose size lost
/// the `wstr` fields in 3.12.
fn read_str(
    object: u64,
    version: PyVersion,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<String> {
    let length = read_u64(object + 16, read_mem)?;
    let state = read_u32(object + 32, read_mem)?;
    let (kind, compact, ascii) = (
        (state >> 2) & 7,
        state & (1 << 5) != 0,
        state & (1 << 6) != 0,
    );
    if !compact || length > MAX_STR {
        return None;
    }
    let old = !version.at_least(3, 12);
    let header = match (ascii, old) {
        (true, true) => 48,
        (true, false) => 40,
        (false, true) => 72,
        (false, false) => 56,
    };
    let width = u64::from(kind);
    if !(1..=4).contains(&width) || width == 3 {
        return None;
    }
    let mut bytes = vec![0u8; (length * width) as usize];
    if !read_mem(object + header, &mut bytes) {
        return None;
    }
    let chars = bytes.chunks(width as usize).map(|c| {
        let mut code = [0u8; 4];
        code[..c.len()].copy_from_slice(c);
        char::from_u32(u32::from_le_bytes(code))
    });
    chars.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cpython::tests_memory::Memory;

    fn version(minor: u64) -> PyVersion {
        PyVersion {
            major: 3,
            minor,
            patch: 0,
        }
    }

    /// An RLock at 0x1000 (type at 0x2000 named `_thread.RLock`) held by ident 0x7f00, and a
    /// Lock at 0x3000 (type at 0x4000).
    fn memory() -> Memory {
        let mut memory = Memory::default();
        for (object, type_object, name_at, name) in [
            (0x1000u64, 0x2000u64, 0x2800u64, &b"_thread.RLock\0"[..]),
            (0x3000, 0x4000, 0x4800, b"_thread.lock\0"),
        ] {
            memory.u64(object + OB_TYPE, type_object);
            memory.u64(type_object + TP_NAME, name_at);
            memory.bytes(name_at, name);
            memory.bytes(name_at + name.len() as u64, &[0u8; MAX_TYPE_NAME]);
        }
        memory.u64(0x1000 + 16, 0x9990);
        memory.u64(0x1000 + 24, 0x7f00);
        memory.u64(0x3000 + 16, 0x8880);
        memory
    }

    /// Check that type names and lock fields are read as each version lays them out.
    #[test]
    fn locks_by_version() {
        let memory = memory();
        let read = memory.reader();
        assert_eq!(type_name(0x1000, &read).as_deref(), Some("_thread.RLock"));
        assert_eq!(type_name(0x3000, &read).as_deref(), Some("_thread.lock"));
        assert_eq!(type_name(0x5000, &read), None);
        assert_eq!(
            read_lock(0x1000, "_thread.RLock", version(11), &read),
            Some(PyLock::RLock {
                waited_at: 0x9990,
                owner_ident: 0x7f00
            })
        );
        assert_eq!(
            read_lock(0x3000, "_thread.lock", version(12), &read),
            Some(PyLock::Lock { waited_at: 0x8880 })
        );
        assert_eq!(
            read_lock(0x3000, "_thread.lock", version(13), &read),
            Some(PyLock::Lock { waited_at: 0x8880 })
        );
        assert_eq!(read_lock(0x3000, "_thread.lock", version(14), &read), None);
        assert_eq!(read_lock(0x3000, "dict", version(12), &read), None);
    }

    /// Check that slots are found by name through the type's member table, and strings and
    /// small ints are read as each version lays them out.
    #[test]
    fn members_and_text() {
        let mut memory = Memory::default();
        // Type 0x2000 with members at 0x2400: `_loop` at 24, `_callback` at 16.
        memory.u64(0x2000 + TP_MEMBERS, 0x2400);
        for (i, (name_at, name, offset)) in [
            (0x2600u64, &b"_loop\0"[..], 24u64),
            (0x2700, b"_callback\0", 16),
        ]
        .into_iter()
        .enumerate()
        {
            let def = 0x2400 + i as u64 * MEMBER_DEF;
            memory.u64(def, name_at);
            memory.u64(def + 16, offset);
            memory.bytes(name_at, name);
        }
        memory.u64(0x2400 + 2 * MEMBER_DEF, 0);
        memory.u64(0x1000 + OB_TYPE, 0x2000);
        memory.u64(0x1000 + 16, 0x5000);
        assert_eq!(member(0x1000, "_callback", &memory.reader()), Some(0x5000));
        assert_eq!(member(0x1000, "_args", &memory.reader()), None);
        // "job-7", an ASCII str, on 3.11 (data at 48) and 3.12 (data at 40); the int 42.
        memory.u64(0x8000 + TP_NAME, 0x8100);
        memory.bytes(0x8100, b"str\0");
        memory.bytes(0x8104, &[0u8; MAX_TYPE_NAME]);
        for (object, minor, data) in [(0x6000u64, 11, 48u64), (0x7000, 12, 40)] {
            memory.u64(object + OB_TYPE, 0x8000);
            memory.u64(object + 16, 5);
            memory.u32(object + 32, (1 << 2) | (1 << 5) | (1 << 6));
            memory.bytes(object + data, b"job-7");
            let text = read_text(object, version(minor), &memory.reader());
            assert_eq!(text.as_deref(), Some("job-7"), "3.{minor}");
        }
        memory.u64(0x9000 + OB_TYPE, 0x9100);
        memory.u64(0x9100 + TP_NAME, 0x9200);
        memory.bytes(0x9200, b"int\0");
        memory.bytes(0x9204, &[0u8; MAX_TYPE_NAME]);
        memory.u32(0x9000 + 24, 42);
        assert_eq!(
            read_text(0x9000, version(12), &memory.reader()).as_deref(),
            Some("42")
        );
    }
}
