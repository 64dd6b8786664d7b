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

use super::{PyVersion, reader::read_u64};

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
}
