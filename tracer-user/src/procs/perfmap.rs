//! JIT perf maps (`/tmp/perf-PID.map`): the names runtimes give the code they generate.
//!
//! Code a JIT compiler writes into anonymous memory has no file and no symbols. Runtimes that
//! want profilers to name it append one line per piece of code to `/tmp/perf-PID.map`:
//! `START SIZE name`, START and SIZE in hex. Node writes them with `--perf-basic-prof`, the JVM
//! on `jcmd PID Compiler.perfmap` (JDK 17+, with `0x` before the numbers), CPython 3.12+ with
//! `-X perf` (`py::function:/path/file.py` for each function's trampoline).
//!
//! Why our own reader rather than blazesym's: its parser rejects the whole file for one bad
//! line, and a runtime appending while we read leaves a half-written last line every now and
//! then; it also only works while the process lives. Here a malformed line is skipped and
//! counted, an unterminated last line is left for the next read (runtimes append, so the file
//! is re-read from where the last complete line ended when it grew), and the registry keeps
//! the map after the process exits.
//!
//! JITs reuse code space (a method recompiled, a function collected), so several lines may
//! cover the same addresses: the later line is the current code and wins. The map stores
//! non-overlapping ranges by start address, trimming older ranges under a newer one.
//!
//! The file is looked for in the process's own root (`/proc/PID/root/tmp/`, which is the
//! container's `/tmp` for a containerized process) under the pid the process has in its own
//! pid namespace (the last field of `NSpid:` in `/proc/PID/status`). A map written before the
//! process started belongs to an earlier process with the same pid and is ignored: the start
//! time is `/proc/PID/stat`'s field 22 (clock ticks since boot) plus the boot time, compared
//! with the file's mtime. `/proc/PID`'s own ctime is not used: procfs stamps an inode when it
//! is first looked up (and again if it was evicted), which can be well after the process
//! started and after its map was written.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// A map whose mtime is at most this much older than the process's computed start time is
/// still taken as its own: the boot time is known to the second and clock ticks are 10 ms.
const START_TIME_SLACK: Duration = Duration::from_secs(2);

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// A piece of JIT code named by the map.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    /// One past the last address.
    end: u64,
    /// The name as the runtime wrote it.
    name: Arc<str>,
}

/// The names of a process's JIT code, newest line winning where lines overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PerfMap {
    /// Non-overlapping ranges by start address.
    ranges: BTreeMap<u64, Range>,
    /// Lines skipped as malformed (not counting an unterminated last line).
    malformed_lines: usize,
}

/// One parsed line: start address, size in bytes, name.
type Line<'a> = (u64, u64, &'a str);

impl PerfMap {
    /// Parses complete lines of map text, in file order.
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Self {
        let mut map = Self::default();
        let consumed = map.add_text(text);
        assert_eq!(consumed, text.rfind('\n').map_or(0, |i| i + 1));
        map
    }

    /// Adds the complete (newline-terminated) lines of `text`, later lines winning; returns
    /// how many bytes they took (an unterminated last line is not consumed).
    fn add_text(&mut self, text: &str) -> usize {
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..complete].lines() {
            match parse_line(line) {
                Some((start, size, name)) => self.insert(start, size, name),
                None if line.trim().is_empty() => {}
                None => self.malformed_lines += 1,
            }
        }
        complete
    }

    /// Adds a range, trimming or removing the older ranges it overlaps.
    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let end = start.saturating_add(size);
        // An older range starting before `start` may reach into the new one: keep its head,
        // and its tail if it reaches past the new range.
        if let Some((_, older)) = self.ranges.range_mut(..start).next_back()
            && older.end > start
        {
            let tail = (older.end > end).then(|| Range {
                end: older.end,
                name: Arc::clone(&older.name),
            });
            older.end = start;
            if let Some(tail) = tail {
                self.ranges.insert(end, tail);
            }
        }
        // Older ranges starting inside the new one: removed, but the part past its end stays.
        let inside: Vec<u64> = self.ranges.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(older) = self.ranges.remove(&s)
                && older.end > end
            {
                self.ranges.insert(end, older);
            }
        }
        self.ranges.insert(
            start,
            Range {
                end,
                name: Arc::from(name),
            },
        );
    }

    /// The start address and name of the code containing `addr`.
    pub(crate) fn symbol_at(&self, addr: u64) -> Option<(u64, &str)> {
        let (&start, range) = self.ranges.range(..=addr).next_back()?;
        (addr < range.end).then_some((start, &*range.name))
    }

    /// The name of the code containing `addr`.
    #[cfg(test)]
    pub(crate) fn name_at(&self, addr: u64) -> Option<&str> {
        self.symbol_at(addr).map(|(_, name)| name)
    }

    /// How many ranges are named.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Lines skipped as malformed.
    #[cfg(test)]
    pub(crate) fn malformed_lines(&self) -> usize {
        self.malformed_lines
    }
}

