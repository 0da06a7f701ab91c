"""Ctrl-C during a long run, and byte-identical results for repeated runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infonce_cli.cli import app
from infonce_cli.errors import ExitCode

from .conftest import SAMPLE


@pytest.mark.slow
def test_sigint_exits_130_and_leaves_no_output(tmp_path):
    rng = np.random.default_rng(0)
    query = rng.normal(size=(30000, 64)).astype(np.float32)
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "p.npy", query + rng.normal(size=(30000, 64)).astype(np.float32))
    command = [sys.executable, "-m", "infonce_cli", "sweep-temperature", "-q", "q.npy", "-p",
               "p.npy", "--steps", "200", "--output", "sweep.json", "--plot", "sweep.svg",
               "--quiet"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        time.sleep(4)  # well into the similarity pass (start-up takes about a second)
        running = process.poll() is None
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert running, f"the run finished before it could be interrupted: {stderr}"
    assert process.returncode == ExitCode.INTERRUPTED
    assert stderr == "error: interrupted\n"
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "q.npy"]


def _json_without_seconds(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    data.pop("seconds")
    return json.dumps(data)


def test_repeated_runs_are_byte_identical(monkeypatch):
    monkeypatch.chdir(SAMPLE)
    for args in (("score", "-q", "queries.npy", "-p", "positives.npy", "--neg",
                  "hard_negatives.npy", "--in-batch"),
                 ("sweep-temperature", "-q", "queries.npy", "-p", "positives.npy",
                  "--steps", "9")):
        assert _json_without_seconds(*args) == _json_without_seconds(*args)


def test_per_sample_files_are_byte_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(SAMPLE)
    outputs = []
    for index in range(2):
        target = tmp_path / f"rows{index}.csv"
        result = CliRunner().invoke(app, ["score", "-q", "queries.npy", "-p", "positives.npy",
                                          "--per-sample", str(target), "--quiet"])
        assert result.exit_code == 0
        outputs.append(Path(target).read_bytes())
    assert outputs[0] == outputs[1]
