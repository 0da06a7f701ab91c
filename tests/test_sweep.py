"""Temperature sweeps: grid values, the exact optimum, and the sweep-temperature command."""

from __future__ import annotations

import json
import math
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from info_nce import InfoNCE
from typer.testing import CliRunner

from infonce_cli.cli import app
from infonce_cli.engine import CachedPass, EngineOptions, score_embeddings
from infonce_cli.optimum import (
    Point,
    bracketed_root,
    interpolated_optimum,
    interpolated_root,
    slope_interpolant,
)
from infonce_cli.temperature import (
    NO_OPTIMUM_COLD,
    NO_OPTIMUM_HOT,
    RELATIVE_PRECISION,
    prepare_passes,
    sweep_embeddings,
    temperature_grid,
)

SWEEP_KEYS = {"rows", "best_grid", "optimum", "accuracy_at_1", "mrr", "n", "similarity",
              "negatives", "seconds"}


def _reference_first_order_gap(query, candidates, positive_index, temperature):
    """mean_i(E_softmax[x_i·] − x_i,pos) in float64 over explicit (N, C) similarity matrices."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=-1, keepdims=True)
    scores = q.astype(np.float64) @ c.astype(np.float64).T
    logits = scores / temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    expected = (weights * scores).sum(axis=1)
    return float((expected - scores[np.arange(len(q)), positive_index]).mean())


@pytest.mark.parametrize("negatives_key", [None, "paired", "shared"])
def test_grid_values_match_score_and_info_nce_pytorch(real_data, negatives_key):
    rows = slice(0, 300)
    query, positive = real_data["query"][rows], real_data["positive"][rows]
    negatives = None if negatives_key is None else real_data[negatives_key][
        rows if negatives_key == "paired" else slice(0, 500)]
    grid = temperature_grid(0.01, 1.0, 7)
    swept = sweep_embeddings(query, positive, negatives, grid)
    mode = "paired" if negatives_key == "paired" else "unpaired"
    for index, temperature in enumerate(grid):
        single = score_embeddings(query, positive, negatives,
                                  EngineOptions(temperatures=(temperature,))).loss[:, 0]
        np.testing.assert_allclose(swept.grid.loss[:, index].numpy(), single.numpy(),
                                   rtol=1e-6, atol=1e-6)
        oracle = InfoNCE(temperature=temperature, reduction="none", negative_mode=mode)(
            torch.from_numpy(query), torch.from_numpy(positive),
            None if negatives is None else torch.from_numpy(negatives))
        # Float32 rounding of the similarities is scaled by 1/τ in the logits.
        tolerance = 1e-5 * max(1.0, 0.05 / temperature)
        torch.testing.assert_close(swept.grid.loss[:, index], oracle, rtol=tolerance,
                                   atol=tolerance)


def test_optimum_matches_a_fine_brute_force_grid_and_the_first_order_condition(real_data):
    query, positive = real_data["query"][:400], real_data["positive"][:400]
    swept = sweep_embeddings(query, positive, None, temperature_grid(0.01, 1.0, 20))
    optimum = swept.optimum
    assert optimum.converged
    fine = np.geomspace(optimum.temperature / 1.05, optimum.temperature * 1.05, 201)
    losses = score_embeddings(query, positive, options=EngineOptions(
        temperatures=tuple(fine))).loss.double().mean(dim=0).numpy()
    assert abs(fine[np.argmin(losses)] / optimum.temperature - 1) < 5e-4  # grid step 4.9e-4
    assert optimum.loss_mean <= losses.min() + 1e-7
    gap = _reference_first_order_gap(query, positive, np.arange(400), optimum.temperature)
    assert abs(gap) < 1e-6
    # Either side of the optimum the slope in s = 1/τ changes sign.
    assert _reference_first_order_gap(query, positive, np.arange(400),
                                      optimum.temperature * 1.001) < 0
    assert _reference_first_order_gap(query, positive, np.arange(400),
                                      optimum.temperature / 1.001) > 0


def _exact_point(scale, negatives, positives):
    """Mean loss, slope and curvature in s of queries sharing ``negatives``, in float64."""
    loss = slope = curvature = 0.0
    for positive in positives:
        scores = np.append(negatives, positive)
        logits = scale * scores
        weights = np.exp(logits - logits.max())
        mean = (weights * scores).sum() / weights.sum()
        loss += math.log(weights.sum()) + logits.max() - scale * positive
        slope += mean - positive
        curvature += (weights * (scores - mean) ** 2).sum() / weights.sum()
    return Point(scale, *(v / len(positives) for v in (loss, slope, curvature)))


@pytest.mark.parametrize("pilot_error", [0.93, 1.07, 1.12])
def test_interpolated_root_between_probes_is_exact_where_a_cubic_is_not(rng, pilot_error):
    """Probes ±5% and ±15% around a pilot's estimate that is off by up to 12%: the slope's
    Hermite interpolant through all of them pins the root far below the precision."""
    negatives, positives = rng.normal(0, 0.05, size=2000), rng.normal(0.17, 0.03, size=64)
    low, high = 1.0, 1000.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = ((middle, high) if _exact_point(middle, negatives, positives).slope < 0
                     else (low, middle))
    root = (low + high) / 2
    pilot = root * pilot_error
    points = [_exact_point(pilot * (1 + d), negatives, positives)
              for d in (-0.15, -0.05, 0.0, 0.05, 0.15)]
    left = max((p for p in points if p.slope < 0), key=lambda p: p.scale)
    right = min((p for p in points if p.slope > 0), key=lambda p: p.scale)
    estimate, spread, used = interpolated_root(left, right, points)
    assert abs(estimate / root - 1) < 1e-8
    assert spread <= RELATIVE_PRECISION / 10 * estimate  # so no further pass is needed
    cubic = bracketed_root(slope_interpolant([left, right]), left, right)
    assert abs(cubic / root - 1) > RELATIVE_PRECISION  # the bracket's ends alone fall short
    optimum = interpolated_optimum(estimate, used, 0)
    assert optimum.loss_mean == pytest.approx(
        _exact_point(root, negatives, positives).loss, rel=1e-9)


def test_optimum_interpolated_between_the_grid_pass_probes(rng):
    """Streamed inputs large enough for a pilot: it places probes that the grid pass folds
    with their derivatives, and the optimum is interpolated between them, with no pass
    after the grid's."""
    n = 4096
    query = rng.normal(size=(n, 32)).astype(np.float32)
    positive = (query + rng.normal(size=query.shape)).astype(np.float32)
    swept = sweep_embeddings(query, positive, None, temperature_grid(0.01, 1.0, 16),
                             EngineOptions(max_memory=2**24))
    optimum = swept.optimum
    assert optimum.converged
    assert optimum.passes == 0
    assert optimum.gradient is None
    # The slope in s changes sign within the promised precision either side.
    rows = np.arange(n)
    assert _reference_first_order_gap(query, positive, rows, optimum.temperature * 1.000001) < 0
    assert _reference_first_order_gap(query, positive, rows, optimum.temperature / 1.000001) > 0
    at_optimum = score_embeddings(query, positive, options=EngineOptions(
        temperatures=(optimum.temperature,))).loss.double().mean().item()
    assert optimum.loss_mean == pytest.approx(at_optimum, rel=1e-6)


