"""Run a Python module or script as __main__ and record the process's peak RSS.

    python benchmarks/peak.py OUTFILE -m infonce_cli score ...
    python benchmarks/peak.py OUTFILE path/to/script.py ARGS...

The peak (VmHWM, bytes) is written to OUTFILE at exit, and on a second line the GPU
memory the process's CUDA allocator reserved at its peak, when it used CUDA. Measured
inside the process because a forked child's rusage also counts the parent's memory at
fork time.
"""

from __future__ import annotations

import atexit
import runpy
import sys


def _record(path: str) -> None:
    lines = []
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                lines.append(str(int(line.split()[1]) * 1024))
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        lines.append(str(torch.cuda.max_memory_reserved()))
    with open(path, "w") as out:
        out.write("\n".join(lines))


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
