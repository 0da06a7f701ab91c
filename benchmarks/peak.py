"""Run a Python module or script as __main__ and record the process's peak RSS.

    python benchmarks/peak.py OUTFILE -m infonce_cli score ...
    python benchmarks/peak.py OUTFILE path/to/script.py ARGS...

The peak (VmHWM, bytes) is written to OUTFILE at exit. Measured inside the process
because a forked child's rusage also counts the parent's memory at fork time.
"""

from __future__ import annotations

import atexit
import runpy
import sys


def _record(path: str) -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                with open(path, "w") as out:
                    out.write(str(int(line.split()[1]) * 1024))


def main() -> None:
    out, *rest = sys.argv[1:]
    atexit.register(_record, out)
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
