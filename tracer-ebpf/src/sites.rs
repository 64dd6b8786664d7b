//! User stacks as *sites* (`--unwind dwarf|auto`): code built without frame pointers (most
//! distributions' libc, `-O2` builds) cannot be walked in the kernel, so on a memo miss the
//! top of the user stack is copied with the registers and shipped to user space, which unwinds
//! it once with DWARF CFI and caches the frames by site id.
//!
//! A site id must tell different stacks apart and give the same stack the same id, so it is
//! shipped once and the in-kernel aggregate keeps one line for it. It hashes the process, ip,
//! sp, the frame-pointer walk's id (auto) and, by position, every word of the copy above sp
//! that lies in one of the process's executable ranges (`TEXT_RANGES`, given by user space
//! from `/proc/PID/maps`): return addresses are there, heap pointers and clocks are not, so an
//! interpreter that leaves different objects on its stack at each wait keeps one site. Until
//! user space has given a process's ranges (its first milliseconds), or after the LRU map
//! evicted them, every *code-like* word counts instead (in `[0x400000, 2^47)`): correct, but
//! a changing pointer then makes a new site per wait, shipped again (`SITES_SHIPPED`). Code
//! mapped after user space last read the maps (dlopen, JIT) does not count until it reads them
//! again (it does when an unwound site leaves the known code): two stacks that differ only
//! there share a site meanwhile. A `KNOWN_SITES` map (insert if absent) decides shipping.
//!
//! The copy is read a page at a time from the start of sp's page, so every read has a constant
//! size at a constant offset (the verifier's taste) and a read that faults near the top of
//! the stack just ends the copy.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_buf, generated::bpf_loop},
};
use tracer_common::{
    MAX_STACK_COPY_PAGES, SITE_ID_TAG, SITE_MEMO_BYTES, STACK_COPY_PAGE, STACK_ID_MISSED,
    STACK_ID_NONE, SiteCopy, SiteHeader, TextRanges, UserRegs, WakerMemo, counter, flags,
    site_hash,
};

use crate::{
    config,
    maps::{KNOWN_SITES, SITE_SCRATCH, SITES, TEXT_RANGES, WAKER_MEMO, count},
    regs::Regs,
    stacks,
};

const EEXIST: i64 = 17;
const WORD: usize = 8;
const MEMO_WORDS: usize = SITE_MEMO_BYTES / WORD;
const COPY_WORDS: usize = MAX_STACK_COPY_PAGES * STACK_COPY_PAGE / WORD;

/// The running process's executable ranges, if user space has given them.
#[inline(always)]
pub(crate) fn text_ranges(tgid: u32) -> Option<&'static TextRanges> {
    // SAFETY: a map value read in place; user space replaces it whole, and a torn read can
    // only change which words count for this one hash.
    unsafe { TEXT_RANGES.get(&tgid) }
}

/// Adds `word` to `hash`, by value only if it may be a return address: in `ranges` when
/// given, code-like otherwise.
#[inline(always)]
fn add(hash: u64, word: u64, ranges: Option<&TextRanges>) -> u64 {
    let keep = match ranges {
        Some(ranges) => site_hash::text_mask(ranges, word),
        None => site_hash::code_like_mask(word),
    };
    site_hash::add_word_masked(hash, word, keep)
}

/// The word at word index `i < COPY_WORDS` of the copy.
#[inline(always)]
fn word_at(copy: &SiteCopy, i: usize) -> u64 {
    // SAFETY: callers keep `i` below `COPY_WORDS`, so the read is inside `bytes`, which
    // starts 8-aligned (after the all-u64 header of a `repr(C)` struct).
    unsafe { core::ptr::read(copy.bytes.as_ptr().add(i * WORD).cast::<u64>()) }
}

/// Reads the memo window, `[sp, sp + SITE_MEMO_BYTES)` (to the end of sp's page when the full
/// window faults), into the scratch copy, and returns which of its words were read (bit `i` =
/// word `i`; 0 when none could be).
///
/// The memo key for a copied stack is a hash of the window's words that may be return
/// addresses, so two callers of one blocking function at the same sp do not share a memo
/// entry. Finding those words takes a search per word ([`memo_code_positions`], on a memo
/// miss only); a switch-out at the memoized place hashes the positions the miss found
/// ([`memo_hash`]): if the return addresses there are the same, so is the stack's top.
#[inline(always)]
pub(crate) fn memo_window(sp: u64) -> u64 {
    let Some(copy) = SITE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU map value of the declared type; programs do not migrate while running.
    let copy = unsafe { &mut *copy };
    let window = &mut copy.bytes[..SITE_MEMO_BYTES];
    // SAFETY: a checked user-memory read into a map value.
    if unsafe { bpf_probe_read_user_buf(sp as *const u8, window) }.is_ok() {
        return u64::MAX;
    }
    let to_page_end = STACK_COPY_PAGE - (sp as usize & (STACK_COPY_PAGE - 1));
    if to_page_end >= SITE_MEMO_BYTES {
        return 0;
    }
    let Some(part) = copy.bytes.get_mut(..to_page_end) else {
        return 0;
    };
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_buf(sp as *const u8, part) }.is_err() {
        return 0;
    }
    (1u64 << (to_page_end / WORD)) - 1
}