/// Parses `START SIZE name` (hex numbers, with or without `0x`); `None` if malformed. The name
/// is the rest of the line (it may hold spaces), without trailing white space.
fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end();
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.trim_start().split_once(' ')?;
    let name = name.trim_start();
    let (start, size) = (parse_hex(start)?, parse_hex(size)?);
    (size > 0 && !name.is_empty()).then_some((start, size, name))
}

/// A hex number with an optional `0x`/`0X`.
fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A process's perf map as read so far, for reading what the runtime appended since.
#[derive(Debug)]
pub(crate) struct PerfMapFile {
    /// Where the file is, seen from our mount namespace.
    path: PathBuf,
    /// The map from the lines read so far.
    pub(crate) map: PerfMap,
    /// Bytes of the file consumed (complete lines).
    consumed_bytes: u64,
    /// The file's mtime when first accepted; a file changed to an older mtime was replaced.
    accepted_after: SystemTime,
}

impl PerfMapFile {
    /// Finds and reads the perf map of live process `pid`; `None` if it has none, or only one
    /// written before it started (an earlier process with the same pid).
    pub(crate) fn open(pid: u32) -> Option<Self> {
        let ns_pid = namespace_pid(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)?;
        let path = PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map"));
        let mtime = fs::metadata(&path).ok()?.modified().ok()?;
        let started = process_start(pid)?;
        if mtime + START_TIME_SLACK < started {
            return None;
        }
        let mut file = Self {
            path,
            map: PerfMap::default(),
            consumed_bytes: 0,
            accepted_after: started,
        };
        file.read_appended();
        Some(file)
    }

    /// Reads the lines appended since the last read, if the file grew (all of it again if it
    /// shrank: rewritten). Returns whether lines were read.
    pub(crate) fn read_appended(&mut self) -> bool {
        let Ok(meta) = fs::metadata(&self.path) else {
            return false;
        };
        if meta.len() < self.consumed_bytes {
            // Rewritten from the start (the JVM writes the whole map on each request).
            self.map = PerfMap::default();
            self.consumed_bytes = 0;
        }
        if meta.len() == self.consumed_bytes
            || meta
                .modified()
                .is_ok_and(|m| m + START_TIME_SLACK < self.accepted_after)
        {
            return false;
        }
        let Ok(mut f) = fs::File::open(&self.path) else {
            return false;
        };
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(self.consumed_bytes)).is_err()
            || f.read_to_end(&mut bytes).is_err()
        {
            return false;
        }
        // A name that is not UTF-8 is kept, with replacement characters.
        let text = String::from_utf8_lossy(&bytes);
        self.map.add_text(&text);
        // Lossy decoding may change lengths: count the file's bytes up to its last newline.
        let consumed_bytes = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.consumed_bytes += consumed_bytes as u64;
        consumed_bytes > 0
    }
}

/// The pid in the process's own pid namespace: the last field of `NSpid:` in
/// `/proc/PID/status` (kernels before 4.1 lack the line: then the pid is its own).
fn namespace_pid(status: &str) -> Option<u32> {
    match status.lines().find_map(|l| l.strip_prefix("NSpid:")) {
        Some(pids) => pids.split_whitespace().last()?.parse().ok(),
        None => status
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok(),
    }
}

