//! Kernel struct layouts read from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust BPF programs cannot carry CO-RE relocations yet, so every struct field they read
//! (`task_struct.pid`, `task_struct.flags`, the `pt_regs` registers) has its offset looked up
//! here and passed to the programs in their `CONFIG` global. Nothing is hard-coded.

use std::path::Path;

use btf_rs::{Btf, Type};
use tracer_common::RegsOffsets;

/// Where the kernel's BTF lives.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors reading struct layouts from BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file is missing or unreadable.
    #[error("cannot read kernel BTF at {path}")]
    Read {
        /// The file tried.
        path: String,
        /// Why.
        #[source]
        source: btf_rs::Error,
    },
    /// A struct or field the programs need is not in this kernel's BTF.
    #[error("kernel BTF has no {type_name}.{field}")]
    Missing {
        /// The struct.
        type_name: &'static str,
        /// The field.
        field: &'static str,
    },
    /// aya could not load the kernel's BTF (to attach `tp_btf` programs).
    #[error("cannot load the kernel's BTF")]
    Load(#[source] aya::BtfError),
}

/// Byte offsets of every kernel field the BPF programs read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelOffsets {
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.flags`.
    pub task_flags: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `pt_regs` registers (x86_64 syscall ABI order for the arguments).
    pub regs: RegsOffsets,
}

impl KernelOffsets {
    /// Reads the offsets from the running kernel's BTF.
    pub(crate) fn from_running_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads the offsets from a BTF file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let task = |field| field_offset(&btf, "task_struct", field);
        let regs = |field| field_offset(&btf, "pt_regs", field);
        Ok(Self {
            task_pid: task("pid")?,
            task_flags: task("flags")?,
            task_tgid: task("tgid")?,
            regs: RegsOffsets {
                // x86_64 syscall arguments: rdi, rsi, rdx, r10, r8, r9.
                args: [
                    regs("di")?,
                    regs("si")?,
                    regs("dx")?,
                    regs("r10")?,
                    regs("r8")?,
                    regs("r9")?,
                ],
                orig_ax: regs("orig_ax")?,
                ip: regs("ip")?,
                sp: regs("sp")?,
                bp: regs("bp")?,
                ax: regs("ax")?,
                _pad: 0,
            },
        })
    }
}

/// Byte offset of `field` in `struct name`, looking through anonymous struct/union members.
pub(crate) fn field_offset(
    btf: &Btf,
    name: &'static str,
    field: &'static str,
) -> Result<u32, BtfError> {
    let missing = || BtfError::Missing {
        type_name: name,
        field,
    };
    let types = btf.resolve_types_by_name(name).map_err(|_| missing())?;
    types
        .iter()
        .filter_map(|t| match t {
            Type::Struct(s) => find_member(btf, s, field, 0),
            _ => None,
        })
        .next()
        .ok_or_else(missing)
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Option<u32> {
    for member in &s.members {
        let bits = base_bits + member.bit_offset();
        match btf.resolve_name(member) {
            Ok(n) if n == field => return Some(bits / 8),
            Ok(n) if !n.is_empty() => continue,
            _ => {}
        }
        // Anonymous member: descend into the struct or union it holds.
        if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(member)
            && let Some(off) = find_member(btf, &inner, field, bits)
        {
            return Some(off);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that the running kernel's offsets are found and plausible (skips without BTF).
    #[test]
    fn offsets_from_running_kernel_are_plausible() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let off = KernelOffsets::from_running_kernel().expect("offsets");
        assert!(off.task_pid > 0 && off.task_pid < 16384);
        // x86_64 pt_regs: r15 first, ax at 80, di at 112, orig_ax at 120, ip 128, sp 152.
        assert_eq!(off.regs.ax, 80);
        assert_eq!(off.regs.args[0], 112);
        assert_eq!(off.regs.orig_ax, 120);
        assert_eq!(off.regs.ip, 128);
        assert_eq!(off.regs.sp, 152);
    }
}
