//! Lines of `/proc/PID/maps`, parsed once for everything that needs them: the symbolizer
//! (which files back which code) and the unwinder (code ranges, the stack's range).

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Mapping {
    /// First address.
    pub(crate) start: u64,
    /// One past the last address.
    pub(crate) end: u64,
    /// Mapped with execute permission.
    pub(crate) executable: bool,
    /// File offset of `start`.
    pub(crate) offset: u64,
    /// Device (major, minor) of the mapped file; (0, 0) for anonymous memory.
    pub(crate) dev: (u32, u32),
    /// Inode of the mapped file; 0 for anonymous memory and pseudo files like `[vdso]`.
    pub(crate) inode: u64,
    /// Path, `[vdso]`-style pseudo name, or empty; deleted files end in ` (deleted)`.
    pub(crate) path: String,
}

impl Mapping {
    /// Parses `start-end perms offset dev inode [path]`; `None` for malformed lines.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut rest = line;
        let range = next_field(&mut rest)?;
        let perms = next_field(&mut rest)?;
        let offset = next_field(&mut rest)?;
        let dev = next_field(&mut rest)?;
        let inode = next_field(&mut rest)?;
        let (start, end) = range.split_once('-')?;
        let (major, minor) = dev.split_once(':')?;
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            executable: perms.as_bytes().get(2) == Some(&b'x'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            dev: (
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode: inode.parse().ok()?,
            path: rest.trim().to_string(),
        })
        .filter(|m| m.start < m.end)
    }

    /// Whether `addr` lies inside this mapping.
    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether this is the kernel's vDSO, which has no file behind it.
    pub(crate) fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }

    /// Whether this mapping is backed by a regular file (deleted or not).
    pub(crate) fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Splits off the next whitespace-separated field of `rest`.
fn next_field<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let trimmed = rest.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (field, tail) = trimmed.split_at(end);
    *rest = tail;
    (!field.is_empty()).then_some(field)
}
