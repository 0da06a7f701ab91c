"""The same engine on CUDA: CPU and GPU results agree. Skipped without an NVIDIA GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infonce_cli.cli import app
from infonce_cli.engine import EngineOptions, score_embeddings

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")


@pytest.mark.parametrize("negatives_key", [None, "paired", "shared"])
def test_cuda_matches_cpu(real_data, negatives_key):
    negatives = None if negatives_key is None else real_data[negatives_key]
    args = (real_data["query"], real_data["positive"], negatives)
    cpu = score_embeddings(*args, EngineOptions())
    gpu = score_embeddings(*args, EngineOptions(device=CUDA))
    np.testing.assert_allclose(gpu.loss.cpu().numpy(), cpu.loss.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gpu.rank.cpu().numpy(), cpu.rank.numpy())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_low_precision_mean_loss_within_1e3(real_data, dtype):
    args = (real_data["query"], real_data["positive"])
    full = score_embeddings(*args, options=EngineOptions(device=CUDA)).loss.double().mean()
    low = score_embeddings(*args, options=EngineOptions(device=CUDA, dtype=dtype))
    assert abs(low.loss.double().mean() - full) / full < 1e-3


def test_cli_on_cuda(tmp_path, monkeypatch):
    from .conftest import SAMPLE

    monkeypatch.chdir(SAMPLE)
    result = CliRunner().invoke(app, ["score", "-q", "queries.npy", "-p", "positives.npy",
                                      "--device", "cuda", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["device"].startswith("cuda")