/// When `pid` started, wall clock: boot time (`btime` in `/proc/stat`) plus field 22 of
/// `/proc/PID/stat`.
fn process_start(pid: u32) -> Option<SystemTime> {
    let ticks = super::read_start_time(pid)?;
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let boot_secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let since_boot = Duration::from_millis(ticks * 1000 / USER_HZ);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boot_secs) + since_boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check the three runtimes' line shapes: JVM `0x` numbers, Node names with spaces,
    /// CPython trampolines named `py::function:/path`.
    #[test]
    fn parses_runtime_lines() {
        let map = PerfMap::parse(concat!(
            "0x00007f1c2d0a1b20 0x0000000000000260 Interpreter\n",
            "0x00007f1c2d0b0000 0x0000000000000180 void Busy.spin(int)\n",
            "3e3a9c04300 3c LazyCompile:~blockingRead /app/server.js:12:22\n",
            "7f3c4a2f1000 b py::handle:/srv/app.py\n",
        ));
        assert_eq!(map.len(), 4);
        assert_eq!(map.malformed_lines(), 0);
        assert_eq!(map.name_at(0x7f1c2d0a1b20), Some("Interpreter"));
        assert_eq!(map.name_at(0x7f1c2d0b017f), Some("void Busy.spin(int)"));
        assert_eq!(map.name_at(0x7f1c2d0b0180), None);
        assert_eq!(
            map.name_at(0x3e3a9c04310),
            Some("LazyCompile:~blockingRead /app/server.js:12:22")
        );
        assert_eq!(map.name_at(0x7f3c4a2f100a), Some("py::handle:/srv/app.py"));
        assert_eq!(map.name_at(0x7f3c4a2f100b), None);
        assert_eq!(map.name_at(0), None);
    }

    /// Check that garbage is skipped and counted, and an unterminated (half-written) last
    /// line is neither used nor counted as malformed: it is read again once complete.
    #[test]
    fn skips_garbage_and_half_written_lines() {
        let text = concat!(
            "hello world\n",
            "\n",
            "zz 10 bad start\n",
            "1000 10\n",
            "1000 0 empty\n",
            "0x 10 no digits\n",
            "2000 10 good one\r\n",
            "3000 1",
        );
        let mut map = PerfMap::default();
        let consumed = map.add_text(text);
        assert_eq!(&text[consumed..], "3000 1");
        assert_eq!(map.malformed_lines(), 5);
        assert_eq!(map.len(), 1);
        assert_eq!(map.name_at(0x2008), Some("good one"));
        assert_eq!(map.name_at(0x3000), None);
        let consumed = map.add_text("3000 10 finished\n");
        assert_eq!(consumed, 17);
        assert_eq!(map.name_at(0x3000), Some("finished"));
        assert_eq!(map.malformed_lines(), 5);
    }

    /// Check that a later line covering the same code wins, and that the parts of older
    /// ranges outside it keep their names.
    #[test]
    fn later_lines_win() {
        let map = PerfMap::parse(concat!(
            "1000 100 old\n",
            "1040 20 inner\n",
            "1000 100 recompiled\n",
            "2000 100 left\n",
            "2080 100 right\n",
            "2040 80 middle\n",
            "3000 100 outer\n",
            "3040 10 hole\n",
        ));
        assert_eq!(map.name_at(0x1000), Some("recompiled"));
        assert_eq!(map.name_at(0x1045), Some("recompiled"));
        assert_eq!(map.name_at(0x10ff), Some("recompiled"));
        assert_eq!(map.name_at(0x203f), Some("left"));
        assert_eq!(map.name_at(0x2040), Some("middle"));
        assert_eq!(map.name_at(0x20bf), Some("middle"));
        assert_eq!(map.name_at(0x20c0), Some("right"));
        assert_eq!(map.name_at(0x217f), Some("right"));
        assert_eq!(map.name_at(0x2180), None);
        assert_eq!(map.name_at(0x303f), Some("outer"));
        assert_eq!(map.name_at(0x3045), Some("hole"));
        assert_eq!(map.name_at(0x3050), Some("outer"));
        assert_eq!(map.name_at(0x30ff), Some("outer"));
    }

    /// Check that the namespace pid is the last `NSpid:` field, or `Pid:` without one.
    #[test]
    fn namespace_pids() {
        assert_eq!(
            namespace_pid("Name:\tnode\nPid:\t4242\nNSpid:\t4242\t17\n"),
            Some(17)
        );
        assert_eq!(namespace_pid("Pid:\t4242\n"), Some(4242));
        assert_eq!(namespace_pid("Name:\tx\n"), None);
    }

    /// Check that a live process's map is found under its pid, read, and read again from
    /// where it stopped after the runtime appended (our own process plays the runtime).
    #[test]
    fn reads_own_map_and_appends() {
        use std::io::Write;
        let pid = std::process::id();
        let path = format!("/tmp/perf-{pid}.map");
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(b"1000 10 first\n2000 1").unwrap();
        let mut file = PerfMapFile::open(pid).expect("own map found");
        assert_eq!(file.map.name_at(0x1000), Some("first"));
        assert_eq!(file.map.name_at(0x2000), None);
        assert!(!file.read_appended(), "nothing new");
        f.write_all(b"0 half\n").unwrap();
        assert!(file.read_appended());
        assert_eq!(file.map.name_at(0x2000), Some("half"));
        fs::remove_file(&path).unwrap();
    }
}
