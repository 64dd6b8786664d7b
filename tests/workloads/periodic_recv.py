"""periodic_recv: a client receiving on a loopback TCP connection whose server never sends,
for the `watch` tests of periodic waits (tests/tests/periodic.rs).

Modes (first argument):
  rcvtimeo    The client's socket has a receive timeout (SO_RCVTIMEO, 1.5 s) that is not in
              the syscall's arguments: each recv blocks 1.5 s, fails with EAGAIN, and the
              client receives again, for ever. Healthy: a periodic wait.
  settimeout  The same with Python's `settimeout(1.5)` (CPython then polls with a timeout
              before each recv: a timed wait).
  blocking    No timeout: the client's recv blocks for ever (a stall).

Output (stdout, one line each): `pid <PID>`, `tid client <tid>`, `tid server <tid>`, then
`READY` just before the first recv.
Options: --timeout-s N (default 60): the process exits after that; --delay-ms N (default 0):
the client waits that long after connecting before it prints `READY` and receives (so `watch`
can attach first).
"""

import socket
import struct
import sys
import threading
import time


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def option(name, default):
    args = sys.argv[2:]
    return float(args[args.index(name) + 1]) if name in args else float(default)


def main():
    mode = sys.argv[1]
    timeout_s = option("--timeout-s", 60)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    held = []

    def serve():
        say(f"tid server {threading.get_native_id()}")
        conn, _ = listener.accept()
        held.append(conn)  # keeps the connection open, sends nothing
        time.sleep(timeout_s)

    def receive():
        say(f"tid client {threading.get_native_id()}")
        sock = socket.create_connection(("127.0.0.1", port))
        if mode == "rcvtimeo":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 500_000))
        elif mode == "settimeout":
            sock.settimeout(1.5)
        time.sleep(option("--delay-ms", 0) / 1000)
        say("READY")
        while True:
            try:
                sock.recv(100)
            except (BlockingIOError, socket.timeout):
                pass

    say(f"pid {threading.get_native_id()}")
    threading.Thread(target=serve, daemon=True).start()
    threading.Thread(target=receive, daemon=True).start()
    time.sleep(timeout_s)


if __name__ == "__main__":
    main()