/// The hash of the memo window's words at `positions` (bit `i` = word `i`), unrolled and
/// without a branch: the check a switch-out at the memoized place pays.
#[inline(always)]
pub(crate) fn memo_hash(positions: u64) -> u64 {
    let Some(copy) = SITE_SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: as in `memo_window`.
    let copy = unsafe { &*copy };
    let mut hash = site_hash::START;
    for i in 0..MEMO_WORDS {
        hash =
            site_hash::add_word_masked(hash, word_at(copy, i), site_hash::bit_mask(positions, i));
    }
    hash
}

/// Which of the memo window's `read` words may be return addresses: inside `ranges` when
/// given, code-like otherwise (a search per word, in a `bpf_loop` callback).
#[inline(always)]
pub(crate) fn memo_code_positions(read: u64, ranges: Option<&TextRanges>) -> u64 {
    let Some(copy) = SITE_SCRATCH.get_ptr(0) else {
        return 0;
    };
    // SAFETY: as in `memo_window`.
    let copy = unsafe { &*copy };
    let mut walk = PositionWalk {
        copy,
        ranges,
        positions: 0,
    };
    // SAFETY: `code_position` has the callback signature `bpf_loop` expects, and `walk`
    // outlives the call.
    unsafe {
        bpf_loop(
            MEMO_WORDS as u32,
            code_position as *mut c_void,
            (&raw mut walk).cast::<c_void>(),
            0,
        );
    }
    walk.positions & read
}

/// What [`code_position`] works on.
struct PositionWalk<'a> {
    copy: &'a SiteCopy,
    ranges: Option<&'a TextRanges>,
    positions: u64,
}

/// `bpf_loop` callback: sets bit `index` of the positions when word `index` may be a return
/// address.
///
/// # Safety
/// `ctx` points at a live [`PositionWalk`].
unsafe extern "C" fn code_position(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: the caller passes its `PositionWalk`.
    let walk = unsafe { &mut *ctx.cast::<PositionWalk>() };
    let i = index as usize;
    if i >= MEMO_WORDS {
        return 1;
    }
    let word = word_at(walk.copy, i);
    let keep = match walk.ranges {
        Some(ranges) => site_hash::text_mask(ranges, word),
        None => site_hash::code_like_mask(word),
    };
    walk.positions |= (keep & 1) << i;
    0
}

/// The hash of `words` words of the copy from word index `first`, in a `bpf_loop` callback:
/// the verifier checks the callback once, not once per word.
#[inline(always)]
fn hash_words(copy: &SiteCopy, ranges: Option<&TextRanges>, first: usize, words: usize) -> u64 {
    let mut walk = HashWalk {
        copy,
        ranges,
        first,
        hash: site_hash::START,
    };
    // SAFETY: `hash_word` has the callback signature `bpf_loop` expects, and `walk` outlives
    // the call.
    unsafe {
        bpf_loop(
            words as u32,
            hash_word as *mut c_void,
            (&raw mut walk).cast::<c_void>(),
            0,
        );
    }
    walk.hash
}

/// What [`hash_word`] works on: the copy, where sp is in it, the process's ranges, and the
/// running hash.
struct HashWalk<'a> {
    copy: &'a SiteCopy,
    ranges: Option<&'a TextRanges>,
    /// Word index of sp in the copy.
    first: usize,
    hash: u64,
}

/// `bpf_loop` callback: adds word `first + index` of the copy to the hash.
///
/// # Safety
/// `ctx` points at a live [`HashWalk`].
unsafe extern "C" fn hash_word(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: the caller passes its `HashWalk`.
    let walk = unsafe { &mut *ctx.cast::<HashWalk>() };
    let i = walk.first + index as usize;
    if i >= COPY_WORDS {
        return 1;
    }
    walk.hash = add(walk.hash, word_at(walk.copy, i), walk.ranges);
    0
}

