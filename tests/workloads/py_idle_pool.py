"""py_idle_pool: an idle Python thread pool, for the `stallwatch watch` verdict tests.

A ThreadPoolExecutor with 3 workers runs 3 short jobs (so every worker thread exists), then
sits idle: the workers wait for work in `SimpleQueue.get` (inside `_worker`), the main thread
waits in `Event.wait` on an event nobody sets. Nothing is wrong: a hang tool must call it idle.

Output (stdout, one line each): `pid <PID>`, `version <X.Y.Z>`, `tid main <TID>`,
`tid worker <TID>` per worker, then `READY` once the jobs are done.
Options: --timeout-s N (default 120: SIGALRM then ends the program; the waits themselves have
no timeout, as an idle pool's do not).
"""

import concurrent.futures
import platform
import signal
import sys
import threading

WORKERS = 3


def job(barrier):
    barrier.wait()
    return threading.get_native_id()


def main():
    timeout_s = 120
    if "--timeout-s" in sys.argv:
        timeout_s = int(sys.argv[sys.argv.index("--timeout-s") + 1])
    signal.alarm(timeout_s)
    print(f"pid {threading.get_native_id()}", flush=True)
    print(f"version {platform.python_version()}", flush=True)
    print(f"tid main {threading.get_native_id()}", flush=True)
    barrier = threading.Barrier(WORKERS)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
    futures = [executor.submit(job, barrier) for _ in range(WORKERS)]
    for tid in sorted(f.result() for f in futures):
        print(f"tid worker {tid}", flush=True)
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
