//! ELF unwind tables, parsed once per file and shared by every process that maps the file.
//!
//! framehop needs a module's CFI sections with their stated addresses (SVMAs) plus the
//! module's load bias (AVMA - SVMA). Only the CFI sections are copied out of the file:
//! `.eh_frame` + `.eh_frame_hdr` (or `.debug_frame` when there is no `.eh_frame`), and the
//! addresses of `.text` and `.got` (for `DW_EH_PE_textrel` / `datarel` pointers). framehop
//! reads `.text` bytes only for Mach-O and PE instruction analysis, so they are not loaded.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use framehop::{ExplicitModuleSectionInfo, Module};
use object::elf::PF_X;
use object::{
    Architecture, CompressionFormat, Object, ObjectSection, ObjectSegment, ReadRef, SegmentFlags,
};

use super::UnwindError;
use crate::procs::{
    Procs,
    files::FileStamp,
    maps::{FileKey, Mapping},
};

/// Section bytes handed to framehop, shared across processes.
pub(super) type Data = Arc<[u8]>;

/// A PT_LOAD segment: where file bytes land relative to the stated addresses.
#[derive(Clone, Copy, Debug)]
struct LoadSegment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    executable: bool,
}

/// The unwind-relevant parts of one ELF file.
#[derive(Debug)]
pub(super) struct ElfUnwindInfo {
    stamp: Option<FileStamp>,
    loads: Vec<LoadSegment>,
    sections: ExplicitModuleSectionInfo<Data>,
}

impl ElfUnwindInfo {
    /// Parses an x86_64 ELF image from `data` (a file through a read cache, or bytes).
    fn parse<'a, R: ReadRef<'a>>(data: R, name: &str) -> Result<Self, UnwindError> {
        let elf_error = |source| UnwindError::Elf {
            module: name.into(),
            source,
        };
        let file = object::File::parse(data).map_err(elf_error)?;
        if file.architecture() != Architecture::X86_64 {
            return Err(UnwindError::UnsupportedModule {
                module: name.into(),
                reason: "not an x86_64 ELF file",
            });
        }
        let loads = file
            .segments()
            .map(|s| LoadSegment {
                vaddr: s.address(),
                offset: s.file_range().0,
                filesz: s.file_range().1,
                executable: matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0),
            })
            .collect();
        Ok(Self {
            stamp: None,
            loads,
            sections: unwind_sections(&file),
        })
    }

    /// Whether there is any CFI at all; without it only frame-pointer fallbacks apply.
    pub(super) fn has_cfi(&self) -> bool {
        self.sections.eh_frame.is_some() || self.sections.debug_frame.is_some()
    }

    /// Load bias (AVMA - SVMA) given that file offset `offset` is mapped at `start`: the
    /// PT_LOAD segment covering that offset maps offset `o` to `o - p_offset + p_vaddr + bias`.
    /// Linkers like lld pack segments without page-aligning their file offsets, so one file
    /// page can belong to two segments mapped at different addresses: the segment with the
    /// mapping's executability wins, then the later one (its mapping starts at that page).
    fn bias(&self, start: u64, offset: u64, executable: bool) -> Option<u64> {
        let seg = self
            .loads
            .iter()
            .filter(|s| s.offset & !0xfff <= offset && offset < s.offset.saturating_add(s.filesz))
            .max_by_key(|s| (s.executable == executable, s.offset))?;
        Some(
            start
                .wrapping_sub(offset)
                .wrapping_add(seg.offset)
                .wrapping_sub(seg.vaddr),
        )
    }

    /// A framehop module for the executable mapping `mapping` of this file.
    pub(super) fn module(&self, mapping: &Mapping) -> Option<Module<Data>> {
        let bias = self.bias(mapping.start, mapping.offset, mapping.executable)?;
        Some(Module::new(
            mapping.path.clone(),
            mapping.start..mapping.end,
            bias,
            self.sections.clone(),
        ))
    }
}

/// Copies the CFI sections out of `file` and notes the addresses framehop resolves against.
fn unwind_sections<'a, R: ReadRef<'a>>(
    file: &object::File<'a, R>,
) -> ExplicitModuleSectionInfo<Data> {
    let eh_frame = section_data(file, ".eh_frame");
    let debug_frame = match eh_frame {
        Some(_) => None,
        None => section_data(file, ".debug_frame"),
    };
    ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: section_range(file, ".text"),
        got_svma: section_range(file, ".got"),
        eh_frame_svma: section_range(file, ".eh_frame"),
        eh_frame,
        eh_frame_hdr_svma: section_range(file, ".eh_frame_hdr"),
        eh_frame_hdr: section_data(file, ".eh_frame_hdr"),
        debug_frame,
        ..Default::default()
    }
}

/// Stated address range of a section.
fn section_range<'a, R: ReadRef<'a>>(file: &object::File<'a, R>, name: &str) -> Option<Range<u64>> {
    let s = file.section_by_name(name)?;
    Some(s.address()..s.address().checked_add(s.size())?)
}

/// Bytes of an uncompressed, non-empty section (compressed `.debug_frame` is skipped).
fn section_data<'a, R: ReadRef<'a>>(file: &object::File<'a, R>, name: &str) -> Option<Data> {
    let s = file.section_by_name(name)?;
    let compression = s.compressed_file_range().ok()?.format;
    if compression != CompressionFormat::None {
        return None;
    }
    let data = s.data().ok()?;
    (!data.is_empty()).then(|| Arc::from(data))
}

/// Parsed ELF files keyed by (dev, inode), shared by all processes.
#[derive(Debug, Default)]
pub(super) struct ElfCache {
    files: HashMap<FileKey, Arc<ElfUnwindInfo>>,
}

impl ElfCache {
    /// The unwind info of the file behind `mapping`, opened by the registry, parsed if not
    /// cached (or if the file changed since it was).
    pub(super) fn get(
        &mut self,
        procs: &Procs,
        mapping: &Mapping,
    ) -> Result<Arc<ElfUnwindInfo>, UnwindError> {
        let key = mapping.file_key();
        let io_error = |source| UnwindError::ModuleIo {
            module: mapping.path.clone(),
            source,
        };
        let file = procs
            .file(&key)
            .ok_or_else(|| io_error(std::io::ErrorKind::NotFound.into()))?;
        let stamp = file.stamp().map_err(io_error)?;
        if let Some(info) = self.files.get(&key).filter(|i| i.stamp == Some(stamp)) {
            return Ok(Arc::clone(info));
        }
        let cache = object::ReadCache::new(&file.file);
        let mut info = ElfUnwindInfo::parse(&cache, &mapping.path)?;
        info.stamp = Some(stamp);
        let info = Arc::new(info);
        self.files.insert(key, Arc::clone(&info));
        Ok(info)
    }

    /// Drops files that no process uses any more.
    pub(super) fn prune(&mut self) {
        self.files.retain(|_, info| Arc::strong_count(info) > 1);
    }
}

/// Parses the vDSO image out of the process's memory (`bytes` is the whole `[vdso]` mapping).
pub(super) fn parse_vdso(bytes: &[u8]) -> Result<ElfUnwindInfo, UnwindError> {
    ElfUnwindInfo::parse(bytes, "[vdso]")
}
