"""py_lock_wait: a thread waiting on a plain threading.Lock held forever, for `watch` tests.

Thread "holder" takes a `threading.Lock` in `Holder.hold_forever` and then blocks in `os.read`
on a pipe nobody writes to, keeping the lock. The main thread calls `wait_for_lock`, which
blocks in `lock.acquire()`. A plain Lock records no owner (any thread may release it), so a
report about the waiter has nothing true to say about who holds it beyond "nobody known":
this workload checks that nothing is invented. The method gives a frame whose qualified name
(`Holder.hold_forever`, 3.11+) differs from its plain name.

Output (stdout, one line each): `pid <PID>`, `BLOCKING` before main blocks, then (from a
short-lived reporter thread, once both are stuck):
    {"workload": "py_lock_wait", "python": {"version", "executable", "pid", "threading_file"},
     "lock": "0x<id(lock)>", "lock_class": "_thread.lock",
     "threads": {"waiter": {"tid", "name": "MainThread", "waits": "lock"},
                 "holder": {"tid", "name": "holder", "holds": "lock", "waits": "read"}}}
Lines marked `# LINE: <tag>` are where each thread's Python frames stop (tests look them up).
Options: --delay-ms N (before main blocks), --timeout-s N (default 120).
"""

import os
import threading
import time

import py_stuck


class Holder:
    def __init__(self, lock, pipe_r):
        self.lock = lock
        self.pipe_r = pipe_r
        self.tid = None
        self.holding = threading.Event()

    def hold_forever(self):
        self.tid = threading.get_native_id()
        self.lock.acquire()
        self.holding.set()
        os.read(self.pipe_r, 1)  # LINE: holder-read


def wait_for_lock(lock):
    lock.acquire()  # LINE: waiter-acquire


def main():
    args = py_stuck.start_from_args(__doc__)

    lock = threading.Lock()
    pipe_r, pipe_w = os.pipe()
    holder = Holder(lock, pipe_r)
    threading.Thread(target=holder.hold_forever, name="holder", daemon=True).start()
    holder.holding.wait()
    waiter_tid = threading.get_native_id()
    lock_class = "{}.{}".format(type(lock).__module__, type(lock).__qualname__)
    facts = {
        "workload": "py_lock_wait",
        "python": py_stuck.python_facts(),
        "lock": hex(id(lock)),
        "lock_class": lock_class,
        "threads": {
            "waiter": {
                "tid": waiter_tid,
                "name": threading.current_thread().name,
                "waits": "lock",
            },
            "holder": {"tid": holder.tid, "name": "holder", "holds": "lock", "waits": "read"},
        },
    }
    py_stuck.report_when_stuck(
        lambda: {waiter_tid: py_stuck.SYS_FUTEX, holder.tid: py_stuck.SYS_READ},
        lambda: facts,
        timeout_s=args.delay_ms / 1000 + 20,
    )
    time.sleep(args.delay_ms / 1000)
    py_stuck.emit("BLOCKING")
    wait_for_lock(lock)  # LINE: waiter-main
    os.close(pipe_w)


if __name__ == "__main__":
    main()  # LINE: lock-module
