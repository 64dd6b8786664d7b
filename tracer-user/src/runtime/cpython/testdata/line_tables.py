"""Records the line table of a real code object for code.rs's unit tests.

Run under each CPython whose table format code.rs decodes (2.7, 3.6-3.10):
    for v in 2.7 3.6 3.7 3.8 3.9 3.10; do pythonV line_tables.py; done > line_tables.txt
For `sample` (below) it prints the version, `co_firstlineno`, the table (`co_lnotab` up to
3.9, its line increments unsigned in 2.7, `co_linetable` in 3.10) in hex, and one
`lasti BYTES LINE` per call of `rec`: the caller's `f_lasti` as Python shows it (a byte
offset; 3.10 keeps code units in the frame and doubles them here) and its `f_lineno`, which
CPython computes from the table in C when no trace function is set. `sample` has lines run out
of order (a negative line step from 3.8), a jump of more than 127 lines (one entry in 2.7, two
from 3.6) and a long range of bytecode on one line (more than 255 bytes), the cases the table
formats split into several entries.
"""

import platform
import sys

POINTS = []


def rec(*_):
    frame = sys._getframe(1)
    POINTS.append((frame.f_lasti, frame.f_lineno))
    return 1


SOURCE = """
def sample(rec):
    a = rec(1)
    c = (rec(4)
         if rec(5) else
         rec(6))
    b = [rec(2),
         rec(3)]
""" + "    # filler\n" * 140 + """
    d = rec([%s])
    for i in range(2):
        rec(7)
    return (rec(8),
            rec(9))[0] + rec(
        10)
""" % ", ".join("a" for _ in range(300))

namespace = {}
exec(compile(SOURCE, "sample.py", "exec"), namespace)
code = namespace["sample"].__code__
namespace["sample"](rec)
table = code.co_linetable if sys.version_info >= (3, 10) else code.co_lnotab
print("version %s" % platform.python_version())
print("first_line %d" % code.co_firstlineno)
print("table %s" % "".join("%02x" % b for b in bytearray(table)))
for lasti, line in POINTS:
    print("lasti %d %d" % (lasti, line))
