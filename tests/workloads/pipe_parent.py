"""pipe_parent: a child reading its parent's pipe, for the pipe tests (tests/tests/fdwaits.rs).

The parent makes a pipe and forks; the child keeps only the read end and blocks reading it.
What the parent does then is the mode (first argument):
  wait   waits for the child in `waitpid`: alive, not stuck; it would write if it had input,
         so the child waits for input from it (idle).
  stuck  blocks for ever taking a `threading.Lock` it already holds (an indefinite futex wait,
         its only thread): it will never write, so the child's read is stuck behind it.

Output (stdout, one line each): `pid <PARENT>`, `tid parent <PARENT>`, `tid child <CHILD>`,
then `READY`. Options: --timeout-s N (default 60): SIGALRM ends both after that.
"""

import os
import signal
import sys
import threading


def main():
    mode = sys.argv[1]
    timeout_s = 60
    if "--timeout-s" in sys.argv:
        timeout_s = int(sys.argv[sys.argv.index("--timeout-s") + 1])
    signal.alarm(timeout_s)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        signal.alarm(timeout_s)
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    pid = os.getpid()
    print(f"pid {pid}\ntid parent {pid}\ntid child {child}\nREADY", flush=True)
    if mode == "wait":
        os.waitpid(child, 0)
    elif mode == "stuck":
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
