//! Parsing `/proc/PID/fdinfo/FD`: the access flags, an eventfd's count, a timerfd's clock and
//! expiry, and an epoll fd's watched fds (`tfd:` lines), which `procfs` does not cover.

use std::collections::HashMap;

use super::{InspectError, read_text_optional};
use crate::model::TimerFdState;

/// One `tfd:` line of an epoll fd's `fdinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpollWatch {
    /// Watched fd number.
    pub fd: i32,
    /// Event mask (`events:`, hex).
    pub events: u32,
    /// Inode of the watched file (`ino:`, hex), to detect a reused fd number.
    pub inode: Option<u64>,
}

/// The parts of `/proc/PID/fdinfo/FD` that inspection uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FdInfoFields {
    /// `flags:` (octal open flags).
    pub flags: Option<u32>,
    /// `eventfd-count:` (hex).
    pub eventfd_count: Option<u64>,
    /// timerfd `clockid:`/`ticks:`/`it_value:`/`it_interval:`.
    pub timer: Option<TimerFdState>,
    /// epoll `tfd:` lines.
    pub epoll: Vec<EpollWatch>,
    /// signalfd `sigmask:` (hex).
    pub sigmask: Option<u64>,
}

pub(super) fn read_fdinfo(pid: u32, fd: i32) -> Result<Option<FdInfoFields>, InspectError> {
    Ok(
        read_text_optional(&format!("/proc/{pid}/fdinfo/{fd}"), &format!("/proc/{pid}"))?
            .map(|t| parse_fdinfo(&t)),
    )
}

/// Parses `/proc/PID/fdinfo/FD`. Unknown lines are ignored, malformed values left `None`.
pub(crate) fn parse_fdinfo(text: &str) -> FdInfoFields {
    let mut fields = FdInfoFields::default();
    let (mut clock, mut ticks, mut value, mut interval) = (None, None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let rest = rest.trim();
        match key.trim() {
            "flags" => fields.flags = u32::from_str_radix(rest, 8).ok(),
            "eventfd-count" => fields.eventfd_count = u64::from_str_radix(rest, 16).ok(),
            "sigmask" => fields.sigmask = u64::from_str_radix(rest, 16).ok(),
            "clockid" => clock = rest.parse::<i64>().ok(),
            "ticks" => ticks = rest.parse::<u64>().ok(),
            "it_value" => value = parse_sec_nsec_pair(rest),
            "it_interval" => interval = parse_sec_nsec_pair(rest),
            "tfd" => {
                if let Some(watch) = parse_tfd_line(line) {
                    fields.epoll.push(watch);
                }
            }
            _ => {}
        }
    }
    if let (Some(clock), Some(value)) = (clock, value) {
        fields.timer = Some(TimerFdState {
            clock_id: clock,
            next_expiry_ns: value,
            interval_ns: interval.unwrap_or(0),
            ticks: ticks.unwrap_or(0),
        });
    }
    fields
}

/// `(0, 98929393)` -> ns.
fn parse_sec_nsec_pair(text: &str) -> Option<u64> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let (sec, nsec) = inner.split_once(',')?;
    let sec: u64 = sec.trim().parse().ok()?;
    let nsec: u64 = nsec.trim().parse().ok()?;
    sec.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// `tfd:        5 events:       19 data:                5  pos:0 ino:5f sdev:f`.
fn parse_tfd_line(line: &str) -> Option<EpollWatch> {
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut tokens = line.split_ascii_whitespace();
    while let Some(token) = tokens.next() {
        match token.split_once(':') {
            Some((key, "")) => {
                if let Some(value) = tokens.next() {
                    values.insert(key, value);
                }
            }
            Some((key, value)) => {
                values.insert(key, value);
            }
            None => {}
        }
    }
    Some(EpollWatch {
        fd: values.get("tfd")?.parse().ok()?,
        events: u32::from_str_radix(values.get("events")?, 16).ok()?,
        inode: values
            .get("ino")
            .and_then(|v| u64::from_str_radix(v, 16).ok()),
    })
}
