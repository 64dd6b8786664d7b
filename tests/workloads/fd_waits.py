"""fd_waits: threads reading pipes, for the `watch` tests of the pipe rules (tests/tests/fdwaits.rs).

Modes (first argument):
  mixed     Thread "reader" reads a pipe whose only write end is held by child "live-writer",
            which sleeps (alive, not stuck: the reader waits for input). Thread
            "stuck-reader" reads a pipe whose only write end is held by child "stuck-writer",
            which blocks for ever in `threading.Lock.acquire` on a lock it holds (the reader
            is stuck behind it). The main thread sleeps.
  own-pipe  The (single-threaded) process reads a pipe whose only write end it holds itself:
            nothing can ever write.
  subscriber  Thread "server" accepts one loopback TCP connection, sends it one message and
            waits in accept again; thread "client" receives that message and waits in recv
            for the next (idle: the last thing on the connection was a message received).
  request   The same, but the server reads nothing and sends nothing, and the client sends a
            request and waits in recv for the answer (a stall: request unanswered).
  unix-subscriber  Child process "server" listens on the unix socket path given by --socket,
            accepts one connection, sends it one message and waits in accept again; the main
            thread "client" (of the parent) receives that message and waits in recv for the
            next (idle: the server read everything the client sent, which is nothing).
  unix-request  The same, but the server reads nothing and sends nothing, and the client
            sends a request and waits in recv for the answer (a stall: the request sits
            unread in the server's receive queue).

Output (stdout, one line each): `pid <PID>`, `tid <role> <tid>` for each thread and child (a child's main
tid is its pid), then `READY` once every reader is about to block.
Options: --timeout-s N (default 60): the process and its children exit after that.
         --socket PATH: the unix socket path of the unix modes.
"""

import ctypes
import os
import signal
import socket
import sys
import threading
import time


_say_lock = threading.Lock()


def say(line):
    with _say_lock:  # one whole line at a time from any thread
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def option(name):
    args = sys.argv[2:]
    return args[args.index(name) + 1] if name in args else None


def timeout_s():
    args = sys.argv[2:]
    return float(args[args.index("--timeout-s") + 1]) if "--timeout-s" in args else 60.0


def fork_writer(write_end, close, stuck, deadline):
    """A child holding `write_end` (and closing every fd in `close`); it sleeps, or blocks."""
    pid = os.fork()
    if pid:
        return pid
    for fd in close:
        os.close(fd)
    # SIGALRM's default action ends the child; no helper thread that would keep it alive.
    signal.alarm(int(deadline))
    if stuck:
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()  # blocks for ever: nothing will ever be written to write_end
    while True:
        time.sleep(0.2)


def read_forever(role, fd, started):
    say(f"tid {role} {threading.get_native_id()}")
    started.release()
    os.read(fd, 1)


def mixed(deadline):
    live_r, live_w = os.pipe()
    stuck_r, stuck_w = os.pipe()
    live = fork_writer(live_w, [live_r, stuck_r, stuck_w], False, deadline)
    stuck = fork_writer(stuck_w, [stuck_r, live_r, live_w], True, deadline)
    os.close(live_w)
    os.close(stuck_w)
    say(f"tid live-writer {live}")
    say(f"tid stuck-writer {stuck}")
    started = threading.Semaphore(0)
    for role, fd in [("reader", live_r), ("stuck-reader", stuck_r)]:
        threading.Thread(target=read_forever, args=(role, fd, started), daemon=True).start()
    started.acquire()
    started.acquire()
    say("READY")
    time.sleep(deadline)


def own_pipe():
    r, w = os.pipe()
    say(f"tid reader {threading.get_native_id()}")
    say("READY")
    os.read(r, 1)  # blocks for ever: only this thread could write to w


def tcp(mode, deadline):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    say(f"port {listener.getsockname()[1]}")
    served = threading.Event()

    def serve():
        say(f"tid server {threading.get_native_id()}")
        conn, _ = listener.accept()
        if mode == "subscriber":
            conn.sendall(b"message 1\n")
        served.set()
        kept.append(conn)
        listener.accept()  # waits for connections: idle

    kept = []

    def receive():
        say(f"tid client {threading.get_native_id()}")
        conn = socket.create_connection(listener.getsockname())
        served.wait()
        if mode == "subscriber":
            conn.recv(100)
        else:
            conn.sendall(b"GET /answer\n")
        say("READY")
        conn.recv(100)  # LINE: client-recv

    threading.Thread(target=serve, daemon=True).start()
    threading.Thread(target=receive, daemon=True).start()
    time.sleep(deadline)


def die_with_parent():
    """The child is killed when its parent dies (PR_SET_PDEATHSIG), not left behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def unix(mode, path, deadline):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    ready_r, ready_w = os.pipe()
    server = os.fork()
    if server == 0:
        die_with_parent()
        signal.alarm(int(deadline) + 2)  # after the client: it sees no reset
        os.close(ready_r)
        conn, _ = listener.accept()
        if mode == "unix-subscriber":
            conn.sendall(b"message 1\n")
        os.write(ready_w, b"x")
        listener.accept()  # waits for connections: idle; never reads conn
        os._exit(0)
    listener.close()
    os.close(ready_w)
    say(f"tid server {server}")
    say(f"tid client {threading.get_native_id()}")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    os.read(ready_r, 1)  # the server accepted (and sent its message)
    if mode == "unix-subscriber":
        conn.recv(100)
    else:
        conn.sendall(b"GET /answer\n")
    signal.alarm(int(deadline))
    say("READY")
    conn.recv(100)  # LINE: unix-client-recv


def main():
    deadline = timeout_s()
    mode = sys.argv[1]
    say(f"pid {os.getpid()}")
    if mode == "mixed":
        mixed(deadline)
    elif mode in ("subscriber", "request"):
        tcp(mode, deadline)
    elif mode in ("unix-subscriber", "unix-request"):
        unix(mode, option("--socket"), deadline)
    elif mode == "own-pipe":
        signal.alarm(int(deadline))
        own_pipe()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
