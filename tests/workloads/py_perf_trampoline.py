"""py_perf_trampoline: a named Python function that blocks, for the JIT perf map tests.

Run with CPython 3.12+ and `-X perf`: each Python function is entered through its own copy
of a small trampoline in anonymous executable memory, and /tmp/perf-PID.map names it
`py::FUNCTION:FILE`, so the native stack of the blocked thread has a frame named after
`wait_in_python`.

Output (stdout): `pid <PID>`, `ready` once the function ran a first time (its trampoline is
in the map). Then the main thread reads a pipe in `wait_in_python`, forever; a feeder thread
writes a byte to it every WAIT_MS (argument, default 200) ms.
"""

import os
import sys
import threading
import time


def wait_in_python(fd):
    """Blocks in one read of `fd` until a byte comes."""
    return os.read(fd, 1)


def feed(fd, wait_s):
    """Writes a byte to `fd` every `wait_s` seconds."""
    while True:
        time.sleep(wait_s)
        os.write(fd, b"x")


def main():
    wait_s = (int(sys.argv[1]) if len(sys.argv) > 1 else 200) / 1000
    print(f"pid {os.getpid()}", flush=True)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"x")
    wait_in_python(read_fd)
    print("ready", flush=True)
    threading.Thread(target=feed, args=(write_fd, wait_s), daemon=True).start()
    while True:
        wait_in_python(read_fd)


main()
