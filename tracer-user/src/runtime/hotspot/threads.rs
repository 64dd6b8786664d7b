//! The VM's Java threads and what each waits for: the monitor it waits to enter and its owner,
//! or the `java.util.concurrent` lock it is parked for and that lock's owner.
//!
//! - Threads: `ThreadsSMRSupport::_java_thread_list`, the current `ThreadsList` (`_length`
//!   `JavaThread*`s at `_threads`); each one's kernel tid is `_osthread->_thread_id`, its stack
//!   `[_stack_base - _stack_size, _stack_base)`, its `java.lang.Thread` the oop behind
//!   `_threadObj`.
//! - Monitors (`synchronized`): a thread blocked entering one has `_current_pending_monitor`
//!   set. Up to JDK 20 the monitor's `_owner` is the owning `JavaThread*`, or, for an object
//!   the owner had stack-locked before the monitor was inflated, the address of a `BasicLock`
//!   in the owner's stack frame: that address is mapped to the thread whose stack holds it.
//!   The locked object is behind `_object` (a `WeakHandle` since JDK 16).
//! - `j.u.c` locks: `LockSupport.park(blocker)` stores the lock (the `AbstractQueuedSynchronizer`
//!   of a `ReentrantLock`, ...) in `Thread.parkBlocker` while the thread parks; an
//!   `AbstractOwnableSynchronizer` names its owner in `exclusiveOwnerThread`, a
//!   `java.lang.Thread` whose `eetop` is its `JavaThread*`. A blocker that is a
//!   `FutureTask` (or a subclass) or a `CompletableFuture$Signaller` is a wait for a result:
//!   `FutureTask.get` and `CompletableFuture.get`/`join` park on them.
//! - Service threads: the VM's own Java threads (compilers, reference handler, finalizer,
//!   signal dispatcher, service and notification threads) belong to the `system` thread
//!   group, the one without a parent; the common cleaner is a `jdk.internal.misc.
//!   InnocuousThread`. The group is `Thread.group` up to JDK 18, `Thread.holder.group` since.
//!
//! The thread list can change while it is read (the VM is never stopped): every pointer is
//! checked against what was read, and a thread that cannot be read is left out.

use std::ops::Range;

use super::{HotspotError, heap::Heap, layout::Layout, vmstructs::Reader};
use crate::model::{RuntimeWait, RuntimeWaitKind};

/// More Java threads than any real VM runs: a guard against a torn list.
const MAX_THREADS: u32 = 100_000;
/// `ObjectMonitor::DEFLATER_MARKER` (JDK 15 to 21): the monitor is being deflated, no owner.
const DEFLATER_MARKER: u64 = u64::MAX;
/// Parking blockers that are futures: their class, or a superclass of it.
const FUTURE_CLASSES: &[&str] = &["java.util.concurrent.FutureTask"];
/// Parking blockers that stand for a future: the class itself.
const FUTURE_WAITER_CLASSES: &[&str] = &["java.util.concurrent.CompletableFuture$Signaller"];
/// The class of the JDK's own threads outside the system group (the common cleaner).
const INNOCUOUS_THREAD: &str = "jdk.internal.misc.InnocuousThread";
/// How many superclasses are followed, at most.
const MAX_SUPERS: usize = 32;

/// One Java thread of the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JavaThread {
    /// Its `JavaThread*`.
    pub addr: u64,
    /// Its kernel tid.
    pub tid: u32,
    /// Its stack's address range.
    pub stack: Range<u64>,
    /// Its `java.lang.Thread` object, 0 if it has none yet.
    pub thread_obj: u64,
    /// The `ObjectMonitor*` it waits to enter, 0 if none.
    pub pending_monitor: u64,
}

/// Every Java thread of the VM.
pub(crate) fn java_threads(
    reader: &Reader<'_>,
    layout: &Layout,
) -> Result<Vec<JavaThread>, HotspotError> {
    let list = reader.u64(layout.java_thread_list)?;
    if list == 0 {
        return Err(HotspotError::Implausible("no thread list yet"));
    }
    let length = reader.u32(list + layout.list_length)?;
    if length > MAX_THREADS {
        return Err(HotspotError::Implausible("thread list length"));
    }
    let array = reader.u64(list + layout.list_threads)?;
    let mut threads = Vec::with_capacity(length as usize);
    for i in 0..u64::from(length) {
        let Ok(addr) = reader.u64(array + i * 8) else {
            continue;
        };
        if let Ok(thread) = java_thread(reader, layout, addr) {
            threads.push(thread);
        }
    }
    Ok(threads)
}

