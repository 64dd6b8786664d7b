//! The VM structure layout this runtime reads, taken from the tables once per process.
//!
//! Every offset and size below comes from `VmStructs` by the VM's own names; a JVM whose
//! tables lack one of them (another major version that renamed a field) is not read at all,
//! rather than read with a guess.

use super::{HotspotError, vmstructs::VmStructs};

/// Offsets (bytes) and static addresses of what the views read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Address of `ThreadsSMRSupport::_java_thread_list` (a `ThreadsList*`).
    pub java_thread_list: u64,
    /// `ThreadsList::_length` (u32).
    pub list_length: u64,
    /// `ThreadsList::_threads` (`JavaThread**`).
    pub list_threads: u64,
    /// `JavaThread::_osthread` (`OSThread*`).
    pub thread_osthread: u64,
    /// `OSThread::_thread_id` (the kernel tid, a `pid_t`).
    pub osthread_tid: u64,
    /// `Thread::_stack_base` (the stack's highest address).
    pub thread_stack_base: u64,
    /// `Thread::_stack_size`, bytes.
    pub thread_stack_size: u64,
    /// `JavaThread::_threadObj` (an `OopHandle`).
    pub thread_obj: u64,
    /// `JavaThread::_current_pending_monitor` (`ObjectMonitor*`).
    pub pending_monitor: u64,
    /// `OopHandle::_obj` (`oop*`); a `WeakHandle` is laid out alike (one `oop*`).
    pub handle_obj: u64,
    /// `ObjectMonitor::_owner`.
    pub monitor_owner: u64,
    /// `ObjectMonitor::_object` (a `WeakHandle` since JDK 16).
    pub monitor_object: u64,
    /// `oopDesc::_metadata._compressed_klass` / `_klass` (same offset, a union).
    pub oop_klass: u64,
    /// Whether object headers hold compressed class pointers.
    pub compressed_klass: bool,
    /// Address of `CompressedKlassPointers::_narrow_klass._base`.
    pub narrow_klass_base: u64,
    /// Address of `CompressedKlassPointers::_narrow_klass._shift`.
    pub narrow_klass_shift: u64,
    /// Whether object fields hold compressed (32-bit) references.
    pub compressed_oops: bool,
    /// Address of `CompressedOops::_narrow_oop._base`.
    pub narrow_oop_base: u64,
    /// Address of `CompressedOops::_narrow_oop._shift`.
    pub narrow_oop_shift: u64,
    /// `Klass::_name` (`Symbol*`).
    pub klass_name: u64,
    /// `Klass::_super` (`Klass*`).
    pub klass_super: u64,
    /// `Klass::_layout_helper` (jint).
    pub klass_layout_helper: u64,
    /// `Symbol::_length` (u16).
    pub symbol_length: u64,
    /// `Symbol::_body` (the bytes, modified UTF-8).
    pub symbol_body: u64,
    /// `InstanceKlass::_fields` (`Array<u2>*`).
    pub ik_fields: u64,
    /// `InstanceKlass::_java_fields_count` (u16).
    pub ik_java_fields_count: u64,
    /// `InstanceKlass::_constants` (`ConstantPool*`).
    pub ik_constants: u64,
    /// `sizeof(ConstantPool)`: its slots follow it.
    pub constant_pool_size: u64,
    /// `Array<u2>::_data`.
    pub array_u2_data: u64,
    /// Address of `Symbol::_vm_symbols[0]` (the names of fields the VM injects).
    pub vm_symbols: u64,
    /// u2 slots per `FieldInfo`, and the slot of each member.
    pub field_info: FieldInfoLayout,
    /// `Klass::_lh_header_size_shift` and `_mask`: an array's header size in its layout helper.
    pub lh_header_size: (u32, u32),
    /// Address of `Abstract_VM_Version::_s_vm_release` (`const char*`).
    pub vm_release: Option<u64>,
}

/// `FieldInfo` (JDK 8 to 20): `field_slots` u2 per field; the slot of each member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldInfoLayout {
    /// u2 slots per field.
    pub slots: u64,
    /// Slot of the access flags.
    pub access_flags: u64,
    /// Slot of the name's constant pool index.
    pub name_index: u64,
    /// Slot of the packed offset's low half.
    pub low_packed: u64,
    /// Slot of the packed offset's high half.
    pub high_packed: u64,
    /// Bits of tag below the packed offset.
    pub tag_size: u32,
    /// The tag of a field whose offset is set.
    pub tag_offset: u32,
    /// The access flag of a VM-injected field (named by `vm_symbols`).
    pub internal_flag: u16,
}

