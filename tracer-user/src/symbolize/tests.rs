//! Tests of the symbolizer against real processes (some exited before symbolization).

use std::{fs::File, path::Path, process::Command};

use super::*;
use crate::{export::folded::frame_name, procs::maps::Maps};

/// Last path component.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The executable mappings of named files in `/proc/PID/maps`.
fn code_mappings(pid: u32) -> Vec<Mapping> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    Maps::parse(&text)
        .code()
        .filter(|m| !m.path.is_empty())
        .cloned()
        .collect()
}

/// Check that a process remembered while alive still symbolizes after it exited.
#[test]
fn remembered_process_symbolizes_after_exit() {
    let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
    let pid = child.id();
    let m = wait_for_mapping(pid, |m| m.path.ends_with("/sleep"));
    let mapping = (m.start, m.path);
    let mut sym = Symbolizer::new();
    let mut procs = Procs::new();
    procs.remember(pid);
    child.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    let (start, path) = mapping;
    let frames = sym.user(&mut procs, pid, &[start + 0x10, start + 0x20]);
    assert!(frames.len() >= 2, "{frames:?}");
    let base = basename(&path).to_owned();
    for f in &frames {
        assert_eq!(f.module.as_deref(), Some(path.as_str()), "{f:?}");
        let folded = frame_name(f, false);
        assert!(
            f.name.is_some() || folded.starts_with(&format!("{base}+0x")),
            "{folded}"
        );
    }
    assert_eq!(procs.name(pid).as_deref(), Some("sleep"));
}

/// The libc text mapping of `pid`, waiting for the dynamic loader to map it.
fn libc_mapping(pid: u32) -> Mapping {
    wait_for_mapping(pid, |m| {
        basename(&m.path).starts_with("libc.so") || basename(&m.path).starts_with("libc-")
    })
}

/// The first executable mapping of `pid` matching `pred`, polling for up to 2 s: a
/// spawned child's maps fill in after `spawn` returns (the kernel releases the vfork
/// parent before it maps the new program, and libraries come later from ld.so).
fn wait_for_mapping(pid: u32, pred: impl Fn(&Mapping) -> bool) -> Mapping {
    for _ in 0..1000 {
        if let Some(m) = code_mappings(pid).into_iter().find(&pred) {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("no matching mapping in /proc/{pid}/maps");
}

/// Check that a libc function called by an exited, remembered process still resolves
/// by name (not only module+offset).
#[test]
fn exited_process_libc_function_resolves_by_name() {
    // Where nanosleep lives in libc, as a file offset, taken from this process.
    let ours = libc_mapping(std::process::id());
    let addr = libc::nanosleep as *const () as u64;
    assert!(
        ours.start <= addr && addr < ours.end,
        "nanosleep not in libc text"
    );
    let file_offset = addr - ours.start + ours.offset;

    let mut child = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
    let pid = child.id();
    let theirs = libc_mapping(pid);
    let mut sym = Symbolizer::new();
    let mut procs = Procs::new();
    procs.remember(pid);
    child.wait().unwrap();

    let child_addr = theirs.start + file_offset - theirs.offset;
    let frames = sym.user(&mut procs, pid, &[child_addr]);
    let name = frames.last().unwrap().name.clone().unwrap_or_default();
    assert!(name.contains("nanosleep"), "{frames:?}");
}

/// Check that a process remembered before its libraries were mapped re-reads its maps
/// when an address misses, while it lives, and that the result outlives the process.
#[test]
fn early_remember_refreshes_on_miss() {
    let ours = libc_mapping(std::process::id());
    let file_offset = libc::nanosleep as *const () as u64 - ours.start + ours.offset;
    let mut child = Command::new("/bin/sleep").arg("0.3").spawn().unwrap();
    let pid = child.id();
    let mut sym = Symbolizer::new();
    let mut procs = Procs::new();
    procs.remember(pid); // likely before ld.so mapped libc
    let theirs = libc_mapping(pid);
    let child_addr = theirs.start + file_offset - theirs.offset;
    let frames = sym.user(&mut procs, pid, &[child_addr]);
    child.wait().unwrap();
    let again = sym.user(&mut procs, pid, &[child_addr]);
    assert_eq!(frames, again);
    let name = frames.last().unwrap().name.clone().unwrap_or_default();
    assert!(name.contains("nanosleep"), "{frames:?}");
}

/// Check that a file no longer reachable by its path resolves through the handle opened
/// while the process lived.
#[test]
fn vanished_path_resolves_through_open_handle() {
    let mut m = libc_mapping(std::process::id());
    let addr = libc::nanosleep as *const () as u64;
    let mut sym = Symbolizer::new();
    let file = File::open(&m.path).unwrap();
    m.path = "/nonexistent/libc.so.6".into();
    m.dev = (0xff, 0xff);
    m.inode = 1;
    let key = m.file_key();
    let pid = u32::MAX - 9;
    let mut procs = Procs::new();
    procs.insert_for_test(
        pid,
        Maps::from_mappings(vec![m]),
        vec![(key, MappedFile::from_file(file))],
    );
    let frames = sym.user(&mut procs, pid, &[addr]);
    let last = frames.last().unwrap();
    assert!(
        last.name
            .as_deref()
            .unwrap_or_default()
            .contains("nanosleep"),
        "{frames:?}"
    );
    assert_eq!(last.module.as_deref(), Some("/nonexistent/libc.so.6"));
}

/// Check that a function of this test binary resolves by name, and the return-address
/// adjustment keeps the reported address.
#[test]
fn own_function_resolves_by_name() {
    let pid = std::process::id();
    let addr = own_function_resolves_by_name as *const () as u64;
    let mut sym = Symbolizer::new();
    let frames = sym.user(&mut Procs::new(), pid, &[addr, addr + 1]);
    let outer: Vec<&Frame> = frames.iter().filter(|f| !f.inlined).collect();
    assert_eq!(outer.len(), 2, "{frames:?}");
    for f in outer {
        let name = f.name.as_deref().unwrap_or_default();
        assert!(name.contains("own_function_resolves_by_name"), "{f:?}");
    }
    assert_eq!(frames.last().unwrap().addr, addr + 1);
}

/// Check that an unknown process falls back to `[unknown 0x..]` instead of failing.
#[test]
fn unknown_process_gives_unknown_frames() {
    let mut sym = Symbolizer::new();
    let frames = sym.user(&mut Procs::new(), u32::MAX - 7, &[0x1234]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frame_name(&frames[0], false), "[unknown 0x1234]");
}

/// Check that a kernel address from kallsyms resolves to its symbol (skips if kallsyms
/// hides addresses from this user).
#[test]
fn kernel_address_resolves_through_kallsyms() {
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let Some(addr) = kallsyms.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (addr, _, name) = (it.next()?, it.next()?, it.next()?);
        (name == "schedule").then(|| u64::from_str_radix(addr, 16).ok())?
    }) else {
        eprintln!("skipped: no schedule in /proc/kallsyms");
        return;
    };
    if addr == 0 {
        eprintln!("skipped: kallsyms addresses hidden (kptr_restrict)");
        return;
    }
    let mut sym = Symbolizer::new();
    let frames = sym.kernel(&[addr + 4, addr + 8]);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].name.as_deref(), Some("schedule"));
    assert_eq!(frames[0].offset, 4);
    assert_eq!(frames[1].addr, addr + 8);
}