/// The thread at `JavaThread*` `addr`.
fn java_thread(
    reader: &Reader<'_>,
    layout: &Layout,
    addr: u64,
) -> Result<JavaThread, HotspotError> {
    let osthread = reader.u64(addr + layout.thread_osthread)?;
    if osthread == 0 {
        return Err(HotspotError::Implausible("thread without OSThread"));
    }
    let tid = reader.u32(osthread + layout.osthread_tid)?;
    let base = reader.u64(addr + layout.thread_stack_base)?;
    let size = reader.u64(addr + layout.thread_stack_size)?;
    // `_threadObj` is an `OopHandle` inside the thread: its `_obj` points at the oop's slot.
    let slot = reader.u64(addr + layout.thread_obj + layout.handle_obj)?;
    let thread_obj = match slot {
        0 => 0,
        slot => reader.u64(slot)?,
    };
    Ok(JavaThread {
        addr,
        tid,
        stack: base.saturating_sub(size)..base,
        thread_obj,
        pending_monitor: reader.u64(addr + layout.pending_monitor)?,
    })
}

/// The tid of the thread an owner word names: a `JavaThread*`, or an address in a thread's
/// stack (a `BasicLock` of a stack-locked, then inflated, object).
pub(crate) fn owner_tid(owner: u64, threads: &[JavaThread]) -> Option<u32> {
    if owner == 0 || owner == DEFLATER_MARKER {
        return None;
    }
    threads
        .iter()
        .find(|t| t.addr == owner)
        .or_else(|| threads.iter().find(|t| t.stack.contains(&owner)))
        .map(|t| t.tid)
}

/// The Java name of `thread` (`java.lang.Thread.name`).
pub(crate) fn name(heap: &mut Heap<'_>, thread: &JavaThread) -> Result<String, HotspotError> {
    if thread.thread_obj == 0 {
        return Err(HotspotError::Implausible("thread without Thread object"));
    }
    let name = heap
        .reference_field(thread.thread_obj, "name")?
        .filter(|&n| n != 0)
        .ok_or(HotspotError::MissingField("Thread.name".into()))?;
    heap.string(name)
}

/// The monitor `thread` waits to enter, as a lock wait: the object (its address, as `jstack`
/// prints it, else the monitor's), its class and its owner.
pub(crate) fn monitor_wait(
    heap: &mut Heap<'_>,
    thread: &JavaThread,
    threads: &[JavaThread],
) -> Result<Option<RuntimeWait>, HotspotError> {
    let monitor = thread.pending_monitor;
    if monitor == 0 {
        return Ok(None);
    }
    let layout = heap.layout;
    let owner = heap.reader.u64(monitor + layout.monitor_owner)?;
    // `_object` is a `WeakHandle` inside the monitor: its `_obj` points at the oop's slot.
    let slot = heap
        .reader
        .u64(monitor + layout.monitor_object + layout.handle_obj)?;
    let object = match slot {
        0 => 0,
        slot => heap.reader.u64(slot).unwrap_or(0),
    };
    let class = match object {
        0 => None,
        oop => heap.klass_of(oop).and_then(|k| heap.class_name(k)).ok(),
    };
    Ok(Some(RuntimeWait {
        kind: RuntimeWaitKind::Lock,
        object: if object != 0 { object } else { monitor },
        class,
        owner_tid: owner_tid(owner, threads).filter(|&tid| tid != thread.tid),
    }))
}

