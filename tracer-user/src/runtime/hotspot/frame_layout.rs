//! The layout the Java stack walk reads: the thread's frame anchor, the interpreter's frame
//! slots, the code cache and the method metadata, taken from the tables once per process.
//!
//! Kept apart from [`Layout`](super::layout::Layout): a VM whose tables lack one of these
//! still has its locks read, only without Java frames.
//!
//! Two kinds of number are not in the tables and are fixed here, each for a stated reason:
//! - The interpreter's frame slots. JDK 17 exports only `frame::interpreter_frame_sender_sp_offset`
//!   and `frame::interpreter_frame_last_sp_offset`; the slots below them are declared in
//!   `frame_x86.hpp` (the same order on aarch64) as consecutive words: last sp, method, mirror,
//!   mdp, cache, locals, bcp. The serviceability agent derives them the same way
//!   (`X86Frame`). A later VM exporting `frame::interpreter_frame_method_offset` or
//!   `frame::interpreter_frame_bcp_offset` is read by those names instead.
//! - The calling convention of a frame with a frame pointer: the saved frame pointer at fp,
//!   the return address one word above, the caller's sp two words above (x86-64 `call` then
//!   `push rbp`; aarch64 `stp fp, lr`). HotSpot's `frame::link_offset`, `return_addr_offset`
//!   and `sender_sp_offset`, not exported.

use super::{HotspotError, vmstructs::VmStructs};

/// Offsets (bytes), frame slots (words from fp) and static addresses of the stack walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FrameLayout {
    /// `JavaThread::_anchor` (a `JavaFrameAnchor`).
    pub thread_anchor: u64,
    /// `JavaFrameAnchor::_last_Java_sp`.
    pub anchor_sp: u64,
    /// `JavaFrameAnchor::_last_Java_fp`.
    pub anchor_fp: u64,
    /// `JavaFrameAnchor::_last_Java_pc`.
    pub anchor_pc: u64,
    /// `JavaCallWrapper::_anchor`: the anchor saved when Java was called from the VM.
    pub call_wrapper_anchor: u64,
    /// `frame::interpreter_frame_sender_sp_offset`, words from fp.
    pub interp_sender_sp_slot: i64,
    /// `frame::interpreter_frame_method_offset`, words from fp.
    pub interp_method_slot: i64,
    /// `frame::interpreter_frame_bcp_offset`, words from fp.
    pub interp_bcp_slot: i64,
    /// `frame::entry_frame_call_wrapper_offset`, words from fp.
    pub entry_call_wrapper_slot: i64,
    /// Address of `StubRoutines::_call_stub_return_address`: Java code returns there to the VM.
    pub call_stub_return_address: u64,
    /// Address of `CodeCache::_heaps` (a `GrowableArray<CodeHeap*>*`).
    pub code_heaps: u64,
    /// `GrowableArrayBase::_len` (int).
    pub growable_len: u64,
    /// `GrowableArray<T>::_data` (`T*`).
    pub growable_data: u64,
    /// `CodeHeap::_memory` (a `VirtualSpace`).
    pub heap_memory: u64,
    /// `CodeHeap::_segmap` (a `VirtualSpace`: one byte per segment).
    pub heap_segmap: u64,
    /// `CodeHeap::_log2_segment_size` (int).
    pub heap_log2_segment_size: u64,
    /// `VirtualSpace::_low`.
    pub space_low: u64,
    /// `VirtualSpace::_high`.
    pub space_high: u64,
    /// `sizeof(HeapBlock)`: a code blob follows its block header.
    pub heap_block_size: u64,
    /// `HeapBlock::Header::_used` (bool).
    pub heap_block_used: u64,
    /// `CodeBlob::_name` (`const char*`: `nmethod`, `Interpreter`, a stub's name).
    pub blob_name: u64,
    /// `CodeBlob::_frame_size` (int, words).
    pub blob_frame_size: u64,
    /// `CodeBlob::_code_begin`.
    pub blob_code_begin: u64,
    /// `CodeBlob::_code_end`.
    pub blob_code_end: u64,
    /// `CompiledMethod::_method` (`Method*`).
    pub compiled_method: u64,
    /// `CompiledMethod::_scopes_data_begin` (the scopes' stream).
    pub compiled_scopes_data: u64,
    /// `nmethod::_scopes_pcs_offset` (int, from the nmethod): its `PcDesc`s.
    pub nm_scopes_pcs_offset: u64,
    /// `nmethod::_dependencies_offset` (int): where the `PcDesc`s end.
    pub nm_dependencies_offset: u64,
    /// `nmethod::_metadata_offset` (int): its `Metadata*`s (the scopes' methods).
    pub nm_metadata_offset: u64,
    /// `PcDesc::_pc_offset` (int, from the code's start).
    pub pc_desc_pc_offset: u64,
    /// `PcDesc::_scope_decode_offset` (int, into the scopes' stream).
    pub pc_desc_scope_offset: u64,
    /// `sizeof(PcDesc)`.
    pub pc_desc_size: u64,
    /// `Method::_constMethod`.
    pub method_const: u64,
    /// `Method::_access_flags` (u32).
    pub method_access_flags: u64,
    /// `ConstMethod::_constants` (`ConstantPool*`).
    pub const_constants: u64,
    /// `ConstMethod::_flags` (u16).
    pub const_flags: u64,
    /// `ConstMethod::_code_size` (u16).
    pub const_code_size: u64,
    /// `ConstMethod::_name_index` (u16).
    pub const_name_index: u64,
    /// `sizeof(ConstMethod)`: the bytecodes follow it, then the line number table.
    pub const_size: u64,
    /// `ConstMethod::_has_linenumber_table`, a bit of `_flags`.
    pub has_line_table: u16,
    /// `ConstantPool::_pool_holder` (the `InstanceKlass*`).
    pub cp_holder: u64,
    /// `ConstantPool::_source_file_name_index` (u16).
    pub cp_source_file: u64,
    /// `sizeof(ConstantPool)`: its slots (`Symbol*`s for names) follow it.
    pub cp_size: u64,
    /// `Klass::_name` (`Symbol*`).
    pub klass_name: u64,
    /// `Symbol::_length` (u16).
    pub symbol_length: u64,
    /// `Symbol::_body`.
    pub symbol_body: u64,
}

