//! Native event loops known from frames: libuv (Node's main thread, uvloop), glib, libevent,
//! libev, tokio.
//!
//! A loop that was already stuck when `watch` attached never returns from a poll while it is
//! watched, so poll returns seen live cannot tell it; its frames can. A thread runs a loop
//! when a frame of its stack is one of a library's loop functions (`uv_run`,
//! `g_main_context_iterate`, ...). Walking out from the innermost frame past the wait's
//! plumbing (libc's and std's syscall wrappers, futex and condition-variable code, which any
//! blocking call goes through), the first named frame says where the thread waits: in the
//! loop's own machinery (its poll, a tokio worker's park) it is waiting for events; anywhere
//! else it is the call that blocked the loop.
//!
//! Names are matched as substrings of demangled names, as the runtimes' wait names are, so
//! a library linked statically (libuv inside `node`) is still known.

use crate::model::Frame;

/// One library's event loop.
struct LoopLibrary {
    /// Short name for reports.
    name: &'static str,
    /// Frames that run the loop: one of them on the stack makes the thread a loop thread.
    runs_loop: &'static [&'static str],
    /// Frames of the loop's own waiting (its poll, its park): innermost past the plumbing,
    /// the thread waits for events.
    machinery: &'static [&'static str],
    /// Frames that make a stack not a loop though a loop frame is on it (tokio's blocking
    /// pool runs under `tokio::runtime::` frames and is meant to block).
    not_a_loop: &'static [&'static str],
}

/// The loops known, first match wins.
const LIBRARIES: &[LoopLibrary] = &[
    LoopLibrary {
        name: "libuv",
        runs_loop: &["uv_run"],
        machinery: &[
            "uv_run",
            "uv__io_poll",
            "uv__epoll_ctl",
            "uv__platform_invalidate_fd",
        ],
        not_a_loop: &[],
    },
    LoopLibrary {
        name: "glib",
        runs_loop: &["g_main_context_iterate", "g_main_loop_run"],
        machinery: &["g_main_context_", "g_main_loop_run", "g_poll", "g_wakeup_"],
        not_a_loop: &[],
    },
    LoopLibrary {
        name: "libevent",
        runs_loop: &["event_base_loop", "event_base_dispatch"],
        machinery: &[
            "event_base_loop",
            "event_base_dispatch",
            "epoll_dispatch",
            "poll_dispatch",
            "select_dispatch",
            "evthread_",
        ],
        not_a_loop: &[],
    },
    LoopLibrary {
        name: "libev",
        runs_loop: &["ev_run"],
        machinery: &["ev_run", "epoll_poll", "poll_poll", "select_poll"],
        not_a_loop: &[],
    },
    LoopLibrary {
        name: "tokio",
        runs_loop: &[
            "tokio::runtime::scheduler::",
            "tokio::runtime::park::CachedParkThread::block_on",
            "tokio::runtime::runtime::Runtime::block_on",
        ],
        machinery: &[
            "tokio::runtime::park",
            "tokio::runtime::runtime::",
            "tokio::runtime::scheduler::",
            "tokio::runtime::driver",
            "tokio::runtime::io::",
            "tokio::runtime::time::",
            "mio::poll",
        ],
        not_a_loop: &["tokio::runtime::blocking::", "block_in_place"],
    },
];

/// Name prefixes (lower case, leading underscores trimmed) of the code every blocking call
/// goes through on its way to the kernel: syscall wrappers, futex and condition-variable code
/// of libc, Rust's std, parking_lot and the loop libraries' own thread primitives. Skipped to
/// find where a thread waits.
const PLUMBING: &[&str] = &[
    "syscall",
    "futex",
    "pthread_",
    "gi_",
    "libc_",
    "lll_",
    "std::sys::",
    "std::sync::",
    "std::thread::park",
    "std::thread::thread::park",
    "parking_lot",
    "core::ops::function",
    "uv_cond_",
    "uv_mutex_",
    "uv_sem_",
    "uv_rwlock_",
    "uv_",
    "v8::base::",
    "g_cond_",
    "g_mutex_",
    "evthread_posix_",
];

/// Object files whose frames are all plumbing (the C library and the dynamic loader).
const PLUMBING_MODULES: &[&str] = &["/libc.so", "/libc-", "/libpthread", "/ld-linux"];

/// What a thread's frames say about the event loop it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoopInFrames {
    /// The loop's library (`libuv`, `glib`, ...).
    pub library: &'static str,
    /// Where it waits outside the loop's machinery: the first named frame past the wait's
    /// plumbing, walking out from the innermost. `None` when it waits in the loop's own
    /// machinery (waiting for events).
    pub blocking_call: Option<String>,
}

