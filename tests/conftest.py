from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