/// `JVM_ACC_STATIC`: fixed by the class file format (JVMS 4.5), not by the VM.
pub(crate) const ACC_STATIC: u16 = 0x0008;

/// Whether a UseCompressed* flag is on.
pub(crate) struct Flags {
    /// `UseCompressedOops`.
    pub compressed_oops: bool,
    /// `UseCompressedClassPointers`.
    pub compressed_klass: bool,
}

impl Layout {
    /// Takes the layout out of the tables; `flags` are the VM's flags (read by the caller from
    /// the `JVMFlag` table).
    pub(crate) fn new(t: &VmStructs, flags: &Flags) -> Result<Self, HotspotError> {
        let constant = |name: &str| t.constant(name).map(|v| v as u64);
        Ok(Self {
            java_thread_list: t.address("ThreadsSMRSupport", "_java_thread_list")?,
            list_length: t.offset("ThreadsList", "_length")?,
            list_threads: t.offset("ThreadsList", "_threads")?,
            thread_osthread: t.offset("JavaThread", "_osthread")?,
            osthread_tid: t.offset("OSThread", "_thread_id")?,
            thread_stack_base: t
                .offset("JavaThread", "_stack_base")
                .or_else(|_| t.offset("Thread", "_stack_base"))?,
            thread_stack_size: t
                .offset("JavaThread", "_stack_size")
                .or_else(|_| t.offset("Thread", "_stack_size"))?,
            thread_obj: t.offset("JavaThread", "_threadObj")?,
            pending_monitor: t.offset("JavaThread", "_current_pending_monitor")?,
            handle_obj: t.offset("OopHandle", "_obj")?,
            monitor_owner: t.offset("ObjectMonitor", "_owner")?,
            monitor_object: t.offset("ObjectMonitor", "_object")?,
            oop_klass: t.offset("oopDesc", "_metadata._compressed_klass")?,
            compressed_klass: flags.compressed_klass,
            narrow_klass_base: t.address("CompressedKlassPointers", "_narrow_klass._base")?,
            narrow_klass_shift: t.address("CompressedKlassPointers", "_narrow_klass._shift")?,
            compressed_oops: flags.compressed_oops,
            narrow_oop_base: t.address("CompressedOops", "_narrow_oop._base")?,
            narrow_oop_shift: t.address("CompressedOops", "_narrow_oop._shift")?,
            klass_name: t.offset("Klass", "_name")?,
            klass_super: t.offset("Klass", "_super")?,
            klass_layout_helper: t.offset("Klass", "_layout_helper")?,
            symbol_length: t.offset("Symbol", "_length")?,
            symbol_body: t.offset("Symbol", "_body")?,
            ik_fields: t.offset("InstanceKlass", "_fields")?,
            ik_java_fields_count: t.offset("InstanceKlass", "_java_fields_count")?,
            ik_constants: t.offset("InstanceKlass", "_constants")?,
            constant_pool_size: t.size("ConstantPool")?,
            array_u2_data: t.offset("Array<u2>", "_data")?,
            vm_symbols: t.address("Symbol", "_vm_symbols[0]")?,
            field_info: FieldInfoLayout {
                slots: constant("FieldInfo::field_slots")?,
                access_flags: constant("FieldInfo::access_flags_offset")?,
                name_index: constant("FieldInfo::name_index_offset")?,
                low_packed: constant("FieldInfo::low_packed_offset")?,
                high_packed: constant("FieldInfo::high_packed_offset")?,
                tag_size: constant("FIELDINFO_TAG_SIZE")? as u32,
                tag_offset: constant("FIELDINFO_TAG_OFFSET")? as u32,
                internal_flag: constant("JVM_ACC_FIELD_INTERNAL")? as u16,
            },
            lh_header_size: (
                constant("Klass::_lh_header_size_shift")? as u32,
                constant("Klass::_lh_header_size_mask")? as u32,
            ),
            vm_release: t.address("Abstract_VM_Version", "_s_vm_release").ok(),
        })
    }
}
