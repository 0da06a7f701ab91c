from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
SHARED = ROOT.parent / "shared" / "data" / "debian-minilm"


@pytest.fixture(scope="session")
def real_data() -> dict[str, np.ndarray]:
    """Real MiniLM embeddings: the full debian-minilm set when it sits beside the repo,
    else the sample_data subset of it. Keys: query, positive, paired, shared."""
    if (SHARED / "queries.npy").exists():
        query = np.load(SHARED / "queries.npy")
        docs = np.load(SHARED / "docs.npy")
        hard = np.load(SHARED / "hardneg_idx.npy")
        return {"query": query, "positive": docs[:2000], "paired": docs[hard],
                "shared": docs[2000:]}
    return {"query": np.load(SAMPLE / "queries.npy"), "positive": np.load(SAMPLE / "positives.npy"),
            "paired": np.load(SAMPLE / "hard_negatives.npy"),
            "shared": np.load(SAMPLE / "distractors.npy")}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A private copy of sample_data, as the working directory."""
    for file in SAMPLE.iterdir():
        if file.suffix in (".npy", ".parquet"):
            shutil.copy(file, tmp_path / file.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str):
    """The ``infonce`` command run in-process, as a user would type it."""
    from infonce_cli.cli import app

    return CliRunner().invoke(app, list(args))