/// The event loop a user stack (innermost first) runs, if its frames show one.
pub(crate) fn loop_in_frames(user_stack: &[Frame]) -> Option<LoopInFrames> {
    let lower: Vec<Option<String>> = user_stack
        .iter()
        .map(|f| f.name.as_deref().map(str::to_ascii_lowercase))
        .collect();
    let has = |names: &[&str]| {
        lower
            .iter()
            .flatten()
            .any(|n| names.iter().any(|m| n.contains(&m.to_ascii_lowercase())))
    };
    let library = LIBRARIES
        .iter()
        .find(|l| has(l.runs_loop) && !has(l.not_a_loop))?;
    let mut blocking_call = None;
    for (frame, name) in user_stack.iter().zip(&lower) {
        let Some(name) = name.as_deref() else {
            continue;
        };
        if library
            .machinery
            .iter()
            .any(|m| name.contains(&m.to_ascii_lowercase()))
        {
            break;
        }
        if !is_plumbing(name) && !in_plumbing_module(frame) {
            blocking_call = frame.name.clone();
            break;
        }
    }
    Some(LoopInFrames {
        library: library.name,
        blocking_call,
    })
}

fn is_plumbing(lower_name: &str) -> bool {
    let name = lower_name.trim_start_matches('_');
    PLUMBING.iter().any(|p| name.starts_with(p))
}

fn in_plumbing_module(frame: &Frame) -> bool {
    frame
        .module
        .as_deref()
        .is_some_and(|m| PLUMBING_MODULES.iter().any(|p| m.contains(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::fixtures::frames;

    /// Check that a libuv loop blocked in a callback names the callback, past libc's and
    /// libuv's condition-variable plumbing and unnamed (JIT) frames.
    #[test]
    fn libuv_loop_blocked_names_the_call() {
        let mut stack = frames(&[
            "__futex_abstimed_wait_common",
            "pthread_cond_wait",
            "uv_cond_wait",
            "v8::base::ConditionVariable::Wait",
            "v8::internal::FutexEmulation::WaitSync",
        ]);
        stack.push(Frame::default());
        stack.extend(frames(&["uv__run_timers", "uv_run", "node::SpinEventLoop"]));
        let found = loop_in_frames(&stack).expect("a loop");
        assert_eq!(found.library, "libuv");
        assert_eq!(
            found.blocking_call.as_deref(),
            Some("v8::internal::FutexEmulation::WaitSync")
        );
    }

    /// Check that a frame in libc (by its module) is plumbing whatever its name.
    #[test]
    fn libc_frames_are_plumbing_by_module() {
        let mut stack = frames(&["read", "on_request", "uv__io_poll", "uv_run", "main"]);
        stack[0].module = Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned());
        let found = loop_in_frames(&stack).expect("a loop");
        assert_eq!(found.blocking_call.as_deref(), Some("on_request"));
    }

    /// Check that waiting in the loop's own machinery (glib's poll, a parked tokio worker) is
    /// not a blocking call, and that tokio's blocking pool is not a loop.
    #[test]
    fn own_waits_and_blocking_pools() {
        let mut glib = frames(&["poll", "g_poll", "g_main_context_iterate"]);
        glib[0].module = Some("/lib/x86_64-linux-gnu/libc.so.6".to_owned());
        let found = loop_in_frames(&glib).expect("glib");
        assert_eq!((found.library, found.blocking_call), ("glib", None));
        let parked = frames(&[
            "syscall",
            "std::sys::pal::unix::futex::futex_wait",
            "std::sync::condvar::Condvar::wait",
            "tokio::runtime::park::Inner::park",
            "tokio::runtime::scheduler::multi_thread::worker::Context::park",
            "tokio::runtime::scheduler::multi_thread::worker::run",
        ]);
        assert_eq!(loop_in_frames(&parked).expect("tokio").blocking_call, None);
        let sleeping = frames(&[
            "__GI___clock_nanosleep",
            "std::thread::sleep",
            "app::handler::{{closure}}",
            "tokio::runtime::park::CachedParkThread::block_on",
        ]);
        assert_eq!(
            loop_in_frames(&sleeping)
                .expect("tokio")
                .blocking_call
                .as_deref(),
            Some("std::thread::sleep")
        );
        let pool = frames(&[
            "read",
            "std::fs::read",
            "tokio::runtime::blocking::pool::Inner::run",
            "tokio::runtime::scheduler::multi_thread::worker::run",
        ]);
        assert_eq!(loop_in_frames(&pool), None);
        assert_eq!(loop_in_frames(&frames(&["read", "main"])), None);
    }
}