/// Copies the running thread's user stack, ships it if the site is new, and returns the site
/// id (`STACK_ID_MISSED` when nothing could be copied or shipped, counted by reason).
#[inline(always)]
pub(crate) fn record<C: EbpfContext>(ctx: &C, regs: UserRegs, ranges: Option<&TextRanges>) -> u64 {
    if regs.sp == 0 {
        count(counter::STACK_COPY_ERROR);
        return STACK_ID_MISSED;
    }
    let fp_stack_id = if config::has(flags::FP_WITH_COPIES) {
        stacks::record(ctx, true)
    } else {
        STACK_ID_NONE
    };
    let Some(copy) = SITE_SCRATCH.get_ptr_mut(0) else {
        return STACK_ID_MISSED;
    };
    // SAFETY: a per-CPU map value of the declared type; programs do not migrate while running.
    let copy = unsafe { &mut *copy };
    let page_start = regs.sp & !(STACK_COPY_PAGE as u64 - 1);
    let in_page = (regs.sp - page_start) as usize;
    let wanted = config::stack_copy_bytes() as usize + in_page;
    let pages = wanted
        .div_ceil(STACK_COPY_PAGE)
        .clamp(1, MAX_STACK_COPY_PAGES);
    let mut copied = 0u32;
    for page in 0..MAX_STACK_COPY_PAGES {
        if page >= pages {
            break;
        }
        let at = page * STACK_COPY_PAGE;
        let Some(dst) = copy.bytes.get_mut(at..at + STACK_COPY_PAGE) else {
            break;
        };
        let src = (page_start + at as u64) as *const u8;
        // SAFETY: a checked user-memory read into a map value.
        if unsafe { bpf_probe_read_user_buf(src, dst) }.is_err() {
            break;
        }
        copied = page as u32 + 1;
    }
    // Read back through the map: the verifier then knows the length only by its bounds, so
    // the paths out of the copy loop meet again instead of each verifying the hash loop.
    copy.header.copy_len = copied * STACK_COPY_PAGE as u32;
    // SAFETY: a volatile read of a map value field.
    let copy_len = unsafe { core::ptr::read_volatile(&raw const copy.header.copy_len) } as usize;
    if copy_len == 0 || copy_len > MAX_STACK_COPY_PAGES * STACK_COPY_PAGE {
        count(counter::STACK_COPY_ERROR);
        return STACK_ID_MISSED;
    }
    let first = in_page / WORD;
    let words = (copy_len / WORD).saturating_sub(first);
    let hash = hash_words(copy, ranges, first, words);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The process too: the same words in two processes need not be the same code.
    let mut hash = (hash ^ u64::from(tgid)).wrapping_mul(site_hash::PRIME);
    hash ^= regs.ip;
    hash = (hash ^ regs.sp).wrapping_mul(site_hash::PRIME);
    hash = (hash ^ fp_stack_id).wrapping_mul(site_hash::PRIME);
    let site_id = site_hash::finish(hash) | SITE_ID_TAG;
    match KNOWN_SITES.insert(site_id, 1u8, BPF_NOEXIST.into()) {
        Ok(()) => {}
        Err(e) if -(e as i64) == EEXIST => return site_id,
        Err(_) => {
            count(counter::DROP_SITES_FULL);
            return STACK_ID_MISSED;
        }
    }
    copy.header = SiteHeader {
        site_id,
        fp_stack_id,
        ip: regs.ip,
        sp: regs.sp,
        bp: regs.bp,
        copy_start: page_start,
        tgid,
        copy_len: copy_len as u32,
    };
    let len = core::mem::size_of::<SiteHeader>() + copy_len;
    // SAFETY: `SiteCopy` is `repr(C)`, header then bytes, with no padding between them.
    let all = unsafe {
        core::slice::from_raw_parts(
            (copy as *const SiteCopy).cast::<u8>(),
            core::mem::size_of::<SiteCopy>(),
        )
    };
    let Some(record) = all.get(..len) else {
        return STACK_ID_MISSED;
    };
    if SITES.output::<[u8]>(record, 0).is_err() {
        // Not shipped: forget it, so the next wait there ships it again.
        let _ = KNOWN_SITES.remove(site_id);
        count(counter::DROP_SITE_RING_FULL);
        return STACK_ID_MISSED;
    }
    count(counter::SITES_SHIPPED);
    site_id
}

/// The site of the running thread's user stack as it wakes a traced wait (`--wakers`): the
/// same copy as a wait's, behind a memo of its own keyed by the waker's tid (a waker is not
/// in `THREADS` unless it also waits), so a thread that keeps waking others from the same
/// place is copied once.
#[inline(always)]
pub(crate) fn waker_site<C: EbpfContext>(ctx: &C, regs: &Regs, tid: u32, tgid: u32) -> u64 {
    let ranges = text_ranges(tgid);
    let regs = regs.user();
    let read = memo_window(regs.sp);
    // SAFETY: a map value read by copy.
    if config::has(flags::STACK_MEMO)
        && let Some(memo) = unsafe { WAKER_MEMO.get(&tid) }
        && memo.user_ip == regs.ip
        && memo.user_sp == regs.sp
        && memo.user_stack_id != STACK_ID_MISSED
        && regs.ip != 0
        && memo_hash(memo.positions & read) == memo.words
    {
        count(counter::STACK_MEMO_HITS);
        return memo.user_stack_id;
    }
    let positions = memo_code_positions(read, ranges);
    let words = memo_hash(positions);
    let user_stack_id = record(ctx, regs, ranges);
    let memo = WakerMemo {
        user_ip: regs.ip,
        user_sp: regs.sp,
        words,
        positions,
        user_stack_id,
    };
    let _ = WAKER_MEMO.insert(&tid, &memo, 0);
    user_stack_id
}
