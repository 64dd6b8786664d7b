"""py_new_threads: a thread per request, each waiting at once for known times, for
`profile --python` on threads younger than its 200 ms thread listing.

Held until stdin says "go"; then the main thread starts ITERATIONS threads, one every 300 ms,
each running `handle_request`, which right away calls
`request_sleep_site` (time.sleep, 20 ms) and `request_lock_site` (a timed acquire of a
threading.Lock the main thread holds, never got, 20 ms), timing each call with the monotonic
clock, then parks (on an Event) until the end. Its waits are over about 45 ms after it started:
unless a thread listing happens to fall in that time, only the tracer's own lookup at
switch-out gives them Python frames.

A native thread with no Python thread state (`native_waker.c`, the library named by
$STALLWATCH_NATIVE_WAKER, loaded with ctypes) wakes every 5 ms meanwhile: a thread of a
Python process the tracer never finds. It counts its wake-ups ("native_wakeups").

Prints a ready line once set up:
    {"pid": P, "version": "3.11.2", "ready": true}
and when done:
    {"pid": P, "version": "3.11.2", "threads": N, "native_wakeups": N,
     "sites": {"request_sleep_site": NS, "request_lock_site": NS}}
"""

import ctypes
import json
import os
import platform
import sys
import threading
import time

WAIT_S = 0.020
START_EVERY_S = 0.300
NATIVE_WAKE_US = 5000


def request_sleep_site(totals):
    t0 = time.monotonic_ns()
    time.sleep(WAIT_S)  # LINE: request_sleep_site
    totals["request_sleep_site"] += time.monotonic_ns() - t0


def request_lock_site(lock, totals):
    t0 = time.monotonic_ns()
    got = lock.acquire(timeout=WAIT_S)  # LINE: request_lock_site
    totals["request_lock_site"] += time.monotonic_ns() - t0
    assert not got


def handle_request(lock, totals, done):
    request_sleep_site(totals)
    request_lock_site(lock, totals)
    done.wait()


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    totals = {"request_sleep_site": 0, "request_lock_site": 0}
    lock = threading.Lock()
    lock.acquire()
    waker = ctypes.CDLL(os.environ["STALLWATCH_NATIVE_WAKER"])
    common = {"pid": os.getpid(), "version": platform.python_version()}
    print(json.dumps({**common, "ready": True}), flush=True)
    sys.stdin.readline()
    done = threading.Event()
    threads = []
    if waker.start_waker(NATIVE_WAKE_US) != 0:
        raise OSError("start_waker failed")
    for i in range(iterations):
        thread = threading.Thread(
            target=handle_request, args=(lock, totals, done), name=f"request-{i}"
        )
        thread.start()
        threads.append(thread)
        time.sleep(START_EVERY_S)
    done.set()
    for thread in threads:
        thread.join()
    native_wakeups = ctypes.c_long.in_dll(waker, "waker_wakeups").value
    print(
        json.dumps(
            {
                **common,
                "threads": iterations,
                "native_wakeups": native_wakeups,
                "sites": totals,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
