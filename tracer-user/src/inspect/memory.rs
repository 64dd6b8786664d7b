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

/// An open `/proc/PID/mem` of one process.
#[derive(Debug)]
pub(crate) struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    /// Opens the memory of process `pid` for reading.
    pub(crate) fn open(pid: u32) -> Result<Self, InspectError> {
        let path = format!("/proc/{pid}/mem");
        let file = File::open(&path).map_err(|e| InspectError::io(path, e))?;
        Ok(Self { file })
    }

    /// Fills `buf` from the target's address `addr`. Fails with `EIO` for unmapped memory
    /// and `ESRCH`-like errors once the process has exited.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if addr > i64::MAX as u64 {
            // pread's offset is signed; such addresses are kernel space anyway.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.read_exact_at(buf, addr)
    }

    /// Reads a native-endian `u32` at `addr` (e.g. a futex word).
    pub(crate) fn read_u32(&self, addr: u64) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.read(addr, &mut bytes)?;
        Ok(u32::from_ne_bytes(bytes))
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
        let mut bytes = [0u8; 8];
        mem.read(addr64, &mut bytes).unwrap();
        assert_eq!(u64::from_ne_bytes(bytes), 0x0123_4567_89ab_cdef);
        let heap = Box::new([7u32, 0, 4242, 9]);
        let base = heap.as_ptr() as u64;
        assert_eq!(mem.read_u32(base + 8).unwrap(), 4242);
        // Page 0 is never mapped.
        assert!(mem.read_u32(8).is_err());
    }
}