/// Check that forgetting an exited process drops its maps and name, so its addresses no
/// longer resolve (what long `watch` runs rely on to stay bounded).
#[test]
fn forgotten_process_keeps_nothing() {
    let mut child = Command::new("/bin/sleep").arg("0.2").spawn().unwrap();
    let pid = child.id();
    let m = wait_for_mapping(pid, |m| m.path.ends_with("/sleep"));
    let mut sym = Symbolizer::new();
    let mut procs = Procs::new();
    procs.remember(pid);
    child.wait().unwrap();
    let before = sym.user(&mut procs, pid, &[m.start + 0x10]);
    assert_eq!(before[0].module.as_deref(), Some(m.path.as_str()));
    procs.forget(pid);
    sym.forget_process(pid, &procs);
    assert_eq!(procs.name(pid), None, "name kept after forget");
    let after = sym.user(&mut procs, pid, &[m.start + 0x10]);
    assert!(
        after.iter().all(|f| f.module.is_none()),
        "still resolved after forget: {after:?}"
    );
}

/// Check that addresses outside every mapping of a process (JIT code) are named by its perf
/// map, with the offset into the named code, as `jit` frames, also after the process exited
/// (the map is kept); that an address the map does not name is an unknown `jit` frame, named
/// once the runtime appended a line for it; and that a map's `;` does not reach folded output.
#[test]
fn jit_addresses_resolve_through_the_perf_map() {
    let mut child = Command::new("/bin/sleep").arg("0.5").spawn().unwrap();
    let pid = child.id();
    let map_path = format!("/tmp/perf-{pid}.map");
    fs::write(&map_path, "0x1000 0x100 JS:~waitHere a;b.js:3:7\n").unwrap();
    let mut sym = Symbolizer::new();
    let mut procs = Procs::new();
    procs.remember(pid);

    let frames = sym.user(&mut procs, pid, &[0x1010, 0x5000]);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].name.as_deref(), Some("JS:~waitHere a;b.js:3:7"));
    assert_eq!((frames[0].offset, &frames[0].kind), (0x10, &FrameKind::Jit));
    assert_eq!(frame_name(&frames[0], false), "JS:~waitHere a:b.js:3:7");
    assert_eq!(
        (frames[1].name.as_deref(), &frames[1].kind),
        (None, &FrameKind::Jit)
    );

    let mut file = fs::OpenOptions::new().append(true).open(&map_path).unwrap();
    std::io::Write::write_all(&mut file, b"4f00 200 py::later:/x.py\n").unwrap();
    // The registry looks at the map again after its re-read interval.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let frames = sym.user(&mut procs, pid, &[0x1010, 0x5000]);
    assert_eq!(frames[1].name.as_deref(), Some("py::later:/x.py"));

    child.wait().unwrap();
    fs::remove_file(&map_path).unwrap();
    procs.begin_scan();
    procs.remember(pid);
    let mut fresh = Symbolizer::new();
    let frames = fresh.user(&mut procs, pid, &[0x10ff]);
    assert_eq!(frames[0].name.as_deref(), Some("JS:~waitHere a;b.js:3:7"));
}