def test_a_dense_grid_holds_the_probes_and_keeps_every_grid_value(rng):
    """With 64 grid temperatures the pilot's probes are taken at the grid temperatures
    around its optimum (their moments, no exponentials of their own): the grid values are
    those of a plain score at each temperature, in order, and the optimum still needs no
    pass after the grid's."""
    from infonce_cli.temperature import _grid_probes, _pilot_probes

    n = 4096
    query = rng.normal(size=(n, 32)).astype(np.float32)
    positive = (query + rng.normal(size=query.shape)).astype(np.float32)
    grid = temperature_grid(0.01, 1.0, 64)
    options = EngineOptions(max_memory=2**24)
    held = _grid_probes(grid, _pilot_probes(prepare_passes(query, positive, None, options),
                                            grid))
    assert len(held) == 5
    swept = sweep_embeddings(query, positive, None, grid, options)
    assert swept.optimum.converged
    assert swept.optimum.passes == 0
    for index in (0, *held, 63):
        single = score_embeddings(query, positive, options=EngineOptions(
            temperatures=(grid[index],))).loss[:, 0]
        np.testing.assert_allclose(swept.grid.loss[:, index].numpy(), single.numpy(),
                                   rtol=1e-6, atol=1e-6)
    rows = np.arange(n)
    temperature = swept.optimum.temperature
    assert _reference_first_order_gap(query, positive, rows, temperature * 1.000001) < 0
    assert _reference_first_order_gap(query, positive, rows, temperature / 1.000001) > 0


@pytest.mark.parametrize("grid", [(0.5, 0.8, 1.0), (0.001, 0.002, 0.004)])
def test_optimum_beyond_the_grid_is_found(real_data, grid):
    query, positive = real_data["query"][:200], real_data["positive"][:200]
    inside = sweep_embeddings(query, positive, None, temperature_grid(0.01, 1.0, 30)).optimum
    outside = sweep_embeddings(query, positive, None, grid).optimum
    assert outside.converged
    assert outside.temperature == pytest.approx(inside.temperature, rel=2e-6)