/// What `thread` is parked for (`LockSupport.park(blocker)`): a lock wait with its owner for
/// an owned `AbstractOwnableSynchronizer` (`ReentrantLock`, a write lock), else a condition on
/// the blocker (a latch, a future, a lock nobody owns: a read lock).
pub(crate) fn park_wait(
    heap: &mut Heap<'_>,
    thread: &JavaThread,
    threads: &[JavaThread],
) -> Result<Option<RuntimeWait>, HotspotError> {
    if thread.thread_obj == 0 {
        return Ok(None);
    }
    let Some(blocker) = heap
        .reference_field(thread.thread_obj, "parkBlocker")?
        .filter(|&b| b != 0)
    else {
        return Ok(None);
    };
    let class = heap.klass_of(blocker).and_then(|k| heap.class_name(k)).ok();
    let owner_obj = heap
        .reference_field(blocker, "exclusiveOwnerThread")?
        .filter(|&o| o != 0);
    let owner_tid = match owner_obj {
        Some(owner) => heap
            .long_field(owner, "eetop")?
            .and_then(|eetop| threads.iter().find(|t| t.addr == eetop))
            .map(|t| t.tid)
            .filter(|&tid| tid != thread.tid),
        None => None,
    };
    let kind = if owner_obj.is_some() {
        RuntimeWaitKind::Lock
    } else if is_future(heap, blocker, class.as_deref()) {
        RuntimeWaitKind::Result
    } else {
        RuntimeWaitKind::Condition
    };
    Ok(Some(RuntimeWait {
        kind,
        object: blocker,
        class,
        owner_tid,
    }))
}

/// Whether a parking blocker of class `class` is a future (or stands for one).
fn is_future(heap: &Heap<'_>, blocker: u64, class: Option<&str>) -> bool {
    if class.is_some_and(|c| FUTURE_WAITER_CLASSES.contains(&c)) {
        return true;
    }
    let Ok(mut klass) = heap.klass_of(blocker) else {
        return false;
    };
    for _ in 0..MAX_SUPERS {
        if klass == 0 {
            break;
        }
        if heap
            .class_name(klass)
            .is_ok_and(|name| FUTURE_CLASSES.contains(&name.as_str()))
        {
            return true;
        }
        let Ok(next) = heap.reader.u64(klass + heap.layout.klass_super) else {
            break;
        };
        klass = next;
    }
    false
}

/// Whether `thread` is one the VM runs for itself: in the `system` thread group, or the
/// common cleaner. A thread whose group cannot be read is taken for a program thread.
pub(crate) fn is_service(heap: &mut Heap<'_>, thread: &JavaThread) -> bool {
    if thread.thread_obj == 0 {
        return false;
    }
    let class = heap
        .klass_of(thread.thread_obj)
        .and_then(|k| heap.class_name(k));
    if class.is_ok_and(|c| c == INNOCUOUS_THREAD) {
        return true;
    }
    let group = match heap.reference_field(thread.thread_obj, "group") {
        Ok(Some(group)) => Some(group),
        Ok(None) => heap
            .reference_field(thread.thread_obj, "holder")
            .ok()
            .flatten()
            .filter(|&h| h != 0)
            .and_then(|holder| heap.reference_field(holder, "group").ok().flatten()),
        Err(_) => None,
    };
    // A terminated thread has no group (null): not a service thread.
    let Some(group) = group.filter(|&g| g != 0) else {
        return false;
    };
    matches!(heap.reference_field(group, "parent"), Ok(Some(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(addr: u64, tid: u32, stack_base: u64) -> JavaThread {
        JavaThread {
            addr,
            tid,
            stack: stack_base - 0x10_0000..stack_base,
            thread_obj: 0,
            pending_monitor: 0,
        }
    }

    /// Check that a monitor owner is a `JavaThread*` or a `BasicLock` in the owner's stack,
    /// and that no owner, the deflater's marker and stray addresses name nobody.
    #[test]
    fn owner_is_a_thread_or_a_lock_on_its_stack() {
        let threads = [
            thread(0x7f93_0800_1000, 101, 0x7f93_7150_0000),
            thread(0x7f93_0800_9000, 102, 0x7f93_7140_0000),
        ];
        assert_eq!(owner_tid(0x7f93_0800_9000, &threads), Some(102));
        assert_eq!(owner_tid(0x7f93_714f_d6c0, &threads), Some(101));
        assert_eq!(owner_tid(0x7f93_713f_d6c0, &threads), Some(102));
        assert_eq!(owner_tid(0, &threads), None);
        assert_eq!(owner_tid(DEFLATER_MARKER, &threads), None);
        assert_eq!(owner_tid(0x1234, &threads), None);
    }
}