/// Saved frame pointer, words from fp (HotSpot's `frame::link_offset`).
pub(crate) const LINK_SLOT: u64 = 0;
/// Return address, words from fp (`frame::return_addr_offset`).
pub(crate) const RETURN_SLOT: u64 = 1;
/// The caller's sp, words from fp; also where a compiled frame's saved fp and return address
/// sit below its caller's sp (`frame::sender_sp_offset`).
pub(crate) const SENDER_SP_SLOT: u64 = 2;
/// `JVM_ACC_NATIVE`: fixed by the class file format (JVMS 4.6).
pub(crate) const ACC_NATIVE: u32 = 0x0100;

impl FrameLayout {
    /// Takes the stack walk's layout out of the tables.
    pub(crate) fn new(t: &VmStructs) -> Result<Self, HotspotError> {
        let slot = |name: &str| t.constant(name);
        let last_sp = slot("frame::interpreter_frame_last_sp_offset")?;
        Ok(Self {
            thread_anchor: t.offset("JavaThread", "_anchor")?,
            anchor_sp: t.offset("JavaFrameAnchor", "_last_Java_sp")?,
            anchor_fp: t.offset("JavaFrameAnchor", "_last_Java_fp")?,
            anchor_pc: t.offset("JavaFrameAnchor", "_last_Java_pc")?,
            call_wrapper_anchor: t.offset("JavaCallWrapper", "_anchor")?,
            interp_sender_sp_slot: slot("frame::interpreter_frame_sender_sp_offset")?,
            // last sp, method, mirror, mdp, cache, locals, bcp: consecutive (module docs).
            interp_method_slot: slot("frame::interpreter_frame_method_offset")
                .unwrap_or(last_sp - 1),
            interp_bcp_slot: slot("frame::interpreter_frame_bcp_offset").unwrap_or(last_sp - 6),
            entry_call_wrapper_slot: slot("frame::entry_frame_call_wrapper_offset")?,
            call_stub_return_address: t.address("StubRoutines", "_call_stub_return_address")?,
            code_heaps: t.address("CodeCache", "_heaps")?,
            growable_len: t.offset("GrowableArrayBase", "_len")?,
            growable_data: t.offset("GrowableArray<int>", "_data")?,
            heap_memory: t.offset("CodeHeap", "_memory")?,
            heap_segmap: t.offset("CodeHeap", "_segmap")?,
            heap_log2_segment_size: t.offset("CodeHeap", "_log2_segment_size")?,
            space_low: t.offset("VirtualSpace", "_low")?,
            space_high: t.offset("VirtualSpace", "_high")?,
            heap_block_size: t.size("HeapBlock")?,
            heap_block_used: t.offset("HeapBlock::Header", "_used")?
                + t.offset("HeapBlock", "_header")?,
            blob_name: t.offset("CodeBlob", "_name")?,
            blob_frame_size: t.offset("CodeBlob", "_frame_size")?,
            blob_code_begin: t.offset("CodeBlob", "_code_begin")?,
            blob_code_end: t.offset("CodeBlob", "_code_end")?,
            compiled_method: t.offset("CompiledMethod", "_method")?,
            compiled_scopes_data: t.offset("CompiledMethod", "_scopes_data_begin")?,
            nm_scopes_pcs_offset: t.offset("nmethod", "_scopes_pcs_offset")?,
            nm_dependencies_offset: t.offset("nmethod", "_dependencies_offset")?,
            nm_metadata_offset: t.offset("nmethod", "_metadata_offset")?,
            pc_desc_pc_offset: t.offset("PcDesc", "_pc_offset")?,
            pc_desc_scope_offset: t.offset("PcDesc", "_scope_decode_offset")?,
            pc_desc_size: t.size("PcDesc")?,
            method_const: t.offset("Method", "_constMethod")?,
            method_access_flags: t.offset("Method", "_access_flags")?,
            const_constants: t.offset("ConstMethod", "_constants")?,
            const_flags: t.offset("ConstMethod", "_flags")?,
            const_code_size: t.offset("ConstMethod", "_code_size")?,
            const_name_index: t.offset("ConstMethod", "_name_index")?,
            const_size: t.size("ConstMethod")?,
            has_line_table: slot("ConstMethod::_has_linenumber_table")? as u16,
            cp_holder: t.offset("ConstantPool", "_pool_holder")?,
            cp_source_file: t.offset("ConstantPool", "_source_file_name_index")?,
            cp_size: t.size("ConstantPool")?,
            klass_name: t.offset("Klass", "_name")?,
            symbol_length: t.offset("Symbol", "_length")?,
            symbol_body: t.offset("Symbol", "_body")?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{
        super::vmstructs::{FieldAt, Reader, tests::jdk17_like},
        *,
    };

    /// The offsets a live OpenJDK 17.0.15 (Debian, x86-64) exports, as recorded from its
    /// tables; statics at made-up addresses.
    pub(crate) fn jdk17() -> FrameLayout {
        FrameLayout {
            thread_anchor: 0x290,
            anchor_sp: 0,
            anchor_fp: 0x10,
            anchor_pc: 8,
            call_wrapper_anchor: 0x20,
            interp_sender_sp_slot: -1,
            interp_method_slot: -3,
            interp_bcp_slot: -8,
            entry_call_wrapper_slot: -6,
            call_stub_return_address: 0x10_0000,
            code_heaps: 0x10_0008,
            growable_len: 0,
            growable_data: 8,
            heap_memory: 8,
            heap_segmap: 0x78,
            heap_log2_segment_size: 0x100,
            space_low: 0x10,
            space_high: 0x18,
            heap_block_size: 16,
            heap_block_used: 8,
            blob_name: 0x60,
            blob_frame_size: 0x1c,
            blob_code_begin: 0x20,
            blob_code_end: 0x28,
            compiled_method: 0x70,
            compiled_scopes_data: 0x78,
            nm_scopes_pcs_offset: 0x10c,
            nm_dependencies_offset: 0x110,
            nm_metadata_offset: 0x104,
            pc_desc_pc_offset: 0,
            pc_desc_scope_offset: 4,
            pc_desc_size: 16,
            method_const: 8,
            method_access_flags: 0x28,
            const_constants: 8,
            const_flags: 0x1c,
            const_code_size: 0x20,
            const_name_index: 0x22,
            const_size: 48,
            has_line_table: 1,
            cp_holder: 0x18,
            cp_source_file: 0x36,
            cp_size: 72,
            klass_name: 0x18,
            symbol_length: 4,
            symbol_body: 6,
        }
    }

    /// JDK 17's tables as recorded (only what the walk reads).
    fn jdk17_tables() -> Vec<(&'static str, &'static str, FieldAt)> {
        use FieldAt::{Offset, Static};
        vec![
            ("JavaThread", "_anchor", Offset(0x290)),
            ("JavaFrameAnchor", "_last_Java_sp", Offset(0)),
            ("JavaFrameAnchor", "_last_Java_pc", Offset(8)),
            ("JavaFrameAnchor", "_last_Java_fp", Offset(0x10)),
            ("JavaCallWrapper", "_anchor", Offset(0x20)),
            (
                "StubRoutines",
                "_call_stub_return_address",
                Static(0x10_0000),
            ),
            ("CodeCache", "_heaps", Static(0x10_0008)),
            ("GrowableArrayBase", "_len", Offset(0)),
            ("GrowableArray<int>", "_data", Offset(8)),
            ("CodeHeap", "_memory", Offset(8)),
            ("CodeHeap", "_segmap", Offset(0x78)),
            ("CodeHeap", "_log2_segment_size", Offset(0x100)),
            ("VirtualSpace", "_low", Offset(0x10)),
            ("VirtualSpace", "_high", Offset(0x18)),
            ("HeapBlock", "_header", Offset(0)),
            ("HeapBlock::Header", "_used", Offset(8)),
            ("CodeBlob", "_name", Offset(0x60)),
            ("CodeBlob", "_frame_size", Offset(0x1c)),
            ("CodeBlob", "_code_begin", Offset(0x20)),
            ("CodeBlob", "_code_end", Offset(0x28)),
            ("CompiledMethod", "_method", Offset(0x70)),
            ("CompiledMethod", "_scopes_data_begin", Offset(0x78)),
            ("nmethod", "_scopes_pcs_offset", Offset(0x10c)),
            ("nmethod", "_dependencies_offset", Offset(0x110)),
            ("nmethod", "_metadata_offset", Offset(0x104)),
            ("PcDesc", "_pc_offset", Offset(0)),
            ("PcDesc", "_scope_decode_offset", Offset(4)),
            ("Method", "_constMethod", Offset(8)),
            ("Method", "_access_flags", Offset(0x28)),
            ("ConstMethod", "_constants", Offset(8)),
            ("ConstMethod", "_flags", Offset(0x1c)),
            ("ConstMethod", "_code_size", Offset(0x20)),
            ("ConstMethod", "_name_index", Offset(0x22)),
            ("ConstantPool", "_pool_holder", Offset(0x18)),
            ("ConstantPool", "_source_file_name_index", Offset(0x36)),
            ("Klass", "_name", Offset(0x18)),
            ("Symbol", "_length", Offset(4)),
            ("Symbol", "_body", Offset(6)),
        ]
    }

    /// Check that JDK 17's tables, which export only the interpreter's sender sp and last sp
    /// slots, give the method and bcp slots of `frame_x86.hpp` (-3 and -8).
    #[test]
    fn jdk17_tables_give_the_interpreter_slots() {
        let fields = jdk17_tables();
        let (image, symbols) = jdk17_like(
            &fields,
            &[
                ("HeapBlock", 16),
                ("ConstMethod", 48),
                ("ConstantPool", 72),
                ("PcDesc", 16),
            ],
            &[
                ("frame::interpreter_frame_sender_sp_offset", -1),
                ("frame::interpreter_frame_last_sp_offset", -2),
                ("frame::entry_frame_call_wrapper_offset", -6),
                ("ConstMethod::_has_linenumber_table", 1),
            ],
        );
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let tables = super::super::vmstructs::read(&reader, &symbols).expect("tables");
        assert_eq!(FrameLayout::new(&tables).expect("layout"), jdk17());
    }

    /// Check that a missing constant makes the layout fail rather than guess.
    #[test]
    fn missing_constant_fails() {
        let (image, symbols) = jdk17_like(
            &jdk17_tables(),
            &[
                ("HeapBlock", 16),
                ("ConstMethod", 48),
                ("ConstantPool", 72),
                ("PcDesc", 16),
            ],
            &[("frame::interpreter_frame_sender_sp_offset", -1)],
        );
        let read_mem = |addr: u64, buf: &mut [u8]| image.read(addr, buf);
        let reader = Reader {
            read_mem: &read_mem,
        };
        let tables = super::super::vmstructs::read(&reader, &symbols).expect("tables");
        assert!(FrameLayout::new(&tables).is_err());
    }
}
