"""The same engine on CUDA: CPU and GPU results agree. Skipped without an NVIDIA GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import infonce_cli
from infonce_cli.cli import app
from infonce_cli.engine import EngineOptions, score_embeddings

from .test_diagnostics import (
    alignment_reference,
    anisotropy_reference,
    effective_rank_reference,
    hubness_reference,
    uniformity_reference,
)

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


def test_diagnostics_on_cuda_match_their_formulas(real_data):
    """Every diagnostic computed on the GPU against the float64 formulas, and the
    calibration against the CPU's, on real rows in-batch."""
    query, positive = real_data["query"][:700], real_data["positive"][:700]
    gpu, cpu = (infonce_cli.score(query, positive, temperature=0.05, diagnostics=True,
                                  device=device).diagnostics for device in ("cuda", "cpu"))
    assert gpu.alignment == pytest.approx(alignment_reference(query, positive), rel=1e-6)
    for side, values in (("query", query), ("pos", positive)):
        assert getattr(gpu.uniformity, side) == pytest.approx(uniformity_reference(values),
                                                              rel=1e-6)
        assert getattr(gpu.effective_rank, side) == pytest.approx(
            effective_rank_reference(values), rel=1e-6)
        assert getattr(gpu.anisotropy, side) == pytest.approx(anisotropy_reference(values),
                                                              rel=1e-6, abs=1e-9)
    skewness, antihubs = hubness_reference(query, positive, None, False, 10)
    assert gpu.hubness.skewness == pytest.approx(skewness, rel=1e-6)
    assert gpu.hubness.antihub_share == pytest.approx(antihubs)
    assert gpu.calibration.ece == pytest.approx(cpu.calibration.ece, abs=1e-6)