def test_cached_and_streamed_passes_agree(real_data):
    args = (real_data["query"][:300], real_data["positive"][:300], real_data["paired"][:300])
    grid = temperature_grid(0.01, 1.0, 9)
    cached = sweep_embeddings(*args, grid, EngineOptions(max_memory=2**30))
    streamed = sweep_embeddings(*args, grid, EngineOptions(max_memory=2**12))
    np.testing.assert_allclose(cached.grid.loss.numpy(), streamed.grid.loss.numpy(), rtol=1e-6)
    assert cached.optimum.temperature == pytest.approx(streamed.optimum.temperature, rel=2e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_scores_are_kept_only_when_they_fit_the_budget_at_their_size(rng, symmetric):
    """The budget counts kept scores at their real size: 8 bytes each in float64."""
    query = rng.normal(size=(100, 8))
    positive = query + rng.normal(size=query.shape)
    num_scores = 100 * 100 * (2 if symmetric else 1)
    for dtype, size in ((torch.float32, 4), (torch.float64, 8)):
        for budget, kept in ((num_scores * size, True), (num_scores * size - 1, False)):
            options = EngineOptions(dtype=dtype, max_memory=budget, symmetric=symmetric)
            passes = prepare_passes(query, positive, None, options)
            assert all(isinstance(p, CachedPass) == kept for p in passes)
            if kept:
                held = sum(scored.scores.numel() * scored.scores.element_size()
                           for p in passes for block in p.blocks for scored in block.candidates)
                assert held <= budget


def test_no_finite_optimum_when_every_positive_wins(rng):
    query = rng.normal(size=(50, 16)).astype(np.float32)
    optimum = sweep_embeddings(query, query, None, (0.1, 1.0)).optimum
    assert optimum.temperature is None
    assert optimum.reason == NO_OPTIMUM_COLD


def test_no_finite_optimum_when_positives_lose_to_the_average(rng):
    query = rng.normal(size=(50, 16)).astype(np.float32)
    optimum = sweep_embeddings(query, -query, None, (0.1, 1.0)).optimum
    assert optimum.temperature is None
    assert optimum.reason == NO_OPTIMUM_HOT


def test_symmetric_sweep_matches_symmetric_score(real_data):
    query, positive = real_data["query"][:200], real_data["positive"][:200]
    swept = sweep_embeddings(query, positive, None, (0.05, 0.2), EngineOptions(symmetric=True))
    single = score_embeddings(query, positive, options=EngineOptions(temperatures=(0.2,),
                                                                     symmetric=True))
    np.testing.assert_allclose(swept.grid.loss[:, 1].numpy(), single.loss[:, 0].numpy(),
                               rtol=1e-6)
    assert swept.optimum.converged


def run(*args):
    return CliRunner().invoke(app, list(args))


BASE = ("-q", "queries.npy", "-p", "positives.npy")


def test_sweep_command_json(data):  # noqa: F811
    result = run("sweep-temperature", *BASE, "--steps", "12", "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out.keys() >= SWEEP_KEYS
    assert len(out["rows"]) == 12
    assert set(out["rows"][0]) == {"temperature", "loss_mean", "loss_std", "mi_lower_bound_nats",
                                   "ece"}
    assert out["rows"][0]["temperature"] == 0.01
    assert out["rows"][-1]["temperature"] == 1.0
    best = min(out["rows"], key=lambda row: row["loss_mean"])
    assert out["best_grid"] == {"temperature": best["temperature"], "loss_mean": best["loss_mean"]}
    assert out["optimum"]["converged"] is True
    assert out["optimum"]["loss_mean"] <= best["loss_mean"]
    score = json.loads(run("score", *BASE, "-t", str(out["rows"][3]["temperature"]),
                           "--format", "json").stdout)
    assert score["loss"]["mean"] == pytest.approx(out["rows"][3]["loss_mean"], rel=1e-6)
    assert score["accuracy_at_1"] == out["accuracy_at_1"]


def test_explicit_temperatures_and_csv(data):  # noqa: F811
    result = run("sweep-temperature", *BASE, "--temperatures", "0.1,0.02,0.05", "-f", "csv")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "temperature,loss_mean,loss_std,mi_lower_bound_nats,ece"
    assert [float(line.split(",")[0]) for line in lines[1:]] == [0.02, 0.05, 0.1]


def test_linear_grid(data):  # noqa: F811
    out = json.loads(run("sweep-temperature", *BASE, "--min", "0.1", "--max", "0.3", "--steps",
                         "3", "--spacing", "linear", "-f", "json").stdout)
    assert [row["temperature"] for row in out["rows"]] == [0.1, 0.2, 0.3]


def test_score_with_fitted_temperature(data):  # noqa: F811
    sweep = json.loads(run("sweep-temperature", *BASE, "-f", "json").stdout)
    fitted = json.loads(run("score", *BASE, "-t", "auto", "-f", "json").stdout)
    assert fitted["temperature_fitted"] is True
    assert fitted["temperature"] == pytest.approx(sweep["optimum"]["temperature"], rel=2e-6)
    assert fitted["loss"]["mean"] == pytest.approx(sweep["optimum"]["loss_mean"], rel=1e-6)


def test_auto_temperature_without_optimum_is_an_error(data):  # noqa: F811
    result = run("score", "-q", "queries.npy", "-p", "queries.npy", "-t", "auto")
    assert result.exit_code == 1
    assert result.stderr == ("error: --temperature auto finds no finite optimum: "
                             f"{NO_OPTIMUM_COLD}; give a temperature instead\n")


def test_no_optimum_in_json(data):  # noqa: F811
    out = json.loads(run("sweep-temperature", "-q", "queries.npy", "-p", "queries.npy",
                         "--steps", "3", "-f", "json", "--quiet").stdout)
    assert out["optimum"] == {"temperature": None, "reason": NO_OPTIMUM_COLD, "passes": 0}


@pytest.mark.parametrize("suffix", ["png", "svg", "html"])
def test_plot_file(data, suffix):  # noqa: F811
    result = run("sweep-temperature", *BASE, "--steps", "8", "--plot", f"curve.{suffix}",
                 "-f", "json")
    assert result.exit_code == 0
    content = (data / f"curve.{suffix}").read_bytes()
    if suffix == "png":
        assert content.startswith(b"\x89PNG\r\n\x1a\n")
        return
    if suffix == "html":
        assert content.startswith(b"<!DOCTYPE html>")
        content = content[content.index(b"<svg"):content.rindex(b"</svg>") + 6]
    figure = ElementTree.fromstring(content)
    assert figure.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(figure.itertext())
    optimum = json.loads(result.stdout)["optimum"]["temperature"]
    assert f"optimum τ = {optimum:.4g}" in texts
    assert len(figure.findall(".//{*}polyline")) == 1  # the curve over the 8 grid points
    assert len(figure.find(".//{*}polyline").get("points").split()) == 8


def test_table_has_plot_and_optimum(data):  # noqa: F811
    result = run("sweep-temperature", *BASE, "--steps", "8", "-f", "table")
    assert result.exit_code == 0
    assert "optimum τ = " in result.stdout
    assert "mean loss against τ (log scale)" in result.stdout


@pytest.mark.parametrize(("args", "line"), [
    (("--min", "0"), "error: --min must be a finite number > 0, got 0"),
    (("--min", "0.5", "--max", "0.1"), "error: --min (0.5) must be below --max (0.1)"),
    (("--steps", "1"), "error: --steps must be at least 2, got 1"),
    (("--temperatures", "0.1,-1"), "error: --temperatures: every temperature must be > 0, got -1"),
    (("--temperatures", "a,b"),
     "error: --temperatures: expected numbers like 0.01,0.05,0.1, got 'a,b'"),
    (("--plot", "curve.pdf"), "error: --plot curve.pdf: use a .png, .svg or .html file name"),
])
def test_bad_grids(data, args, line):  # noqa: F811
    result = run("sweep-temperature", *BASE, *args)
    assert result.exit_code == 2
    assert result.stderr == line + "\n"
    assert not any(p.name.startswith("curve") for p in data.iterdir())


def test_grid_helper_is_exact_at_the_ends():
    grid = temperature_grid(0.01, 1.0, 50)
    assert grid[0] == 0.01
    assert grid[-1] == 1.0
    assert len(grid) == 50
    ratios = np.array(grid[1:]) / np.array(grid[:-1])
    np.testing.assert_allclose(ratios, 100 ** (1 / 49), rtol=1e-9)
    assert math.isclose(grid[1], 0.01 * 100 ** (1 / 49), rel_tol=1e-9)


def test_plot_without_matplotlib_is_a_clear_error(data, monkeypatch):  # noqa: F811
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = run("sweep-temperature", *BASE, "--plot", "curve.png")
    assert result.exit_code == 1
    assert result.stderr == ("error: --plot needs matplotlib for .png, which is not "
                             "installed: pip install 'infonce-cli[plot]' (or write .svg or "
                             ".html)\n")
    assert not (data / "curve.png").exists()
    for suffix in ("svg", "html"):  # written by the tool itself
        result = run("sweep-temperature", *BASE, "--steps", "8", "--plot", f"curve.{suffix}",
                     "--quiet")
        assert result.exit_code == 0, result.stderr
        assert b"<svg" in (data / f"curve.{suffix}").read_bytes()
