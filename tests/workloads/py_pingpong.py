"""py_pingpong: the Python context-switch-heavy workload of `cargo xtask bench`.

pingpong.c in Python: two processes pinned to CPU 0 (SCHED_BATCH, so a wakeup never preempts
the writer) pass one byte back and forth over two pipes for -d SECONDS, each blocking in
os.read() every round from a few Python frames deep, so every switch-out of a traced thread
has a Python stack to walk. Before measuring, both sides idle for --warmup seconds so that a
tracer started host-wide has found them. Prints one JSON line like pingpong.c:
    {"round_trips": N, "seconds": S, "round_trips_per_sec": R,
     "voluntary_switches": V, "involuntary_switches": I}
"""

import argparse
import json
import os
import resource
import time


def echo_loop(inp, out):
    while True:
        b = os.read(inp, 1)
        if not b:
            return
        os.write(out, b)


def bounce(to_child, to_parent):
    os.write(to_child, b"x")
    os.read(to_parent, 1)


def rally(to_child, to_parent, seconds):
    round_trips = 0
    start = time.monotonic()
    while True:
        bounce(to_child, to_parent)
        round_trips += 1
        if round_trips & 255 == 0 and time.monotonic() - start >= seconds:
            return round_trips, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        echo_loop(to_child_r, to_parent_w)
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    time.sleep(args.warmup)
    round_trips, elapsed = rally(to_child_w, to_parent_r, args.d)
    os.close(to_child_w)
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise SystemExit("py_pingpong: child failed")
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "round_trips": round_trips,
                "seconds": elapsed,
                "round_trips_per_sec": round_trips / elapsed,
                "voluntary_switches": me.ru_nvcsw + children.ru_nvcsw,
                "involuntary_switches": me.ru_nivcsw + children.ru_nivcsw,
            }
        )
    )


if __name__ == "__main__":
    main()
