//! The asyncio task an event-loop thread is running when it blocks.
//!
//! Its coroutine's frames are already in the Python stack; the task's name is not. While a
//! task runs, the loop is inside `Handle._run` (`asyncio/events.py`), whose `self` is the
//! handle the loop took from its ready queue; the handle's `_callback` slot holds what steps
//! or wakes the task: with the C accelerator a `TaskStepMethWrapper`/`TaskWakeupMethWrapper`
//! (the task right after the object header; `_asyncio.`-prefixed from 3.12) or a built-in method bound to the task (its
//! `m_self`), with pure-Python asyncio a bound method (`__self__`). In the C task structure
//! the name follows the coroutine (`task_coro`, `task_name`, from 3.8 to 3.13), so the name is
//! the word after the first field that points to a `coroutine`: found by what it points to,
//! not by an offset per version. A name never asked for is still a number on 3.12+ (the task
//! is named `Task-N` lazily).

use super::{
    PyThread, PyVersion,
    objects::{self, type_name},
};
use crate::runtime::read_u64;

/// Words of the task object searched for its coroutine.
const TASK_WORDS: u64 = 48;

/// The name of the task `thread`'s event loop is running, if it runs one.
pub(crate) fn running_task(
    thread: &PyThread,
    version: PyVersion,
    read_mem: &dyn Fn(u64, &mut [u8]) -> bool,
) -> Option<String> {
    let handle = thread
        .frames
        .iter()
        .find(|f| f.is("/asyncio/events.py", "_run"))?
        .local("self")?;
    let callback = objects::member(handle, "_callback", read_mem)?;
    // Named `_asyncio.TaskStepMethWrapper` from 3.12 (a heap type), without the module
    // before.
    let callback_type = type_name(callback, read_mem)?;
    let callback_type = callback_type.rsplit('.').next().unwrap_or_default();
    let task = match callback_type {
        "TaskStepMethWrapper" | "TaskWakeupMethWrapper" => read_u64(callback + 16, read_mem),
        "builtin_function_or_method" | "method" => read_u64(callback + 24, read_mem),
        _ => None,
    }?;
    if !type_name(task, read_mem)?.ends_with("Task") {
        return None;
    }
    let coroutine = (2..TASK_WORDS).find(|i| {
        read_u64(task + i * 8, read_mem)
            .filter(|&p| p != 0)
            .and_then(|p| type_name(p, read_mem))
            .is_some_and(|t| t == "coroutine")
    })?;
    let name = read_u64(task + (coroutine + 1) * 8, read_mem)?;
    let text = objects::read_text(name, version, read_mem)?;
    Some(match type_name(name, read_mem)?.as_str() {
        "int" => format!("Task-{text}"),
        _ => text,
    })
}
