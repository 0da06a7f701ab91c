"""Evaluating retrieval embeddings: masking false negatives, several positives per query,
worst cases, bootstrap intervals, and comparing two models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss
from typer.testing import CliRunner

from infonce_cli.cli import app
from infonce_cli.engine import EngineOptions, score_embeddings
from infonce_cli.errors import ExitCode
from infonce_cli.runs import candidate_ids
from infonce_cli.stats import bootstrap_interval, paired_sign_flip_p_values

from .reference import reference

N, M, K, D = 40, 4, 30, 10


@pytest.fixture
def data(rng):
    query = rng.normal(size=(N, D)).astype(np.float32)
    positive = (query + rng.normal(size=(N, D))).astype(np.float32)
    return query, positive, rng.normal(size=(N, M, D)).astype(np.float32), rng.normal(
        size=(K, D)).astype(np.float32)


def _check(got, want, masked):
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)
    np.testing.assert_array_equal(got.num_candidates.numpy(), want.num_candidates)
    np.testing.assert_array_equal(got.masked.numpy(), masked)


def test_in_batch_masking_by_positive_id_matches_the_loop(data, rng):
    query, positive, _, _ = data
    pos_ids = rng.integers(0, 12, N)  # many rows share a positive id
    ids = candidate_ids(pos_ids, None)
    got = score_embeddings(query, positive, None, EngineOptions(temperatures=(0.1,)), ids=ids)
    want = reference(query, positive, temperature=0.1,
                     drop=lambda i, j: pos_ids[j] == pos_ids[i])
    same = (pos_ids[:, None] == pos_ids[None, :]).sum(axis=1) - 1
    _check(got, want, same)


def test_shared_and_paired_masking_by_negative_id_matches_the_loop(data, rng):
    query, positive, paired, shared = data
    pos_ids = np.array([f"doc{i}" for i in range(N)])
    shared_ids = np.array([f"doc{i}" for i in rng.integers(0, 2 * N, K)])
    paired_ids = np.array([[f"doc{j}" for j in row] for row in rng.integers(0, N, (N, M))])
    for negatives, neg_ids, drop in (
        (shared, shared_ids, lambda i, k: shared_ids[k] == pos_ids[i]),
        (paired, paired_ids, lambda i, m: paired_ids[i, m] == pos_ids[i]),
    ):
        got = score_embeddings(query, positive, negatives, EngineOptions(temperatures=(0.1,)),
                               ids=candidate_ids(pos_ids, neg_ids))
        want = reference(query, positive, negatives, temperature=0.1, drop=drop)
        masked = np.array([sum(drop(i, j) for j in range(len(neg_ids) if neg_ids.ndim == 1
                                                         else M)) for i in range(N)])
        _check(got, want, masked)


def test_pooled_masking_covers_positives_and_hard_negatives(data, rng):
    query, positive, paired, _ = data
    pos_ids = rng.integers(0, 15, N)
    neg_ids = rng.integers(0, 15, (N, M))

    def drop(i, j):
        if j < N:
            return pos_ids[j] == pos_ids[i]
        row, m = divmod(j - N, M)
        return neg_ids[row, m] == pos_ids[i]

    got = score_embeddings(query, positive, paired, EngineOptions(
        temperatures=(0.1,), in_batch=True), ids=candidate_ids(pos_ids, neg_ids))
    want = reference(query, positive, paired, temperature=0.1, in_batch=True, drop=drop)
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)


@pytest.mark.parametrize("mode", ["shared", "paired", "in-batch"])
def test_mask_duplicates_removes_exactly_the_copies(real_data, mode):
    rows = slice(0, 200)
    query, positive = real_data["query"][rows], real_data["positive"][rows]
    if mode == "shared":
        negatives = np.concatenate([real_data["shared"][:100], positive[:50]])
        copies = np.r_[np.ones(50, int), np.zeros(150, int)]
    elif mode == "paired":
        negatives = np.concatenate([real_data["paired"][rows][:, :3], positive[:, None]], axis=1)
        copies = np.ones(200, int)
    else:
        positive = positive.copy()
        positive[1] = positive[0]  # rows 0 and 1 share a positive vector
        negatives = None
        copies = np.r_[1, 1, np.zeros(198, int)]
    kept = score_embeddings(query, positive, negatives)
    dropped = score_embeddings(query, positive, negatives, EngineOptions(mask_duplicates=True))
    np.testing.assert_array_equal(dropped.masked.numpy(), copies)
    np.testing.assert_array_equal(dropped.num_candidates.numpy(),
                                  kept.num_candidates.numpy() - copies)
    assert (dropped.rank <= kept.rank).all()
    assert (dropped.rank[torch.from_numpy(copies) == 1] < kept.rank[torch.from_numpy(copies) == 1]
            ).all()


def _groups(rng, queries=30, per_query=(1, 4), d=12):
    centres = rng.normal(size=(queries, d)).astype(np.float32)
    counts = rng.integers(per_query[0], per_query[1] + 1, queries)
    labels = np.repeat(np.arange(queries), counts)
    positives = (centres[labels] + rng.normal(size=(len(labels), d))).astype(np.float32)
    return centres, labels, positives


def test_several_positives_match_ntxent_and_supcon_with_labels(rng):
    centres, labels, positives = _groups(rng)
    query = centres[labels]
    tensors = (torch.from_numpy(centres), torch.arange(len(centres)), torch.from_numpy(positives),
               torch.from_numpy(labels))
    ntxent = NTXentLoss(temperature=0.1)(tensors[0], tensors[1], ref_emb=tensors[2],
                                         ref_labels=tensors[3])
    masked = score_embeddings(query, positives, None, EngineOptions(temperatures=(0.1,)),
                              ids=candidate_ids(None, None, labels))
    assert masked.loss[:, 0].double().mean().item() == pytest.approx(ntxent.item(), rel=1e-5)

    unmasked = score_embeddings(query, positives, None, EngineOptions(temperatures=(0.1,)))
    per_query = np.bincount(labels, weights=unmasked.loss[:, 0].double().numpy()) / np.bincount(
        labels)
    supcon = SupConLoss(temperature=0.1)(tensors[0], tensors[1], ref_emb=tensors[2],
                                         ref_labels=tensors[3])
    assert per_query.mean() == pytest.approx(supcon.item(), rel=1e-5)


def test_bootstrap_is_reproducible_and_covers_a_known_mean():
    rng = np.random.default_rng(5)
    covered = 0
    for trial in range(60):
        sample = rng.normal(loc=0.3, scale=1.0, size=(200, 1))
        low, high = bootstrap_interval(sample, resamples=400, seed=trial)
        again = bootstrap_interval(sample, resamples=400, seed=trial)
        assert (low[0], high[0]) == (again[0][0], again[1][0])
        covered += low[0] <= 0.3 <= high[0]
    assert covered >= 52  # nominal 95% of 60 is 57; the bootstrap is a little narrow


def test_sign_flip_test_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(6)
    shifted = rng.normal(loc=0.4, size=(300, 1))
    noise = rng.normal(loc=0.0, size=(300, 1))
    assert paired_sign_flip_p_values(shifted, 500, 1)[0] < 0.01
    assert paired_sign_flip_p_values(noise, 500, 1)[0] > 0.05


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def files(tmp_path, monkeypatch, real_data):
    rows = slice(0, 400)
    np.save(tmp_path / "q.npy", real_data["query"][rows])
    np.save(tmp_path / "p.npy", real_data["positive"][rows])
    np.save(tmp_path / "n.npy", real_data["paired"][rows])
    noise = np.random.default_rng(3).normal(scale=0.6, size=(400, 384)).astype(np.float32)
    np.save(tmp_path / "q_noisy.npy", real_data["query"][rows] + noise * np.linalg.norm(
        real_data["query"][rows], axis=1, keepdims=True) / math.sqrt(384))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_score_masking_through_the_cli(files):
    pos_ids = np.arange(400)
    pos_ids[1] = pos_ids[0]
    np.save("pos_ids.npy", pos_ids)
    result = run("score", "-q", "q.npy", "-p", "p.npy", "--pos-ids", "pos_ids.npy",
                 "--per-sample", "rows.jsonl", "-f", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["masked"] == 2
    assert out["skipped"] == 0
    rows = [json.loads(line) for line in Path("rows.jsonl").read_text().splitlines()]
    assert [row["masked"] for row in rows[:3]] == [1, 1, 0]


def test_a_query_left_without_negatives(files):
    neg_ids = np.tile(np.arange(400)[:, None], (1, 7))  # every hard negative is the positive
    neg_ids[5:] += 10_000
    np.save("neg_ids.npy", neg_ids)
    np.save("pos_ids.npy", np.arange(400))
    args = ("score", "-q", "q.npy", "-p", "p.npy", "--neg", "n.npy", "--pos-ids", "pos_ids.npy",
            "--neg-ids", "neg_ids.npy", "-f", "json")
    refused = run(*args)
    assert refused.exit_code == 1
    assert refused.stderr == ("error: masking left 5 queries with no negative (first: row 0); "
                              "pass --allow-empty to leave them out\n")
    allowed = run(*args, "--allow-empty")
    assert allowed.exit_code == 0
    out = json.loads(allowed.stdout)
    assert (out["masked"], out["skipped"], out["n"]) == (35, 5, 400)


def test_worst_cases(files):
    result = run("score", "-q", "q.npy", "-p", "p.npy", "--neg", "n.npy", "--worst", "5",
                 "--per-sample", "rows.jsonl", "-f", "json")
    assert result.exit_code == 0, result.stderr
    worst = json.loads(result.stdout)["worst"]
    rows = [json.loads(line) for line in Path("rows.jsonl").read_text().splitlines()]
    expected = sorted(rows, key=lambda row: (-row["loss"], row["index"]))[:5]
    assert [w["index"] for w in worst] == [row["index"] for row in expected]
    assert set(worst[0]) == {"index", "id", "loss", "positive_score", "hardest_negative_index",
                             "hardest_negative_id", "hardest_negative_score", "rank"}
    assert worst[0]["loss"] == pytest.approx(expected[0]["loss"])


def test_score_intervals_are_reproducible(files):
    args = ("score", "-q", "q.npy", "-p", "p.npy", "--ci", "--bootstrap", "300", "-f", "json")
    first, second = (json.loads(run(*args, "--seed", "4").stdout) for _ in range(2))
    assert first["ci"] == second["ci"]
    assert first["ci"]["loss_mean"]["low"] < first["loss"]["mean"] < first["ci"]["loss_mean"][
        "high"]
    assert json.loads(run(*args, "--seed", "5").stdout)["ci"] != first["ci"]


def test_compare_finds_a_noisier_model_worse(files):
    args = ("compare", "--query-a", "q.npy", "--pos-a", "p.npy", "--query-b", "q_noisy.npy",
            "--pos-b", "p.npy", "--bootstrap", "500", "-f", "json")
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n"] == 400
    metrics = {"loss_mean", "accuracy_at_1", "mrr", "ndcg_at_10", "recall_at_1", "recall_at_5",
               "recall_at_10"}
    assert set(out["a"]) == set(out["b"]) == set(out["difference"]) == metrics
    loss = out["difference"]["loss_mean"]
    assert set(loss) == {"value", "ci_low", "ci_high", "p_value"}
    assert loss["value"] == pytest.approx(out["b"]["loss_mean"]["value"]
                                         - out["a"]["loss_mean"]["value"])
    assert loss["ci_low"] > 0
    assert loss["p_value"] < 0.01
    gated = run(*args, "--fail-if-worse")
    assert gated.exit_code == ExitCode.GATE_FAILED
    assert gated.stderr.startswith("error: quality gate failed: B is worse than A on loss_mean")


def test_compare_a_model_with_itself(files):
    result = run("compare", "--query-a", "q.npy", "--pos-a", "p.npy", "--query-b", "q.npy",
                 "--pos-b", "p.npy", "--neg-a", "n.npy", "--neg-b", "n.npy", "--fail-if-worse",
                 "--bootstrap", "200", "-f", "json")
    assert result.exit_code == 0
    diff = json.loads(result.stdout)["difference"]
    assert all(d["value"] == 0 and d["p_value"] == 1 for d in diff.values())


def test_compare_needs_the_same_pairs(files):
    np.save("short.npy", np.load("q.npy")[:-1])
    result = run("compare", "--query-a", "q.npy", "--pos-a", "p.npy", "--query-b", "short.npy",
                 "--pos-b", "short.npy")
    assert result.exit_code == 1
    assert result.stderr == ("error: short.npy: has 399 pairs but q.npy has 400; compare needs "
                             "the same pairs in the same order\n")


def test_the_api_names_the_model_whose_arrays_do_not_line_up(rng, tmp_path):
    """In-memory arrays have no file names: messages name them query_a, pos_b, corpus_b."""
    import infonce_cli
    from infonce_cli.errors import InputError, UsageError

    q = rng.normal(size=(50, 8)).astype(np.float32)
    p = (q + rng.normal(size=q.shape)).astype(np.float32)
    with pytest.raises(InputError) as raised:
        infonce_cli.compare(q, p, q[:40], p[:40])
    assert str(raised.value) == ("query_b: has 40 pairs but query_a has 50; compare needs "
                                 "the same pairs in the same order")
    with pytest.raises(InputError) as raised:
        infonce_cli.compare(q, p[:40], q, p)
    assert str(raised.value) == ("pos_a: has 40 rows but query_a has 50; row i of each must "
                                 "be a pair")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n0\t0\t1\n1\t1\t1\n")
    with pytest.raises(InputError) as raised:
        infonce_cli.compare_retrieval([q, q, q], [p, p, p[:, :4]], str(qrels))
    assert str(raised.value) == "corpus_c: vectors have dimension 4 but query_c has 8"
    with pytest.raises(UsageError) as raised:
        infonce_cli.compare_retrieval([q] * 27, [p] * 27, str(qrels))
    assert str(raised.value) == "compare takes 2 to 26 models (named a to z), got 27"


def test_several_positives_through_the_cli(files, rng):
    centres, labels, positives = _groups(rng, queries=50, d=384)
    np.save("mq.npy", centres[labels])
    np.save("mp.npy", positives)
    np.save("qids.npy", labels)
    out = json.loads(run("score", "-q", "mq.npy", "-p", "mp.npy", "--query-ids", "qids.npy",
                         "-t", "0.1", "-f", "json").stdout)
    assert out["multi_positive"] == "ntxent"
    assert out["per_query"]["queries"] == 50
    assert out["masked"] == int(sum(c * (c - 1) for c in np.bincount(labels)))
    supcon = json.loads(run("score", "-q", "mq.npy", "-p", "mp.npy", "--query-ids", "qids.npy",
                            "--multi-positive", "supcon", "-t", "0.1", "-f", "json").stdout)
    assert "masked" not in supcon
    assert supcon["per_query"]["loss_mean"] > 0
