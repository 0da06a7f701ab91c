"""Bounded memory, measured on real processes (peak RSS from the kernel; no timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses and large inputs: left out by -m "not slow"

MiB = 2**20


def peak_rss(args: list[str], tmp_path: Path) -> int:
    """Peak resident memory of one `infonce` run, in bytes, read inside the process (a
    forked child's rusage would also count this test process's memory)."""
    record = tmp_path / "peak.txt"
    command = [sys.executable, str(ROOT / "benchmarks" / "peak.py"), str(record), "-m",
               "infonce_cli", *args, "--format", "json", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(record.read_text())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> int:
    """The same command on a tiny input: the interpreter, torch and the libraries."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    np.save(root / "q.npy", rng.normal(size=(8, 16)).astype(np.float32))
    np.save(root / "n.npy", rng.normal(size=(8, 2, 16)).astype(np.float32))
    return max(peak_rss(["score", "-q", str(root / "q.npy"), "-p", str(root / "q.npy")], root),
               peak_rss(["score", "-q", str(root / "q.npy"), "-p", str(root / "q.npy"),
                         "--neg", str(root / "n.npy")], root))


def test_paired_negatives_larger_than_the_budget_are_read_in_blocks(tmp_path, baseline):
    n, m, d = 20000, 16, 256  # 328 MB of negatives
    rng = np.random.default_rng(1)
    query = rng.normal(size=(n, d)).astype(np.float32)
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "p.npy", query + rng.normal(size=(n, d)).astype(np.float32))
    negatives = np.lib.format.open_memmap(tmp_path / "n.npy", mode="w+", dtype=np.float32,
                                          shape=(n, m, d))
    for start in range(0, n, 2000):
        negatives[start:start + 2000] = rng.normal(size=(2000, m, d))
    negatives.flush()
    del negatives
    size = (tmp_path / "n.npy").stat().st_size
    peak = peak_rss(["score", "-q", str(tmp_path / "q.npy"), "-p", str(tmp_path / "p.npy"),
                     "--neg", str(tmp_path / "n.npy"), "--max-memory", "32MiB"], tmp_path)
    assert peak - baseline < 120 * MiB < size


def test_in_batch_never_holds_the_full_matrix(tmp_path, baseline):
    n, d = 20000, 32  # the full N × N float32 matrix would be 1.6 GB
    rng = np.random.default_rng(2)
    query = rng.normal(size=(n, d)).astype(np.float32)
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "p.npy", query + rng.normal(size=(n, d)).astype(np.float32))
    peak = peak_rss(["score", "-q", str(tmp_path / "q.npy"), "-p", str(tmp_path / "p.npy"),
                     "--max-memory", "64MiB"], tmp_path)
    assert peak - baseline < 160 * MiB
