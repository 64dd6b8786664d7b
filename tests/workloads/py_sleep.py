"""py_sleep: an interpreted workload with known off-CPU ground truth for stallwatch's tests.

Sleeps ITERATIONS times for 20 ms in a named function and measures each sleep with the
monotonic clock. Prints one JSON line at the end:
    {"pid": P, "slept_ns": X, "count": N}
Python frames are not visible to a native stack walk; the tests only check totals and the
kernel nanosleep path.
"""

import json
import os
import sys
import time

SLEEP_S = 0.020


def python_sleep_site(seconds):
    time.sleep(seconds)


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    slept_ns = 0
    for _ in range(iterations):
        t0 = time.monotonic_ns()
        python_sleep_site(SLEEP_S)
        slept_ns += time.monotonic_ns() - t0
    print(json.dumps({"pid": os.getpid(), "slept_ns": slept_ns, "count": iterations}))


if __name__ == "__main__":
    main()
