"""The engine against the float64 loop reference, in every negative mode and similarity."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from infonce_cli import engine
from infonce_cli.engine import EngineOptions, NegativeMode, score_embeddings
from infonce_cli.errors import UsageError
from infonce_cli.similarity import Similarity, paired, prepare_rows

from .reference import reference

N, M, K, D = 37, 5, 23, 12


def _data(rng, scale=1.0):
    query = rng.normal(size=(N, D)).astype(np.float32)
    positive = (query + rng.normal(scale=scale, size=(N, D))).astype(np.float32)
    paired = rng.normal(size=(N, M, D)).astype(np.float32)
    shared = rng.normal(size=(K, D)).astype(np.float32)
    return query, positive, paired, shared


CASES = {
    # name: (negatives key, engine kwargs, reference kwargs)
    "in-batch": (None, {}, {}),
    "in-batch, batch 8": (None, {"batch_size": 8}, {"batch_size": 8}),
    "paired": ("paired", {}, {}),
    "shared": ("shared", {}, {}),
    "in-batch+paired": ("paired", {"in_batch": True}, {"in_batch": True}),
    "in-batch+paired, batch 10": ("paired", {"in_batch": True, "batch_size": 10},
                                  {"in_batch": True, "batch_size": 10}),
    "in-batch+shared": ("shared", {"in_batch": True}, {"in_batch": True}),
    "in-batch+shared, batch 10": ("shared", {"in_batch": True, "batch_size": 10},
                                  {"in_batch": True, "batch_size": 10}),
    "symmetric": (None, {"symmetric": True}, {"symmetric": True}),
    "symmetric, batch 6": (None, {"symmetric": True, "batch_size": 6},
                           {"symmetric": True, "batch_size": 6}),
}


@pytest.mark.parametrize("similarity", list(Similarity))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64_loop(rng, case, similarity):
    query, positive, paired, shared = _data(rng)
    neg_key, engine_kwargs, ref_kwargs = CASES[case]
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    temperature = 0.1 if similarity is Similarity.COSINE else 5.0
    options = EngineOptions(temperatures=(temperature,), similarity=similarity, **engine_kwargs)
    got = score_embeddings(query, positive, negatives, options)
    want = reference(query, positive, negatives, temperature=temperature, kind=similarity.value,
                     **ref_kwargs)
    scale = np.abs(want.loss).max() + 1
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)
    np.testing.assert_array_equal(got.num_candidates.numpy(), want.num_candidates)
    np.testing.assert_array_equal(got.hardest_negative_index.numpy(), want.hardest_negative_index)
    np.testing.assert_allclose(got.positive_score.numpy(), want.positive_score, rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(got.hardest_negative_score.numpy(), want.hardest_negative_score,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["in-batch, batch 8", "paired", "shared", "in-batch+paired"])
def test_every_row_path_matches_float64_loop(rng, monkeypatch, case):
    """The path a GPU takes (every row searched, no flags waited for), run on the CPU."""
    monkeypatch.setattr(engine, "_picks_rows", lambda device: False)
    query, positive, paired, shared = _data(rng)
    neg_key, engine_kwargs, ref_kwargs = CASES[case]
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    got = score_embeddings(query, positive, negatives,
                           EngineOptions(temperatures=(0.1,), max_memory=2**12, **engine_kwargs))
    want = reference(query, positive, negatives, temperature=0.1, **ref_kwargs)
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)
    np.testing.assert_array_equal(got.hardest_negative_index.numpy(), want.hardest_negative_index)


@pytest.mark.parametrize("picks_rows", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_hardest_negatives_read_from_the_top_lists_are_the_searched_ones(rng, monkeypatch,
                                                                         case, picks_rows):
    """With top-k lists kept (for hubness) the hardest negative is their first entry: the
    same index and score as the search without them, a copy of a positive tying with it
    included, on both row paths and in small blocks."""
    monkeypatch.setattr(engine, "_picks_rows", lambda device: picks_rows)
    query, positive, paired, shared = _data(rng)
    positive[5] = positive[3]  # row 3's hardest in-batch negative ties with its positive
    neg_key, engine_kwargs, _ = CASES[case]
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    options = EngineOptions(temperatures=(0.1,), max_memory=2**12, **engine_kwargs)
    searched = score_embeddings(query, positive, negatives, options)
    listed = score_embeddings(query, positive, negatives, replace(options, top_k=3))
    assert torch.equal(listed.hardest_negative_index, searched.hardest_negative_index)
    assert torch.equal(listed.hardest_negative_score, searched.hardest_negative_score)
    assert torch.equal(listed.rank, searched.rank)
    assert torch.equal(listed.top_index[:, 0], listed.hardest_negative_index)


@pytest.mark.parametrize("max_memory", [2**20, 2**29, 2**32])
def test_gpu_blocks_are_larger_and_stay_within_the_budget(max_memory):
    """On a GPU the blocks are folded whole, so they are sized by the memory budget (with
    every temporary counted), not by the CPU's cache. Sizing needs no GPU."""
    rows = np.zeros((100_000, 768), dtype=np.float32)
    sizes = {}
    for device in ("cpu", "cuda"):
        options = EngineOptions(device=torch.device(device), max_memory=max_memory)
        one = engine.SimilarityPass(rows, rows, None, NegativeMode.IN_BATCH, options)
        sizes[device] = one.query_block * one.candidate_block
    assert sizes["cuda"] * engine._GPU_BYTES_PER_SCORE <= max(max_memory, 24 * 64 * 64)
    assert sizes["cuda"] >= sizes["cpu"] or max_memory < 2**24


