"""Distributed runs through the real torchrun launcher: two gloo processes on the CPU give the
numbers a single process gives, and a bad share of the input fails the whole job cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from infonce_cli.cli import app

from .conftest import SAMPLE

pytestmark = pytest.mark.slow


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "infonce_cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def single(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _close(a, b):
    """Every number in two JSON results agrees to 1e-6 relative (seconds and device aside)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            if key not in ("seconds", "device"):
                _close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    else:
        assert a == b


BASE = ("-q", str(SAMPLE / "queries.npy"), "-p", str(SAMPLE / "positives.npy"))


@pytest.mark.parametrize("extra", [
    (),
    ("--neg", str(SAMPLE / "distractors.npy")),
    ("--neg", str(SAMPLE / "hard_negatives.npy")),
    ("--neg", str(SAMPLE / "hard_negatives.npy"), "--in-batch", "--batch-size", "96"),
], ids=["in-batch", "shared", "paired", "pooled-batches"])
def test_two_ranks_match_one_process(tmp_path, extra):
    args = ("score", *BASE, *extra, "--format", "json", "--quiet")
    result = torchrun(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _close(json.loads(result.stdout), single(*args))


def test_two_rank_sweep_matches_one_process(tmp_path):
    args = ("sweep-temperature", *BASE, "--steps", "12", "--format", "json", "--quiet")
    result = torchrun(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    distributed, alone = json.loads(result.stdout), single(*args)
    assert distributed["optimum"]["temperature"] == pytest.approx(
        alone["optimum"]["temperature"], rel=2e-6)
    for key in ("rows", "best_grid", "accuracy_at_1", "mrr", "n"):
        _close(distributed[key], alone[key])


def test_per_sample_dataset_has_one_part_per_rank(tmp_path):
    result = torchrun("score", *BASE, "--per-sample", "rows", "--format", "json", "--quiet",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parts = sorted(p.name for p in (tmp_path / "rows").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    table = pq.read_table(tmp_path / "rows")
    assert table.column("index").to_pylist() == list(range(400))
    alone = CliRunner().invoke(app, ["score", *BASE, "--per-sample", str(tmp_path / "one.parquet"),
                                     "--quiet"])
    assert alone.exit_code == 0
    np.testing.assert_allclose(table.column("loss").to_numpy(),
                               pq.read_table(tmp_path / "one.parquet").column("loss").to_numpy(),
                               rtol=1e-6)


def test_bad_rows_in_one_share_fail_every_rank(tmp_path):
    query = np.load(SAMPLE / "queries.npy")
    query[350] = np.nan  # in rank 1's share only
    np.save(tmp_path / "q.npy", query)
    result = torchrun("score", "-q", "q.npy", "-p", str(SAMPLE / "positives.npy"),
                      "--output", "out.json", cwd=tmp_path)
    assert result.returncode != 0
    assert "error: q.npy: 1 row contains NaN or Inf (first: row 350)" in result.stderr
    assert "error: rank 1: q.npy: 1 row contains NaN or Inf (first: row 350)" in result.stderr
    assert not (tmp_path / "out.json").exists()
