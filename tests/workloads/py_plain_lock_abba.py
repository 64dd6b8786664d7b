"""py_plain_lock_abba: two Python threads deadlocked on plain `threading.Lock`s, for the
`stallwatch watch` verdict tests (the true-positive twin of `py_idle_pool.py`).

Thread "one" takes lock A then lock B, thread "two" takes B then A, each pausing 200 ms
between its two locks; the main thread joins "one". A plain Lock records no owner, so no
cycle can be shown: every thread waits on a futex of the process and two of them wait for
locks, which is what `process_stalled` needs.

Output (stdout, one line each): `pid <PID>`, `version <X.Y.Z>`, `tid main <TID>`,
`tid one <TID>`, `tid two <TID>`, then `READY` once both have their first lock.
Options: --timeout-s N (default 120: SIGALRM then ends the program).
"""

import platform
import signal
import sys
import threading
import time


_print_lock = threading.Lock()  # one whole line at a time: the two threads print at once


def take_both(first, second, name, started):
    with _print_lock:
        print(f"tid {name} {threading.get_native_id()}", flush=True)
    with first:
        started.release()
        time.sleep(0.2)
        with second:
            pass


def main():
    timeout_s = 120
    if "--timeout-s" in sys.argv:
        timeout_s = int(sys.argv[sys.argv.index("--timeout-s") + 1])
    signal.alarm(timeout_s)
    print(f"pid {threading.get_native_id()}", flush=True)
    print(f"version {platform.python_version()}", flush=True)
    print(f"tid main {threading.get_native_id()}", flush=True)
    lock_a, lock_b = threading.Lock(), threading.Lock()
    started = threading.Semaphore(0)
    threads = [
        threading.Thread(target=take_both, args=(lock_a, lock_b, "one", started), name="one"),
        threading.Thread(target=take_both, args=(lock_b, lock_a, "two", started), name="two"),
    ]
    for t in threads:
        t.start()
    started.acquire()
    started.acquire()
    print("READY", flush=True)
    threads[0].join()


if __name__ == "__main__":
    main()
