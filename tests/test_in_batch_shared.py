"""In-batch negatives next to a shared pool (a MoCo-style queue): each query sees its batch's
other positives and all K shared negatives, shared row k numbered N + k."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import NTXentLoss

from infonce_cli import engine
from infonce_cli.engine import EngineOptions, NegativeMode, score_embeddings
from infonce_cli.errors import UsageError
from infonce_cli.runs import candidate_ids
from infonce_cli.similarity import Similarity
from infonce_cli.summaries import hardest_negative_ids
from infonce_cli.temperature import sweep_embeddings

from .conftest import run_cli
from .reference import reference

N, K, D = 37, 23, 12


def _data(rng, scale=1.0):
    query = rng.normal(size=(N, D)).astype(np.float32)
    positive = (query + rng.normal(scale=scale, size=(N, D))).astype(np.float32)
    shared = rng.normal(size=(K, D)).astype(np.float32)
    return query, positive, shared


def _check(got, want, *, rtol=1e-5):
    scale = np.abs(want.loss).max() + 1
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=rtol, atol=rtol * scale)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)
    np.testing.assert_array_equal(got.num_candidates.numpy(), want.num_candidates)
    np.testing.assert_array_equal(got.hardest_negative_index.numpy(), want.hardest_negative_index)
    np.testing.assert_allclose(got.positive_score.numpy(), want.positive_score, rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(got.hardest_negative_score.numpy(), want.hardest_negative_score,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("similarity", list(Similarity))
@pytest.mark.parametrize("batch_size", [None, 8, 10, 37])
def test_matches_float64_loop(rng, similarity, batch_size):
    query, positive, shared = _data(rng)
    temperature = 0.1 if similarity is Similarity.COSINE else 5.0
    options = EngineOptions(temperatures=(temperature,), similarity=similarity, in_batch=True,
                            batch_size=batch_size)
    got = score_embeddings(query, positive, shared, options)
    want = reference(query, positive, shared, temperature=temperature, kind=similarity.value,
                     in_batch=True, batch_size=batch_size)
    assert got.mode is NegativeMode.IN_BATCH_SHARED
    np.testing.assert_array_equal(got.num_candidates.numpy(),
                                  [min(batch_size or N, N - (i // (batch_size or N))
                                       * (batch_size or N)) + K for i in range(N)])
    _check(got, want)


@pytest.mark.parametrize("batch_size", [None, 8])
@pytest.mark.parametrize("max_memory", [2**12, 2**16, 2**30])
def test_every_row_path_and_small_blocks_match_float64_loop(rng, monkeypatch, batch_size,
                                                            max_memory):
    """The path a GPU takes (every row searched), and blocks of any size."""
    query, positive, shared = _data(rng)
    want = reference(query, positive, shared, temperature=0.1, in_batch=True,
                     batch_size=batch_size)
    options = EngineOptions(temperatures=(0.1,), in_batch=True, batch_size=batch_size,
                            max_memory=max_memory)
    _check(score_embeddings(query, positive, shared, options), want)
    monkeypatch.setattr(engine, "_picks_rows", lambda device: False)
    _check(score_embeddings(query, positive, shared, options), want)


def test_shared_rows_are_numbered_after_the_positives(rng):
    """Some queries' hardest negative is a positive of the batch, others' a shared row."""
    query, positive, shared = _data(rng)
    shared = shared.copy()
    shared[4] = query[2] + 0.01  # query 2's hardest negative is shared row 4
    got = score_embeddings(query, positive, shared,
                           EngineOptions(temperatures=(0.1,), in_batch=True))
    index = got.hardest_negative_index.numpy()
    assert index[2] == N + 4
    assert (index < N).any()
    assert (index >= N).any()
    assert (index < N + K).all()


@pytest.mark.parametrize("batch_size", [None, 10])
def test_masking_by_positive_and_negative_ids_matches_the_loop(rng, batch_size):
    query, positive, shared = _data(rng)
    pos_ids = rng.integers(0, 15, N)
    neg_ids = rng.integers(0, 15, K)

    def drop(i, j):
        return pos_ids[j] == pos_ids[i] if j < N else neg_ids[j - N] == pos_ids[i]

    got = score_embeddings(query, positive, shared,
                           EngineOptions(temperatures=(0.1,), in_batch=True,
                                         batch_size=batch_size),
                           ids=candidate_ids(pos_ids, neg_ids))
    want = reference(query, positive, shared, temperature=0.1, in_batch=True,
                     batch_size=batch_size, drop=drop)
    _check(got, want)
    size = batch_size or N
    masked = [sum(drop(i, j) for j in range((i // size) * size, min((i // size + 1) * size, N))
                  if j != i) + sum(drop(i, N + k) for k in range(K)) for i in range(N)]
    assert sum(masked) > 0
    np.testing.assert_array_equal(got.masked.numpy(), masked)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_copies_of_the_positive_tie_with_it_or_are_masked(rng, scale):
    """Copies of a query's positive, among the batch's positives and in the pool: they tie
    with it (and count against it), or with mask_duplicates they are dropped."""
    query, positive, shared = _data(rng, scale=0.01)
    query, positive = query * np.float32(scale), positive * np.float32(scale)
    shared = shared * np.float32(scale)
    query[5], positive[5] = query[3], positive[3]  # rows 3 and 5 are the same pair
    shared[7] = positive[3]
    tied = score_embeddings(query, positive, shared, EngineOptions(in_batch=True))
    for row, copy in ((3, 5), (5, 3)):
        assert tied.hardest_negative_score[row].item() == tied.positive_score[row].item()
        assert tied.hardest_negative_index[row].item() == copy  # the batch comes first
        assert tied.rank[row].item() == 3  # the other positive and shared row 7
    assert tied.masked.sum().item() == 0

    def copy_of_positive(i, j):
        vector = positive[j] if j < N else shared[j - N]
        return bool(np.array_equal(vector, positive[i]))

    dropped = score_embeddings(query, positive, shared,
                               EngineOptions(temperatures=(0.1,), in_batch=True,
                                             mask_duplicates=True))
    copies = np.zeros(N, dtype=np.int64)
    copies[[3, 5]] = 2
    np.testing.assert_array_equal(dropped.masked.numpy(), copies)
    np.testing.assert_array_equal(dropped.num_candidates.numpy(),
                                  tied.num_candidates.numpy() - copies)
    want = reference(query, positive, shared, temperature=0.1, in_batch=True,
                     drop=copy_of_positive)
    np.testing.assert_allclose(dropped.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dropped.rank.numpy(), want.rank)
    np.testing.assert_array_equal(dropped.hardest_negative_index.numpy(),
                                  want.hardest_negative_index)


def test_per_sample_matches_cross_entropy_over_the_batch_and_the_queue(real_data):
    """An independent oracle: per batch, cross-entropy over the logits
    [the batch's positives | the queue], the target on the diagonal."""
    query = torch.from_numpy(real_data["query"][:300])
    positive = torch.from_numpy(real_data["positive"][:300])
    queue = torch.from_numpy(real_data["shared"][:500])
    temperature, batch = 0.05, 64
    want = []
    for start in range(0, len(query), batch):
        q = F.normalize(query[start:start + batch], dim=-1)
        candidates = F.normalize(torch.cat([positive[start:start + batch], queue]), dim=-1)
        logits = q @ candidates.T / temperature
        want.append(F.cross_entropy(logits, torch.arange(len(q)), reduction="none"))
    got = score_embeddings(query.numpy(), positive.numpy(), queue.numpy(),
                           EngineOptions(temperatures=(temperature,), in_batch=True,
                                         batch_size=batch))
    torch.testing.assert_close(got.loss[:, 0], torch.cat(want), rtol=1e-5, atol=1e-5)


def test_mean_matches_pytorch_metric_learning_ntxent(rng):
    n, k, d = 300, 250, 64
    query = rng.normal(size=(n, d)).astype(np.float32)
    positive = (query + rng.normal(size=(n, d))).astype(np.float32)
    queue = rng.normal(size=(k, d)).astype(np.float32)
    anchors = torch.arange(n)
    rows, columns = torch.meshgrid(anchors, anchors, indexing="ij")
    others = rows != columns
    negative_anchors = torch.cat([rows[others], anchors.repeat_interleave(k)])
    negatives = torch.cat([columns[others], n + torch.arange(k).repeat(n)])
    want = NTXentLoss(temperature=0.05)(
        torch.from_numpy(query), indices_tuple=(anchors, anchors, negative_anchors, negatives),
        ref_emb=torch.from_numpy(np.concatenate([positive, queue])))
    got = score_embeddings(query, positive, queue,
                           EngineOptions(temperatures=(0.05,), in_batch=True))
    torch.testing.assert_close(got.loss[:, 0].mean(), want, rtol=1e-5, atol=1e-5)


def test_hardest_negative_ids_name_positives_below_n_and_shared_rows_above(rng):
    query, positive, shared = _data(rng)
    shared = shared.copy()
    shared[4] = query[2] + 0.01
    got = score_embeddings(query, positive, shared,
                           EngineOptions(temperatures=(0.1,), in_batch=True))
    row_ids = np.array([f"pair{i}" for i in range(N)], dtype=object)
    neg_ids = np.array([f"queue{k}" for k in range(K)], dtype=object)
    ids = hardest_negative_ids(got, row_ids, neg_ids)
    assert ids is not None
    index = got.hardest_negative_index.numpy()
    want = [f"pair{j}" if j < N else f"queue{j - N}" for j in index]
    assert list(ids) == want
    assert ids[2] == "queue4"
    only_rows = hardest_negative_ids(got, row_ids, None)
    assert only_rows is not None
    assert list(only_rows) == [f"pair{j}" if j < N else None for j in index]


def test_planning_counts_the_batch_and_the_pool():
    rows = np.zeros((3000, 64), dtype=np.float32)
    pool = np.ones((700, 64), dtype=np.float32)
    options = EngineOptions(max_memory=2**20, batch_size=1000, in_batch=True)
    one = engine.SimilarityPass(rows, rows, pool, NegativeMode.IN_BATCH_SHARED, options)
    assert one.num_scores == 3000 * (1000 + 700)
    assert one.score_bytes == 3000 * (1000 + 700) * 4
    plan = engine.plan_blocks(3000, 64, NegativeMode.IN_BATCH_SHARED, 0, "cpu", 2**20, 1000)
    assert (one.query_block, one.candidate_block) == (plan.query_block, plan.candidate_block)


def test_a_sweep_matches_scores_at_its_temperatures(rng):
    query, positive, shared = _data(rng)
    options = EngineOptions(in_batch=True, batch_size=10)
    temperatures = (0.05, 0.2, 1.0)
    swept = sweep_embeddings(query, positive, shared, temperatures, options)
    for t, temperature in enumerate(temperatures):
        single = score_embeddings(query, positive, shared,
                                  EngineOptions(temperatures=(temperature,), in_batch=True,
                                                batch_size=10))
        np.testing.assert_allclose(swept.grid.loss[:, t].numpy(), single.loss[:, 0].numpy(),
                                   rtol=1e-6, atol=1e-6)


def test_symmetric_stays_in_batch_only(rng):
    query, positive, shared = _data(rng)
    with pytest.raises(UsageError) as raised:
        score_embeddings(query, positive, shared, EngineOptions(in_batch=True, symmetric=True))
    assert str(raised.value) == "symmetric works with in-batch negatives only (leave out neg)"
    assert raised.value.for_command_line() == ("--symmetric works with in-batch negatives only "
                                               "(leave out --neg)")


# The command line.

ARGS = ("-q", "queries.npy", "-p", "positives.npy", "--neg", "distractors.npy", "--in-batch")


def test_score_command(data):
    result = run_cli("score", *ARGS, "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["negatives"] == "in-batch+shared"
    assert out["num_candidates"] == {"min": 1400, "max": 1400}  # 400 in the batch, 1000 shared
    want = reference(np.load("queries.npy"), np.load("positives.npy"),
                     np.load("distractors.npy"), temperature=out["temperature"], in_batch=True)
    assert out["loss"]["mean"] == pytest.approx(want.loss.mean(), rel=1e-5)


def test_sweep_command_agrees_with_score(data):
    result = run_cli("sweep-temperature", *ARGS, "--steps", "5", "--format", "json", "--quiet")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == 5
    for row in rows:
        score = run_cli("score", *ARGS, "-t", str(row["temperature"]), "--format", "json",
                        "--quiet")
        assert score.exit_code == 0, score.stderr
        assert json.loads(score.stdout)["loss"]["mean"] == pytest.approx(row["loss_mean"],
                                                                        rel=1e-6)


def test_symmetric_on_the_command_line(data):
    result = run_cli("score", *ARGS, "--symmetric")
    assert result.exit_code == 2
    assert result.stderr == ("error: --symmetric works with in-batch negatives only "
                             "(leave out --neg)\n")


def test_a_share_of_the_queries_sees_the_same_candidates(rng):
    """One rank's rows of a distributed run: the batch and the pool are those of a full run."""
    query, positive, shared = _data(rng)
    whole = score_embeddings(query, positive, shared,
                             EngineOptions(in_batch=True, batch_size=10))
    share = score_embeddings(query, positive, shared,
                             EngineOptions(in_batch=True, batch_size=10, query_rows=(7, 26)))
    np.testing.assert_array_equal(share.loss.numpy(), whole.loss[7:26].numpy())
    np.testing.assert_array_equal(share.hardest_negative_index.numpy(),
                                  whole.hardest_negative_index[7:26].numpy())
