//! Reading another process's memory through `/proc/PID/mem`.
//!
//! A thread blocked in `futex()` only tells us the futex address (its first syscall
//! argument). To say who holds the lock, `watch` reads the word at that address and, for a
//! glibc `pthread_mutex_t`, the owner's TID stored next to it. `pread` on `/proc/PID/mem`
//! does that without stopping the target (unlike `PTRACE_PEEKDATA`). Opening the file needs
//! ptrace access to the target: the same user and a permissive `kernel.yama.ptrace_scope`,
//! or `CAP_SYS_PTRACE`.

use std::{fs::File, io, os::unix::fs::FileExt};

use super::InspectError;

/// Byte offset of `__owner` (the owning thread's TID) in glibc's `pthread_mutex_t`, on
/// x86_64 and aarch64 alike (`int __lock; unsigned __count; int __owner; ...`).
pub const GLIBC_MUTEX_OWNER_OFFSET: u64 = 8;

/// An open `/proc/PID/mem` of one process.
#[derive(Debug)]
pub struct ProcessMemory {
    pid: u32,
    file: File,
}

impl ProcessMemory {
    /// Opens the memory of process `pid` for reading.
    pub fn open(pid: u32) -> Result<Self, InspectError> {
        let path = format!("/proc/{pid}/mem");
        let file = File::open(&path).map_err(|e| InspectError::io(path, e))?;
        Ok(Self { pid, file })
    }

    /// The process whose memory this is.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fills `buf` from the target's address `addr`. Fails with `EIO` for unmapped memory
    /// and `ESRCH`-like errors once the process has exited.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if addr > i64::MAX as u64 {
            // pread's offset is signed; such addresses are kernel space anyway.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.read_exact_at(buf, addr)
    }

    /// Reads a native-endian `u32` at `addr` (e.g. a futex word).
    pub fn read_u32(&self, addr: u64) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.read(addr, &mut bytes)?;
        Ok(u32::from_ne_bytes(bytes))
    }

    /// Reads a native-endian `u64` at `addr`.
    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut bytes = [0; 8];
        self.read(addr, &mut bytes)?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Reads the owner TID of the glibc `pthread_mutex_t` at `mutex_addr` (0 when unlocked;
    /// only meaningful if the address really is a glibc mutex).
    pub fn read_glibc_mutex_owner(&self, mutex_addr: u64) -> io::Result<u32> {
        self.read_u32(mutex_addr.saturating_add(GLIBC_MUTEX_OWNER_OFFSET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static KNOWN_U32: u32 = 0xdead_beef;
    static KNOWN_U64: u64 = 0x0123_4567_89ab_cdef;

    #[test]
    fn reads_own_memory() {
        let mem = ProcessMemory::open(std::process::id()).expect("open own /proc/PID/mem");
        let addr32 = std::ptr::addr_of!(KNOWN_U32) as u64;
        let addr64 = std::ptr::addr_of!(KNOWN_U64) as u64;
        assert_eq!(mem.read_u32(addr32).unwrap(), 0xdead_beef);
        assert_eq!(mem.read_u64(addr64).unwrap(), 0x0123_4567_89ab_cdef);
        let heap = Box::new([7u32, 0, 4242, 9]);
        let base = heap.as_ptr() as u64;
        assert_eq!(mem.read_glibc_mutex_owner(base).unwrap(), 4242);
        // Page 0 is never mapped.
        assert!(mem.read_u32(8).is_err());
    }
}
