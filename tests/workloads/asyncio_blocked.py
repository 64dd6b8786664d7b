"""asyncio_blocked: an asyncio event loop that a coroutine blocks, for `stallwatch watch` tests.

The main thread runs an event loop with a 50 ms periodic task, so a healthy loop keeps cycling
through epoll_wait with short timeouts. After the warmup the coroutine `blocking_handler` makes a
blocking call on the loop thread, which stalls the whole loop:
    sleep   time.sleep(600)                      (clock_nanosleep)
    lock    lock.acquire() on a threading.Lock   (futex) that thread `holder` took and keeps
            forever while it sleeps in time.sleep.

Output (stdout, flushed per line), following tests/workloads/watch_common.h:
    pid <PID>
    tid loop <TID>           the main thread, which runs the loop (keeps the interpreter's name)
    tid holder <TID>         lock mode only
    READY                    once the loop has cycled
    BLOCKING                 immediately before the blocking call
Options: --warmup-s S (default 3) between READY and BLOCKING, --delay-ms N before the loop
starts, --timeout-s N (SIGALRM kills the process; default 120).
"""

import argparse
import asyncio
import ctypes
import os
import signal
import threading
import time

TICK_S = 0.05
PR_SET_NAME = 15


def emit(line):
    print(line, flush=True)


def set_thread_name(name):
    """Names the calling OS thread (Python 3.11's threading does not)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def hold_forever(lock, held, tid):
    set_thread_name("holder")
    tid.append(threading.get_native_id())
    lock.acquire()
    held.set()
    while True:
        time.sleep(3600)


async def tick():
    while True:
        await asyncio.sleep(TICK_S)


async def blocking_handler(mode, lock):
    """Blocks the event loop's thread: the stall under test."""
    emit("BLOCKING")
    if mode == "sleep":
        time.sleep(600)
    else:
        lock.acquire()


async def run(args, lock):
    ticker = asyncio.create_task(tick())
    # A few ticks so the loop has really cycled through epoll_wait.
    await asyncio.sleep(3 * TICK_S)
    emit("READY")
    await asyncio.sleep(args.warmup_s)
    await blocking_handler(args.mode, lock)
    ticker.cancel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sleep", "lock"])
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--timeout-s", type=int, default=120)
    args = parser.parse_args()
    signal.alarm(args.timeout_s)

    emit(f"pid {os.getpid()}")
    emit(f"tid loop {threading.get_native_id()}")
    lock = threading.Lock()
    if args.mode == "lock":
        held = threading.Event()
        tid = []
        threading.Thread(
            target=hold_forever, args=(lock, held, tid), name="holder", daemon=True
        ).start()
        held.wait()
        emit(f"tid holder {tid[0]}")
    time.sleep(args.delay_ms / 1000)
    asyncio.run(run(args, lock))


if __name__ == "__main__":
    main()
