"""py_rlock_abba: an ABBA deadlock on two threading.RLock objects, for `watch` tests.

Thread "abba-a" takes RLock A in `take_first`, thread "abba-b" takes RLock B; both meet at a
barrier, then each takes the other's lock in `take_second` and blocks forever. The locks are
only ever function arguments (locals), never globals, so whoever names them must read them off
the threads' own frames and lock objects. The main thread prints the facts once both are stuck,
then joins "abba-a" (blocked by the deadlock).

Output (stdout, one line each): `pid <PID>`, `BLOCKING` before the threads start, then:
    {"workload": "py_rlock_abba", "python": {"version", "executable", "pid", "threading_file"},
     "locks": {"A": "0x<id(A)>", "B": "0x<id(B)>"}, "lock_class": "_thread.RLock",
     "threads": {"abba-a": {"tid", "holds": "A", "waits_for": "B", "owner": "abba-b"},
                 "abba-b": {"tid", "holds": "B", "waits_for": "A", "owner": "abba-a"},
                 "main": {"tid", "waits": "join", "on": "abba-a"}}}
Lines marked `# LINE: <tag>` are where each thread's Python frames stop (tests look them up).
Options: --delay-ms N (before the threads start), --timeout-s N (default 120).
"""

import threading
import time

import py_stuck


def take_first(lock):
    lock.acquire()


def take_second(lock):
    lock.acquire()  # LINE: abba-take-second


def lock_in_order(first, second, barrier, tids):
    tids[threading.current_thread().name] = threading.get_native_id()
    take_first(first)
    barrier.wait()
    take_second(second)  # LINE: abba-lock-in-order


def main():
    args = py_stuck.start_from_args(__doc__)
    time.sleep(args.delay_ms / 1000)

    lock_a, lock_b = threading.RLock(), threading.RLock()
    barrier = threading.Barrier(2)
    tids = {}
    py_stuck.emit("BLOCKING")
    thread_a = threading.Thread(
        target=lock_in_order, args=(lock_a, lock_b, barrier, tids), name="abba-a"
    )
    thread_b = threading.Thread(
        target=lock_in_order, args=(lock_b, lock_a, barrier, tids), name="abba-b"
    )
    thread_a.start()
    thread_b.start()
    while len(tids) < 2:
        time.sleep(0.01)
    py_stuck.wait_until_stuck(
        {tids["abba-a"]: py_stuck.SYS_FUTEX, tids["abba-b"]: py_stuck.SYS_FUTEX}
    )
    lock_class = "{}.{}".format(type(lock_a).__module__, type(lock_a).__qualname__)
    py_stuck.emit_facts(
        {
            "workload": "py_rlock_abba",
            "python": py_stuck.python_facts(),
            "locks": {"A": hex(id(lock_a)), "B": hex(id(lock_b))},
            "lock_class": lock_class,
            "threads": {
                "abba-a": {
                    "tid": tids["abba-a"],
                    "holds": "A",
                    "waits_for": "B",
                    "owner": "abba-b",
                },
                "abba-b": {
                    "tid": tids["abba-b"],
                    "holds": "B",
                    "waits_for": "A",
                    "owner": "abba-a",
                },
                "main": {"tid": threading.get_native_id(), "waits": "join", "on": "abba-a"},
            },
        }
    )
    del lock_a, lock_b
    thread_a.join()  # LINE: abba-main-join


if __name__ == "__main__":
    main()