def test_modes_follow_shapes(rng):
    query, positive, paired, shared = _data(rng)
    assert score_embeddings(query, positive).mode is NegativeMode.IN_BATCH
    assert score_embeddings(query, positive, shared).mode is NegativeMode.SHARED
    assert score_embeddings(query, positive, paired).mode is NegativeMode.PAIRED
    pooled = score_embeddings(query, positive, paired, EngineOptions(in_batch=True))
    assert pooled.mode is NegativeMode.IN_BATCH_PAIRED
    queue = score_embeddings(query, positive, shared, EngineOptions(in_batch=True))
    assert queue.mode is NegativeMode.IN_BATCH_SHARED


def test_symmetric_needs_in_batch(rng):
    query, positive, _, shared = _data(rng)
    with pytest.raises(UsageError, match="symmetric works with in-batch negatives only") as raised:
        score_embeddings(query, positive, shared, EngineOptions(symmetric=True))
    assert raised.value.for_command_line().startswith(
        "--symmetric works with in-batch negatives only")


@pytest.mark.parametrize("neg_key", [None, "paired", "shared"])
@pytest.mark.parametrize("max_memory", [2**12, 2**16, 2**20, 2**30])
def test_block_sizes_do_not_change_results(rng, neg_key, max_memory):
    """Blocks of any size, including ones that do not divide N, give the same numbers."""
    query, positive, paired, shared = _data(rng)
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    whole = score_embeddings(query, positive, negatives, EngineOptions(max_memory=2**34))
    blocked = score_embeddings(query, positive, negatives, EngineOptions(max_memory=max_memory))
    np.testing.assert_allclose(blocked.loss.numpy(), whole.loss.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(blocked.rank.numpy(), whole.rank.numpy())
    np.testing.assert_array_equal(blocked.hardest_negative_index.numpy(),
                                  whole.hardest_negative_index.numpy())


def test_real_data_against_loop(real_data):
    """Real MiniLM vectors (raw, unnormalised) in the pooled mode, where near-duplicates abound."""
    rows = slice(0, 48)
    query, positive = real_data["query"][rows], real_data["positive"][rows]
    paired = real_data["paired"][rows]
    for kind in ("cosine", "dot"):
        options = EngineOptions(temperatures=(0.05,), similarity=Similarity(kind), in_batch=True,
                                max_memory=2**16)
        got = score_embeddings(query, positive, paired, options)
        want = reference(query, positive, paired, temperature=0.05, kind=kind, in_batch=True)
        np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(got.rank.numpy(), want.rank)


def test_float64_is_closer_to_reference_than_float32(rng):
    query, positive, paired, _ = _data(rng)
    want = reference(query, positive, paired, temperature=0.05).loss
    got = score_embeddings(query, positive, paired,
                           EngineOptions(dtype=torch.float64)).loss[:, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_close_and_reports_float32_losses(real_data, dtype):
    rows = slice(0, 256)
    args = (real_data["query"][rows], real_data["positive"][rows])
    full = score_embeddings(*args).loss.double().mean()
    low = score_embeddings(*args, options=EngineOptions(dtype=dtype))
    assert low.loss.dtype == torch.float32
    assert abs(low.loss.double().mean() - full) / full < 2e-2


def test_multiple_temperatures_match_single_runs(rng):
    query, positive, paired, _ = _data(rng)
    temperatures = (0.02, 0.1, 1.0)
    multi = score_embeddings(query, positive, paired, EngineOptions(temperatures=temperatures))
    for t, temperature in enumerate(temperatures):
        single = score_embeddings(query, positive, paired,
                                  EngineOptions(temperatures=(temperature,)))
        np.testing.assert_allclose(multi.loss[:, t].numpy(), single.loss[:, 0].numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("neg_key", [None, "paired", "shared"])
def test_tiny_temperatures_where_most_terms_underflow(rng, neg_key):
    """At τ = 0.002 most exp(s·(x − max)) underflow float32 (s·(x − max) down to −1000),
    which the engine clamps to avoid the CPU's slow path: the losses must not move."""
    query, positive, paired, shared = _data(rng, scale=0.5)
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    temperatures = (0.002, 0.01, 0.5)
    # Three temperatures fold through the path that clamps only where needed; one, always.
    several = score_embeddings(query, positive, negatives,
                               EngineOptions(temperatures=temperatures))
    for t, temperature in enumerate(temperatures):
        want = reference(query, positive, negatives, temperature=temperature)
        one = score_embeddings(query, positive, negatives,
                               EngineOptions(temperatures=(temperature,)))
        scale = np.abs(want.loss).max() + 1
        for got in (several.loss[:, t], one.loss[:, 0]):
            np.testing.assert_allclose(got.numpy(), want.loss, rtol=1e-5, atol=1e-5 * scale)


def test_fortran_order_and_big_endian_inputs_give_the_same_result(rng):
    query, positive, paired, _ = _data(rng)
    base = score_embeddings(query, positive, paired).loss
    odd = score_embeddings(np.asfortranarray(query), positive.astype(">f4"),
                           paired.astype(">f4")).loss
    np.testing.assert_array_equal(odd.numpy(), base.numpy())


# Block planning: a pure function of the shapes, the device type and the budget.

PLAN_SIZES = [(1, 8), (37, 12), (5000, 384), (100_000, 768)]


@pytest.mark.parametrize("max_memory", [2**12, 2**20, 2**24, 2**29, 2**34])
@pytest.mark.parametrize("batch_size", [None, 100, 1000])
@pytest.mark.parametrize("mode", [NegativeMode.IN_BATCH, NegativeMode.SHARED,
                                  NegativeMode.IN_BATCH_PAIRED, NegativeMode.IN_BATCH_SHARED])
def test_cpu_blocks_stay_within_the_cache_sized_block_and_the_budget(mode, batch_size,
                                                                     max_memory):
    for n, dim in PLAN_SIZES:
        plan = engine.plan_blocks(n, dim, mode, 5, "cpu", max_memory, batch_size)
        scores = plan.query_block * plan.candidate_block
        # 12 working bytes a score, within 16 MiB and the budget (but never below 64 × 64)
        assert scores * 12 <= max(min(max_memory, 16 * 2**20), 12 * 64 * 64)
        assert 1 <= plan.query_block <= min(n, batch_size or n, 512)
        assert 64 <= plan.candidate_block <= 4096
        if plan.candidate_block > 256:
            assert plan.candidate_block % 256 == 0  # round shapes for the matrix product


@pytest.mark.parametrize("max_memory", [2**12, 2**20, 2**24, 2**29, 2**34])
def test_gpu_blocks_are_sized_by_the_budget(max_memory):
    for n, dim in PLAN_SIZES:
        gpu = engine.plan_blocks(n, dim, NegativeMode.IN_BATCH, 0, "cuda", max_memory, None)
        cpu = engine.plan_blocks(n, dim, NegativeMode.IN_BATCH, 0, "cpu", max_memory, None)
        assert gpu.query_block * gpu.candidate_block * 24 <= max(max_memory, 24 * 64 * 64)
        assert gpu.query_block <= min(n, 4096)
        assert 64 <= gpu.candidate_block <= 16384
        if gpu.candidate_block > 256:
            assert gpu.candidate_block % 256 == 0
        if max_memory >= 2**25:  # 24 bytes a score on a GPU, 12 on the CPU
            assert gpu.query_block * gpu.candidate_block >= cpu.query_block * cpu.candidate_block


def test_blocks_are_as_large_as_allowed_when_the_budget_is_ample():
    cpu = engine.plan_blocks(100_000, 384, NegativeMode.IN_BATCH, 0, "cpu", 2**34, None)
    gpu = engine.plan_blocks(100_000, 384, NegativeMode.IN_BATCH, 0, "cuda", 2**34, None)
    assert (cpu.query_block, cpu.candidate_block) == (512, 2560)  # 16 MiB of 12-byte scores
    assert cpu.query_block * cpu.candidate_block * 12 <= 16 * 2**20
    assert (gpu.query_block, gpu.candidate_block) == (4096, 16384)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("max_memory", [2**12, 2**20, 2**29])
@pytest.mark.parametrize(("n", "per_row", "dim"), [(37, 5, 12), (100_000, 16, 768),
                                                   (50_000, 1000, 384)])
def test_paired_blocks_hold_whole_rows_of_negatives_within_the_budget(device, max_memory, n,
                                                                      per_row, dim):
    plan = engine.plan_blocks(n, dim, NegativeMode.PAIRED, per_row, device, max_memory, None)
    assert plan.candidate_block == 0  # a query's negatives come with its block
    assert 1 <= plan.query_block <= n
    budget = max_memory if device == "cuda" else min(max_memory, 16 * 2**20)
    per_score = 24 if device == "cuda" else 12
    if plan.query_block > 1:
        assert plan.query_block * per_row * (dim + per_score) * 4 <= budget


def test_a_pass_uses_its_plan():
    rows = np.zeros((3000, 64), dtype=np.float32)
    options = EngineOptions(max_memory=2**20, batch_size=1000)
    one = engine.SimilarityPass(rows, rows, None, NegativeMode.IN_BATCH, options)
    plan = engine.plan_blocks(3000, 64, NegativeMode.IN_BATCH, 0, "cpu", 2**20, 1000)
    assert (one.query_block, one.candidate_block) == (plan.query_block, plan.candidate_block)
    assert one.num_scores == 3000 * 1000
    assert one.score_bytes == 3000 * 1000 * 4
    wide = engine.SimilarityPass(rows, rows, None, NegativeMode.IN_BATCH,
                                 EngineOptions(dtype=torch.float64, batch_size=1000))
    assert wide.score_bytes == 3000 * 1000 * 8


# Process-wide settings are the caller's.

@pytest.mark.parametrize("callers", [True, False])
def test_the_callers_denormal_setting_survives_a_score(rng, callers):
    query, positive, paired, _ = _data(rng)
    previous = engine.flushes_denormals()
    try:
        if not torch.set_flush_denormal(callers) and callers:
            pytest.skip("this CPU cannot flush denormals")
        assert engine.flushes_denormals() is callers
        score_embeddings(query, positive)
        score_embeddings(query, positive, paired)
        assert engine.flushes_denormals() is callers
        smallest_normal = torch.tensor(torch.finfo(torch.float32).tiny)
        assert (smallest_normal / 2 == 0).item() is callers
    finally:
        torch.set_flush_denormal(previous)


# Extreme magnitudes: the cosine of rows at any scale, against the float64 loop.

EXTREME_CASES = {
    "in-batch": (None, {}),
    "shared": ("shared", {}),
    "paired": ("paired", {}),
    "in-batch+paired": ("paired", {"in_batch": True}),
    "in-batch+shared": ("shared", {"in_batch": True}),
}


@pytest.mark.parametrize("case", list(EXTREME_CASES))
@pytest.mark.parametrize(("source", "scale"), [(np.float32, 1e-30), (np.float32, 1e-20),
                                               (np.float32, 1e30), (np.float64, 1e39),
                                               (np.float64, 1e-50), (np.float64, 1e150)])
def test_cosine_of_tiny_and_huge_rows_matches_float64_loop(rng, case, source, scale):
    """Float32 rows whose squares underflow or overflow, and float64 rows outside float32's
    range scored in float32: the cosine is exact to float32 rounding."""
    query, positive, paired, shared = _data(rng)
    neg_key, kwargs = EXTREME_CASES[case]
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]

    def scaled(rows):
        return None if rows is None else (rows.astype(np.float64) * scale).astype(source)

    args = [scaled(query), scaled(positive), scaled(negatives)]
    assert all(np.isfinite(a).all() for a in args if a is not None)
    options = EngineOptions(temperatures=(0.1,), max_memory=2**14, **kwargs)
    got = score_embeddings(*args, options)
    want = reference(*args, temperature=0.1, **kwargs)
    np.testing.assert_allclose(got.positive_score.numpy(), want.positive_score, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got.loss[:, 0].numpy(), want.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.rank.numpy(), want.rank)
    np.testing.assert_array_equal(got.hardest_negative_index.numpy(), want.hardest_negative_index)


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
@pytest.mark.parametrize("case", list(EXTREME_CASES))
def test_a_copy_of_an_extreme_positive_ties_with_it(rng, case, scale):
    """A candidate bit-identical to the positive gets exactly the positive's score, at any
    magnitude, so it counts against it (rank 2 when nothing else beats it)."""
    query, positive, paired, shared = _data(rng, scale=0.01)
    neg_key, kwargs = EXTREME_CASES[case]
    negatives = {"paired": paired, "shared": shared, None: None}[neg_key]
    query, positive = query * np.float32(scale), positive * np.float32(scale)
    if negatives is None:
        positive[5] = positive[3]
        copies = {3: 5}
    elif negatives.ndim == 2:
        negatives = negatives.copy()
        negatives[7] = positive[3]
        copies = {3: 7 if not kwargs else N + 7}
    else:
        negatives = negatives.copy()
        negatives[3, 2] = positive[3]
        copies = {3: 2 if not kwargs else N + 3 * M + 2}
    got = score_embeddings(query, positive, negatives, EngineOptions(**kwargs))
    for row, index in copies.items():
        assert got.hardest_negative_score[row].item() == got.positive_score[row].item()
        assert got.hardest_negative_index[row].item() == index
        assert got.rank[row].item() == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_prepared_rows_are_unit_rows_at_any_magnitude(dtype):
    info = torch.finfo(dtype)
    rows = torch.tensor([[3.0, 4.0], [-5.0, 12.0]], dtype=torch.float64)
    for scale in (info.tiny * 4, info.tiny ** 0.5, 1.0, info.max ** 0.5, info.max / 16):
        given = (rows * scale).to(dtype)
        got = prepare_rows(given, Similarity.COSINE).double()
        want = torch.tensor([[x / math.hypot(*row) for x in row] for row in given.tolist()],
                            dtype=torch.float64)  # hypot neither overflows nor underflows
        torch.testing.assert_close(got, want, rtol=2 * info.eps, atol=0)
        scores = paired(prepare_rows(given, Similarity.COSINE), given[:, None, :],
                        Similarity.COSINE)
        torch.testing.assert_close(scores.double(), torch.ones(2, 1, dtype=torch.float64),
                                   rtol=4 * info.eps, atol=0)


def test_rows_in_range_are_prepared_exactly_as_before():
    """Rows whose norm can be taken directly are divided by it, bit for bit."""
    rows = torch.from_numpy(np.random.default_rng(0).normal(size=(64, 33)).astype(np.float32))
    direct = rows / torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    assert torch.equal(prepare_rows(rows, Similarity.COSINE), direct)
    mixed = rows.clone()
    mixed[::2] *= 2.0**-100  # rescaled rows do not change their neighbours
    assert torch.equal(prepare_rows(mixed, Similarity.COSINE)[1::2], direct[1::2])
    assert torch.equal(prepare_rows(mixed, Similarity.COSINE)[::2], direct[::2])
