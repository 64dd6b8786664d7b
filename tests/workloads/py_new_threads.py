"""py_new_threads: a thread per request, each waiting at once for known times, for
`profile --python` on threads younger than its 200 ms thread listing.

Held until stdin says "go"; then the main thread starts ITERATIONS threads, one every 300 ms,
each running `handle_request`, which right away calls
`request_sleep_site` (time.sleep, 20 ms) and `request_lock_site` (a timed acquire of a
threading.Lock the main thread holds, never got, 20 ms), timing each call with the monotonic
clock, then parks (on an Event) until the end. Its waits are over about 45 ms after it started:
unless a thread listing happens to fall in that time, only the tracer's own lookup at
switch-out gives them Python frames. (The threads exit only once the watchdog below is
stopped: faulthandler's dump reads the thread list unlocked and crashes on a thread state
being freed.)

faulthandler's watchdog (a C thread with no Python thread state) wakes every 5 ms meanwhile
and writes a traceback to a temporary file: a thread of a Python process the tracer never
finds. Its wake-ups are counted from the file ("watchdog_dumps").

Prints a ready line once set up:
    {"pid": P, "version": "3.11.2", "ready": true}
and when done:
    {"pid": P, "version": "3.11.2", "threads": N, "watchdog_dumps": N,
     "sites": {"request_sleep_site": NS, "request_lock_site": NS}}
"""

import faulthandler
import json
import os
import platform
import sys
import tempfile
import threading
import time

WAIT_S = 0.020
START_EVERY_S = 0.300
WATCHDOG_S = 0.005


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
    dumps = tempfile.TemporaryFile(mode="w+")
    common = {"pid": os.getpid(), "version": platform.python_version()}
    print(json.dumps({**common, "ready": True}), flush=True)
    sys.stdin.readline()
    done = threading.Event()
    threads = []
    faulthandler.dump_traceback_later(WATCHDOG_S, repeat=True, file=dumps)
    for i in range(iterations):
        thread = threading.Thread(
            target=handle_request, args=(lock, totals, done), name=f"request-{i}"
        )
        thread.start()
        threads.append(thread)
        time.sleep(START_EVERY_S)
    faulthandler.cancel_dump_traceback_later()
    done.set()
    for thread in threads:
        thread.join()
    dumps.seek(0)
    watchdog_dumps = sum(1 for line in dumps if line.startswith("Timeout ("))
    print(
        json.dumps(
            {
                **common,
                "threads": iterations,
                "watchdog_dumps": watchdog_dumps,
                "sites": totals,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
