"""py_subinterp: a process with a subinterpreter, both interpreters blocked, for `watch` tests.

Thread "subinterp" creates a subinterpreter (3.8-3.12: `_xxsubinterpreters`; 3.13:
`_interpreters`) and runs code in it (`run_string`) that defines and calls
`blocked_in_subinterpreter`, which blocks in `os.read` on a pipe nobody writes to. That OS
thread so has two Python thread states: one in the main interpreter (in `run_in_subinterpreter`,
inside `run_string`) and one in the subinterpreter (in `blocked_in_subinterpreter`). The main
thread blocks in `blocked_in_main_interpreter`, an `os.read` on another silent pipe.

Output (stdout, one line each): `pid <PID>`, `BLOCKING` before the thread starts, then (from a
short-lived reporter thread, once both are stuck):
    {"workload": "py_subinterp", "python": {"version", "executable", "pid", "threading_file"},
     "module": "_xxsubinterpreters" | "_interpreters", "interpreters": 2,
     "threads": {"main": {"tid", "function": "blocked_in_main_interpreter"},
                 "subinterp": {"tid", "function": "blocked_in_subinterpreter"}}}
`# LINE: <tag>` marks lines tests look up. The subinterpreter's code is a string that
`run_string` compiles (its frames' file is whatever name it gives, e.g. "<string>"), so its
lines count from the string's first line: `os.read` is on line "sub_line" (4), the call on
"sub_call_line" (5).
Options: --delay-ms N (before blocking), --timeout-s N (default 120).
"""

import os
import threading
import time

import py_stuck

try:
    import _xxsubinterpreters as interpreters

    MODULE = "_xxsubinterpreters"
except ImportError:
    import _interpreters as interpreters

    MODULE = "_interpreters"

# Runs inside the subinterpreter; {fd} is filled in. Keep `os.read` on the 4th line.
SUBINTERPRETER_CODE = """import os
def blocked_in_subinterpreter():
    fd = {fd}
    os.read(fd, 1)  # LINE: sub-read
blocked_in_subinterpreter()  # LINE: sub-call
"""
SUB_READ_LINE = 4
SUB_CALL_LINE = 5


def run_in_subinterpreter(pipe_r, tids):
    tids["subinterp"] = threading.get_native_id()
    interp = interpreters.create()
    code = SUBINTERPRETER_CODE.format(fd=pipe_r)
    interpreters.run_string(interp, code)  # LINE: main-run-string


def blocked_in_main_interpreter(pipe_r):
    os.read(pipe_r, 1)  # LINE: main-read


def main():
    args = py_stuck.start_from_args(__doc__)
    time.sleep(args.delay_ms / 1000)

    sub_r, sub_w = os.pipe()
    main_r, main_w = os.pipe()
    tids = {"main": threading.get_native_id()}
    py_stuck.emit("BLOCKING")
    threading.Thread(
        target=run_in_subinterpreter, args=(sub_r, tids), name="subinterp", daemon=True
    ).start()
    facts = {
        "workload": "py_subinterp",
        "python": py_stuck.python_facts(),
        "module": MODULE,
        "sub_line": SUB_READ_LINE,
        "sub_call_line": SUB_CALL_LINE,
    }

    def complete_facts():
        facts["interpreters"] = len(interpreters.list_all())
        facts["threads"] = {
            "main": {"tid": tids["main"], "function": "blocked_in_main_interpreter"},
            "subinterp": {"tid": tids["subinterp"], "function": "blocked_in_subinterpreter"},
        }
        return facts

    while "subinterp" not in tids:
        time.sleep(0.01)
    py_stuck.report_when_stuck(
        lambda: {tids["main"]: py_stuck.SYS_READ, tids["subinterp"]: py_stuck.SYS_READ},
        complete_facts,
    )
    blocked_in_main_interpreter(main_r)  # LINE: main-call
    os.close(sub_w)
    os.close(main_w)


if __name__ == "__main__":
    main()
