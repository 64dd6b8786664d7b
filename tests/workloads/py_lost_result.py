"""py_lost_result: a Python thread pool whose result never comes, for the `stallwatch watch`
verdict tests (the true-positive twin of `py_idle_pool.py`).

A ThreadPoolExecutor with 3 workers runs 3 short jobs (so every worker thread exists). Then
main sends a request the way a client library does: a pool job registers a
`concurrent.futures.Future` for the reply and puts the request on a queue that nobody reads
(the reply is lost), and main waits in `reply.result()`. The workers sit idle in
`SimpleQueue.get`: no thread will ever set that future. A hang.

Output (stdout, one line each): `pid <PID>`, `version <X.Y.Z>`, `tid main <TID>`,
`tid worker <TID>` per worker, then `READY` just before main waits for the reply.
Options: --timeout-s N (default 120: SIGALRM then ends the program; the wait itself has no
timeout).
"""

import concurrent.futures
import platform
import queue
import signal
import sys
import threading

WORKERS = 3
# Requests waiting to be sent: nobody reads them.
OUTBOX = queue.SimpleQueue()
# Replies awaited, by request id.
PENDING = {}


def job(barrier):
    barrier.wait()
    return threading.get_native_id()


def send_request(request_id):
    reply = concurrent.futures.Future()
    PENDING[request_id] = reply
    OUTBOX.put(("GET", request_id))
    return reply


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
    reply = executor.submit(send_request, 1).result()
    print("READY", flush=True)
    reply.result()


if __name__ == "__main__":
    main()
