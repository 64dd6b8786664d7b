//! Heuristics for when CFI cannot go on: is a word a return address, and where is the
//! next frame record (saved rbp, return address) on the stack. See the module docs of
//! [`super`] for when they are used and what they can get wrong.

use super::memory::ProcMem;
use crate::procs::maps::{Mapping, Maps};

/// How far above sp a frame record is searched for: room for a function's locals.
pub(super) const SCAN_BYTES: u64 = 32 * 1024;

/// Registers at a frame boundary; `bp` is `None` when its value is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub ip: u64,
    pub sp: u64,
    pub bp: Option<u64>,
}

/// Whether `ret` looks like a return address: it is in executable memory and the bytes
/// before it decode as a call instruction.
pub(super) fn is_return_address(mem: &mut ProcMem, maps: &Maps, ret: u64) -> bool {
    let Some(before) = ret.checked_sub(8) else {
        return false;
    };
    let mut code = [0u8; 8];
    maps.is_code(ret) && mem.read_bytes(before, &mut code) && ends_with_call(&code, ret, maps)
}

/// Whether the 8 bytes before `ret` end with `call rel32` (whose target must be code) or
/// with an indirect `call r/m64` (`[REX] FF /2`, any addressing form).
fn ends_with_call(code: &[u8; 8], ret: u64, maps: &Maps) -> bool {
    if code[3] == 0xe8 {
        let rel = i32::from_le_bytes([code[4], code[5], code[6], code[7]]);
        if ret
            .checked_add_signed(i64::from(rel))
            .is_some_and(|target| maps.is_code(target))
        {
            return true;
        }
    }
    (2..=8).any(|len| indirect_call_len(&code[8 - len..]) == Some(len))
}

/// Length of the `[REX] FF /2` instruction starting at `bytes[0]`, if it is one.
fn indirect_call_len(bytes: &[u8]) -> Option<usize> {
    let rex = usize::from((0x40..=0x4f).contains(bytes.first()?));
    if *bytes.get(rex)? != 0xff {
        return None;
    }
    let modrm = *bytes.get(rex + 1)?;
    if (modrm >> 3) & 7 != 2 {
        return None;
    }
    let sib = bytes.get(rex + 2).copied();
    Some(rex + 2 + modrm_operand_len(modrm, sib)?)
}

/// Bytes after ModRM (SIB and displacement) for a memory or register operand.
fn modrm_operand_len(modrm: u8, sib: Option<u8>) -> Option<usize> {
    let (mode, rm) = (modrm >> 6, modrm & 7);
    let sib_len = usize::from(mode != 3 && rm == 4);
    let disp = match mode {
        0 if rm == 5 => 4,
        0 if rm == 4 && sib? & 7 == 5 => 4,
        0 | 3 => 0,
        1 => 1,
        _ => 4,
    };
    Some(sib_len + disp)
}

/// Searches upward from `from` for a frame record: a saved rbp that is 0 or points higher
/// into the same stack, followed by a return address. Returns the caller's registers.
pub(super) fn find_frame_record(mem: &mut ProcMem, maps: &Maps, from: u64) -> Option<Cursor> {
    let stack = maps.find(from)?;
    let end = stack.end.min(from.saturating_add(SCAN_BYTES));
    let mut slot = from.checked_add(7)? & !7;
    while slot.saturating_add(16) <= end {
        if let Some(caller) = frame_record_at(mem, maps, stack, slot) {
            return Some(caller);
        }
        slot += 8;
    }
    None
}

/// The caller's registers if `slot` holds a plausible frame record.
fn frame_record_at(mem: &mut ProcMem, maps: &Maps, stack: &Mapping, slot: u64) -> Option<Cursor> {
    let saved_bp = mem.read_u64(slot)?;
    let chains_up = saved_bp > slot && saved_bp < stack.end && saved_bp % 8 == 0;
    if saved_bp != 0 && !chains_up {
        return None;
    }
    let ret = mem.read_u64(slot + 8)?;
    is_return_address(mem, maps, ret).then_some(Cursor {
        ip: ret,
        sp: slot + 16,
        bp: Some(saved_bp),
    })
}

/// One frame-pointer step from a known `bp`: the record must lie in the stack at or above
/// `sp` and hold a plausible return address. The saved rbp is not checked: a caller that
/// uses rbp as a general register leaves any value there.
pub(super) fn frame_pointer_step(mem: &mut ProcMem, maps: &Maps, cursor: Cursor) -> Option<Cursor> {
    let bp = cursor.bp?;
    let stack = maps.find(cursor.sp)?;
    if bp < cursor.sp || bp % 8 != 0 || !stack.contains(bp.saturating_add(15)) {
        return None;
    }
    let saved_bp = mem.read_u64(bp)?;
    let ret = mem.read_u64(bp + 8)?;
    is_return_address(mem, maps, ret).then_some(Cursor {
        ip: ret,
        sp: bp + 16,
        bp: Some(saved_bp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> Maps {
        Maps::parse("1000-9000 r-xp 00000000 00:00 0 [anon]\n")
    }

    #[test]
    fn recognizes_call_forms() {
        let m = maps();
        // call rel32 to 0x2000 from ret 0x5000: rel = -0x3000.
        let rel = (-0x3000i32).to_le_bytes();
        let direct = [0x90, 0x90, 0x90, 0xe8, rel[0], rel[1], rel[2], rel[3]];
        assert!(ends_with_call(&direct, 0x5000, &m));
        // Target outside code: not a call.
        assert!(!ends_with_call(&direct, 0x100_0000, &m));
        let cases: [&[u8]; 6] = [
            &[0xff, 0xd0],                   // call *%rax
            &[0x41, 0xff, 0xd3],             // call *%r11
            &[0xff, 0x50, 0x08],             // call *0x8(%rax)
            &[0xff, 0x15, 1, 2, 3, 4],       // call *disp32(%rip)
            &[0xff, 0x94, 0x24, 1, 2, 3, 4], // call *disp32(%rsp)
            &[0x41, 0xff, 0x54, 0x24, 0x08], // call *0x8(%r12)
        ];
        for case in cases {
            let mut code = [0x90u8; 8];
            code[8 - case.len()..].copy_from_slice(case);
            assert!(ends_with_call(&code, 0x5000, &m), "{case:x?}");
        }
        assert!(!ends_with_call(&[0x90; 8], 0x5000, &m));
        // jmp *%rax (ff /4) is not a call.
        assert!(!ends_with_call(
            &[0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0xe0],
            0x5000,
            &m
        ));
    }
}
