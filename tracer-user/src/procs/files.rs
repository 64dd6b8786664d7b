//! Open handles to the files a process maps, taken while it lives.
//!
//! A process's mapped files outlive their paths: a library upgraded in place, a container's
//! files seen from the host, a process that exited before its stacks were symbolized. The
//! handle is opened through `/proc/PID/map_files/START-END` (deleted files, other mount
//! namespaces; needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), else by path inside the
//! process's root, else by path; a file reached by path must be the mapped inode.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
};

use super::maps::{FileKey, Mapping};

/// Size and mtime, to notice a file rewritten in place (same inode, new contents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    size: u64,
    mtime: (i64, i64),
}

/// An open mapped file.
#[derive(Debug)]
pub(crate) struct MappedFile {
    /// The open file.
    pub file: File,
}

impl MappedFile {
    /// Opens the file behind `mapping` of process `pid` (see the module docs).
    pub(crate) fn open(pid: u32, mapping: &Mapping) -> io::Result<Self> {
        let map_file = format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        );
        let key = mapping.file_key();
        if let Ok(file) = open_checked(PathBuf::from(map_file), key, false) {
            return Ok(Self { file });
        }
        if mapping.is_deleted() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let in_root = PathBuf::from(format!("/proc/{pid}/root{}", mapping.path));
        let file = open_checked(in_root, key, true)
            .or_else(|_| open_checked(PathBuf::from(&mapping.path), key, true))?;
        Ok(Self { file })
    }

    /// A handle made by a test from any open file.
    #[cfg(test)]
    pub(crate) fn from_file(file: File) -> Self {
        Self { file }
    }

    /// Size and mtime now.
    pub(crate) fn stamp(&self) -> io::Result<FileStamp> {
        let meta = self.file.metadata()?;
        Ok(FileStamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }

    /// A path naming this open file for as long as the handle lives (`/proc/self/fd/N`).
    pub(crate) fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Opens `path`; with `check_inode`, refuses a file other than the mapped one.
fn open_checked(path: PathBuf, key: FileKey, check_inode: bool) -> io::Result<File> {
    let file = File::open(path)?;
    if check_inode {
        let meta = file.metadata()?;
        let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
        if dev != key.dev || meta.ino() != key.inode {
            return Err(io::Error::other(
                "file at the mapped path is not the mapped file",
            ));
        }
    }
    Ok(file)
}
