"""Agreement with the peer libraries, used as oracles, to 1e-5 in float32 (cosine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from info_nce import InfoNCE
from pytorch_metric_learning.losses import NTXentLoss

from infonce_cli import info_nce
from infonce_cli.engine import EngineOptions, score_embeddings


def _random(rng, n=300, m=9, k=250, d=64):
    query = rng.normal(size=(n, d)).astype(np.float32)
    positive = (query + rng.normal(size=(n, d))).astype(np.float32)
    return {"query": query, "positive": positive,
            "paired": rng.normal(size=(n, m, d)).astype(np.float32),
            "shared": rng.normal(size=(k, d)).astype(np.float32)}


@pytest.fixture(params=["real", "random"])
def data(request, real_data, rng):
    return real_data if request.param == "real" else _random(rng)


def _ntxent_indices(n, negatives, mode):
    """indices_tuple for NTXentLoss with ref_emb = [positives; negatives]."""
    anchors = torch.arange(n)
    if mode == "in-batch":
        a2, cand = torch.meshgrid(anchors, anchors, indexing="ij")
        keep = a2 != cand
        return anchors, anchors, a2[keep], cand[keep]
    if mode == "paired":
        m = negatives.shape[1]
        return anchors, anchors, anchors.repeat_interleave(m), n + torch.arange(n * m)
    k = negatives.shape[0]
    return anchors, anchors, anchors.repeat_interleave(k), n + torch.arange(k).repeat(n)


@pytest.mark.parametrize("mode", ["in-batch", "paired", "shared"])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_per_sample_losses_match_info_nce_pytorch(data, mode, temperature):
    query, positive = torch.from_numpy(data["query"]), torch.from_numpy(data["positive"])
    negatives = None if mode == "in-batch" else torch.from_numpy(data[mode])
    oracle = InfoNCE(temperature=temperature, reduction="none",
                     negative_mode="unpaired" if mode != "paired" else "paired")
    want = oracle(query, positive, negatives)
    got = score_embeddings(data["query"], data["positive"],
                           None if negatives is None else data[mode],
                           EngineOptions(temperatures=(temperature,), max_memory=2**22))
    torch.testing.assert_close(got.loss[:, 0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["in-batch", "paired", "shared"])
def test_mean_matches_pytorch_metric_learning_ntxent(data, mode):
    rows = slice(0, 500)
    query, positive = torch.from_numpy(data["query"][rows]), torch.from_numpy(
        data["positive"][rows])
    negatives = None if mode == "in-batch" else torch.from_numpy(data[mode][rows])
    n = len(query)
    reference_rows = positive if negatives is None else torch.cat(
        [positive, negatives.reshape(-1, query.shape[1])])
    want = NTXentLoss(temperature=0.05)(query, indices_tuple=_ntxent_indices(n, negatives, mode),
                                        ref_emb=reference_rows)
    got = info_nce(query, positive, negatives, temperature=0.05)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradient_matches_info_nce_pytorch(rng):
    data = _random(rng, n=64)
    grads = []
    for loss_fn in (lambda q, p, n: info_nce(q, p, n, temperature=0.1),
                    lambda q, p, n: InfoNCE(temperature=0.1, negative_mode="paired")(q, p, n)):
        q = torch.from_numpy(data["query"]).requires_grad_()
        p = torch.from_numpy(data["positive"]).requires_grad_()
        n = torch.from_numpy(data["paired"]).requires_grad_()
        loss_fn(q, p, n).backward()
        grads.append((q.grad, p.grad, n.grad))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_in_batch_with_batch_size_matches_per_batch_oracle(real_data):
    """--batch-size B is what info-nce-pytorch reports on each block of B pairs."""
    query, positive = real_data["query"][:300], real_data["positive"][:300]
    got = score_embeddings(query, positive,
                           options=EngineOptions(batch_size=64)).loss[:, 0]
    want = torch.cat([
        InfoNCE(temperature=0.05, reduction="none")(torch.from_numpy(query[i:i + 64]),
                                                    torch.from_numpy(positive[i:i + 64]))
        for i in range(0, 300, 64)
    ])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
