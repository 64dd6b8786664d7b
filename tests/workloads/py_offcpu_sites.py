"""py_offcpu_sites: Python functions that wait off-CPU for known totals, for `profile --python`.

Three threads, started at once and held at an Event until stdin says "go", each call one
site function ITERATIONS times; every call waits about 20 ms and is timed with the monotonic
clock (2.7: the wall clock) around the blocking call:
  - sleep_site: time.sleep;
  - lock_site: acquire, with a timeout, a threading.Lock the main thread holds (never got; on
    2.7, whose acquire takes no timeout, a releaser thread lets it go every 20 ms);
  - recv_site: recv on a socket a feeder thread writes one byte to every 20 ms;
and a fourth thread alternates short_sleep_site (10 ms) and long_sleep_site (30 ms), which
call time.sleep from the same place of the same caller: the native stack, registers and all,
is the same for both, only the Python stack tells them apart.
Prints a ready line once the threads exist:
    {"pid": P, "version": "3.11.2", "ready": true}
and when done:
    {"pid": P, "version": "3.11.2", "sites": {"sleep_site": NS, "lock_site": NS, ...}}
"""

import json
import os
import platform
import socket
import sys
import threading
import time

WAIT_S = 0.020


# 2.7's Lock.acquire takes no timeout: there a releaser thread lets the lock go every WAIT_S
# instead, and lock_site gets it each time.
TIMED_LOCKS = sys.version_info[0] >= 3
LOCK_WAIT = (True, WAIT_S) if TIMED_LOCKS else (True,)


def now_ns():
    # time.monotonic_ns is 3.7+; 3.6 has the same clock in float seconds, 2.7 only the
    # wall clock.
    if hasattr(time, "monotonic_ns"):
        return time.monotonic_ns()
    if hasattr(time, "monotonic"):
        return int(time.monotonic() * 1e9)
    return int(time.time() * 1e9)


def say(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def sleep_site(totals):
    t0 = now_ns()
    time.sleep(WAIT_S)  # LINE: sleep_site
    totals["sleep_site"] += now_ns() - t0


def lock_site(lock, totals):
    t0 = now_ns()
    got = lock.acquire(*LOCK_WAIT)  # LINE: lock_site
    totals["lock_site"] += now_ns() - t0
    assert got != TIMED_LOCKS


def recv_site(sock, totals):
    t0 = now_ns()
    data = sock.recv(1)  # LINE: recv_site
    totals["recv_site"] += now_ns() - t0
    assert data == b"x"


def timed_sleep(seconds):
    t0 = now_ns()
    time.sleep(seconds)  # LINE: timed_sleep
    return now_ns() - t0


def short_sleep_site(totals):
    totals["short_sleep_site"] += timed_sleep(WAIT_S / 2)  # LINE: short_sleep_site


def long_sleep_site(totals):
    totals["long_sleep_site"] += timed_sleep(WAIT_S * 1.5)  # LINE: long_sleep_site


def run_alternating(iterations, totals, go):
    go.wait()
    for i in range(iterations):
        if i % 2 == 0:
            short_sleep_site(totals)
        else:
            long_sleep_site(totals)


def releaser(lock, iterations, go):
    go.wait()
    for _ in range(iterations):
        time.sleep(WAIT_S)
        lock.release()


def feeder(sock, iterations, go):
    go.wait()
    for _ in range(iterations):
        time.sleep(WAIT_S)
        sock.send(b"x")


def run_sleeps(iterations, totals, go):
    go.wait()
    for _ in range(iterations):
        sleep_site(totals)


def run_lock_waits(iterations, lock, totals, go):
    go.wait()
    for _ in range(iterations):
        lock_site(lock, totals)


def run_reads(iterations, sock, totals, go):
    go.wait()
    for _ in range(iterations):
        recv_site(sock, totals)


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    totals = {
        "sleep_site": 0,
        "lock_site": 0,
        "recv_site": 0,
        "short_sleep_site": 0,
        "long_sleep_site": 0,
    }
    go = threading.Event()
    lock = threading.Lock()
    lock.acquire()
    reader, writer = socket.socketpair()
    threads = [
        threading.Thread(target=run_sleeps, args=(iterations, totals, go), name="sleeper"),
        threading.Thread(
            target=run_lock_waits, args=(iterations, lock, totals, go), name="locker"
        ),
        threading.Thread(target=run_reads, args=(iterations, reader, totals, go), name="reader"),
        threading.Thread(target=feeder, args=(writer, iterations, go), name="feeder"),
        threading.Thread(
            target=run_alternating, args=(iterations, totals, go), name="alternator"
        ),
    ]
    if not TIMED_LOCKS:
        threads.append(
            threading.Thread(target=releaser, args=(lock, iterations, go), name="releaser")
        )
    for t in threads:
        t.start()
    common = {"pid": os.getpid(), "version": platform.python_version()}
    say(dict(common, ready=True))
    sys.stdin.readline()
    go.set()
    for t in threads:
        t.join()
    say(dict(common, sites=totals))


if __name__ == "__main__":
    main()
