"""py_stuck: what the py_*.py workloads share (imported from the script's directory).

Every Python workload for `stallwatch watch` gets some threads stuck on purpose and then prints
its own ground truth as one JSON line (`emit_facts`), but only once each of those threads is
really stuck: blocked in the syscall it should be in, and not scheduled for a while
(`wait_until_stuck`, reading this process's own /proc, so the facts never describe a state
that has not happened yet). Before that each workload prints `pid <PID>` (the line protocol of
tests/workloads/watch_common.h, which the Rust harness reads) and, right before it blocks,
`BLOCKING`. `--timeout-s N` arms SIGALRM, whose default action ends the process, so a failed
test never leaks a stuck interpreter.

Python 3.8 syntax only; the standard library only.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

# x86_64 syscall numbers of the waits the workloads end in.
SYS_READ = 0
SYS_RECVFROM = 45
SYS_FUTEX = 202

# A thread counts as stuck once it has stayed in its syscall, unscheduled, for this long.
SETTLE_S = 0.3
POLL_S = 0.02


def emit(line):
    print(line, flush=True)


def start_from_args(doc):
    """Parses the arguments every workload takes (--delay-ms, --timeout-s), arms the
    timeout, and returns the arguments."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--timeout-s", type=int, default=120)
    args = parser.parse_args()
    start(args.timeout_s)
    return args


def start(timeout_s):
    """Arms the safety timeout and prints the pid line."""
    signal.alarm(timeout_s)
    emit("pid {}".format(os.getpid()))


def python_facts():
    """The interpreter's identity, for the facts line."""
    return {
        "version": "{}.{}.{}".format(*sys.version_info[:3]),
        "executable": sys.executable,
        "pid": os.getpid(),
        "threading_file": threading.__file__,
    }


def _syscall_nr(tid):
    """The syscall `tid` is blocked in, or None (running, gone, unreadable)."""
    try:
        with open("/proc/self/task/{}/syscall".format(tid)) as f:
            first = f.read().split()
    except OSError:
        return None
    if not first or not first[0].lstrip("-").isdigit():
        return None
    return int(first[0])


def _run_count(tid):
    """How often `tid` has been scheduled in (third field of schedstat)."""
    try:
        with open("/proc/self/task/{}/schedstat".format(tid)) as f:
            return int(f.read().split()[2])
    except (OSError, IndexError, ValueError):
        return None


def wait_until_stuck(expected, timeout_s=20.0):
    """Waits until every tid of `expected` ({tid: syscall nr}) sits in its syscall without
    being scheduled for SETTLE_S. Exits the process (status 3) on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = {tid: _run_count(tid) for tid in expected}
        if all(_syscall_nr(tid) == nr for tid, nr in expected.items()):
            time.sleep(SETTLE_S)
            if all(
                _syscall_nr(tid) == nr and _run_count(tid) == before[tid]
                for tid, nr in expected.items()
            ):
                return
        time.sleep(POLL_S)
    state = {tid: _syscall_nr(tid) for tid in expected}
    sys.stderr.write("threads never got stuck: wanted {}, have {}\n".format(expected, state))
    sys.stderr.flush()
    os._exit(3)


def own_stacks():
    """{native tid: [{"function", "file", "line"}, ...] innermost first} of every thread of
    this interpreter, as Python itself sees them (co_qualname from 3.11, co_name before)."""
    native = {t.ident: t.native_id for t in threading.enumerate()}
    stacks = {}
    for ident, frame in sys._current_frames().items():
        frames = []
        while frame is not None:
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)
            frames.append({"function": name, "file": code.co_filename, "line": frame.f_lineno})
            frame = frame.f_back
        stacks[str(native.get(ident, ident))] = frames
    return stacks


def emit_facts(facts):
    """Prints the facts line: one JSON object, keys sorted. With PY_STUCK_STACKS=1 in the
    environment it also holds "stacks" (`own_stacks`): what a correct reader of this process's
    memory must find, to check tests' expectations by hand."""
    if os.environ.get("PY_STUCK_STACKS") == "1":
        facts = dict(facts, stacks=own_stacks())
    emit(json.dumps(facts, sort_keys=True))


def report_when_stuck(expected, facts, timeout_s=20.0):
    """Starts a daemon thread that prints `facts()` once `expected()` is stuck (see
    `wait_until_stuck`), then ends, so it is gone from the stuck process by the time anyone
    looks. Both are callables, evaluated in that thread."""

    def reporter():
        wait_until_stuck(expected(), timeout_s)
        emit_facts(facts())

    thread = threading.Thread(target=reporter, name="reporter", daemon=True)
    thread.start()
    return thread
