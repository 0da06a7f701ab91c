"""The CLI as a user meets it: exit codes, exact error lines, parsed outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infonce_cli.errors import ExitCode

from .conftest import run_cli
from .reference import reference

SCORE_KEYS = {
    "n", "num_candidates", "temperature", "similarity", "negatives", "loss", "accuracy_at_1",
    "recall_at", "mrr", "ndcg_at_10", "mean_rank", "median_rank", "mi_lower_bound_nats",
    "mi_lower_bound_bits", "device", "dtype", "seconds",
}
PER_SAMPLE_COLUMNS = ["index", "loss", "positive_score", "hardest_negative_score",
                      "hardest_negative_index", "rank", "num_candidates", "p_positive"]


run = run_cli


def score_json(*args: str) -> dict:
    result = run("score", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


BASE = ("-q", "queries.npy", "-p", "positives.npy")


def test_json_has_every_documented_key_and_true_values(data):
    out = score_json(*BASE, "--neg", "hard_negatives.npy", "-t", "0.1")
    assert out.keys() >= SCORE_KEYS
    assert set(out["loss"]) == {"mean", "std", "median", "min", "max", "p05", "p95"}
    assert set(out["recall_at"]) == {"1", "5", "10"}
    q, p, n = (np.load(f) for f in ("queries.npy", "positives.npy", "hard_negatives.npy"))
    want = reference(q, p, n, temperature=0.1)
    assert out["n"] == 400
    assert out["negatives"] == "paired"
    assert out["similarity"] == "cosine"
    assert out["num_candidates"] == {"min": 8, "max": 8}
    assert out["loss"]["mean"] == pytest.approx(want.loss.mean(), rel=1e-5)
    assert out["loss"]["std"] == pytest.approx(want.loss.std(), rel=1e-4)
    assert out["accuracy_at_1"] == pytest.approx((want.rank == 1).mean())
    assert out["recall_at"]["5"] == pytest.approx((want.rank <= 5).mean())
    assert out["mrr"] == pytest.approx((1 / want.rank).mean())
    assert out["mi_lower_bound_nats"] == pytest.approx(np.log(8) - want.loss.mean(), rel=1e-5)
    assert out["mi_lower_bound_bits"] == pytest.approx(out["mi_lower_bound_nats"] / np.log(2))
    assert (out["device"], out["dtype"], out["temperature"]) == ("cpu", "float32", 0.1)


@pytest.mark.parametrize(("extra", "mode", "candidates"), [
    ((), "in-batch", 400),
    (("--neg", "distractors.npy"), "shared", 1001),
    (("--neg", "hard_negatives.npy", "--in-batch"), "in-batch+paired", 3200),
    (("--batch-size", "64"), "in-batch", 64),
])
def test_negative_modes(data, extra, mode, candidates):
    out = score_json(*BASE, *extra)
    assert out["negatives"] == mode
    assert out["num_candidates"]["max"] == candidates


def test_parquet_columns_give_the_same_numbers_as_npy(data):
    from_npy = score_json(*BASE)
    from_parquet = score_json("--query", "pairs.parquet", "--query-col", "query",
                              "--pos", "pairs.parquet", "--pos-col", "positive")
    assert from_parquet["loss"] == from_npy["loss"]


def test_npz_key(data):
    np.savez("both.npz", q=np.load("queries.npy"), p=np.load("positives.npy"))
    out = score_json("-q", "both.npz", "--query-key", "q", "-p", "both.npz", "--pos-key", "p")
    assert out["loss"] == score_json(*BASE)["loss"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_per_sample_files(data, suffix):
    target = f"rows{suffix}"
    out = score_json("--query", "pairs.parquet", "--query-col", "query", "--pos", "pairs.parquet",
                     "--pos-col", "positive", "--id-col", "id", "--per-sample", target)
    if suffix == ".parquet":
        rows = pq.read_table(target).to_pylist()
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(Path(target).read_text())))
    else:
        rows = [json.loads(line) for line in Path(target).read_text().splitlines()]
    assert len(rows) == 400
    assert list(rows[0]) == ["index", "id", *PER_SAMPLE_COLUMNS[1:]]
    ids = pq.read_table("pairs.parquet").column("id").to_pylist()
    assert [row["id"] for row in rows] == ids
    losses = np.array([float(row["loss"]) for row in rows])
    assert losses.mean() == pytest.approx(out["loss"]["mean"], rel=1e-6)
    p_positive = np.array([float(row["p_positive"]) for row in rows])
    np.testing.assert_allclose(p_positive, np.exp(-losses), rtol=1e-6)


def test_per_sample_to_stdout_sends_the_aggregate_to_stderr(data):
    result = run("score", *BASE, "--per-sample", "-", "--format", "json", "--quiet")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 400
    assert list(rows[0]) == PER_SAMPLE_COLUMNS
    assert json.loads(result.stderr)["n"] == 400


def test_output_file_and_csv(data):
    result = run("score", *BASE, "--format", "csv", "--output", "agg.csv")
    assert result.exit_code == 0
    assert result.stdout == ""
    (row,) = list(csv.DictReader(io.StringIO(Path("agg.csv").read_text())))
    assert float(row["loss.mean"]) == pytest.approx(score_json(*BASE)["loss"]["mean"])
    assert row["recall_at.10"]
    assert row["num_candidates.max"] == "400"


def test_table_format(data):
    result = run("score", *BASE, "--format", "table")
    assert result.exit_code == 0
    for label in ("loss mean ± std", "accuracy@1", "recall@10", "MRR", "nDCG@10",
                  "MI lower bound", "400 pairs · in-batch · cosine · τ = 0.05"):
        assert label in result.stdout


def test_piped_auto_format_is_json(data):
    assert json.loads(run("score", *BASE).stdout)["n"] == 400


@pytest.mark.parametrize(("gate", "code"), [
    (("--fail-above", "0.01"), ExitCode.GATE_FAILED),
    (("--fail-above", "100"), ExitCode.OK),
    (("--fail-below-accuracy", "0.99"), ExitCode.GATE_FAILED),
    (("--fail-below-accuracy", "0.5"), ExitCode.OK),
])
def test_quality_gates(data, gate, code):
    result = run("score", *BASE, *gate, "--format", "json")
    assert result.exit_code == code
    assert json.loads(result.stdout)["n"] == 400  # results are printed either way
    if code == ExitCode.GATE_FAILED:
        assert result.stderr.splitlines()[-1].startswith("error: quality gate failed: ")


def _write_bad_inputs(root: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(root / "ints.npy", np.ones((400, 384), dtype=np.int64))
    np.save(root / "cube.npy", np.ones((3, 4, 5), dtype=np.float32))
    np.save(root / "short.npy", rng.normal(size=(399, 384)).astype(np.float32))
    np.save(root / "narrow.npy", rng.normal(size=(400, 8)).astype(np.float32))
    nan = rng.normal(size=(400, 384)).astype(np.float32)
    nan[[7, 9]] = np.nan
    np.save(root / "nan.npy", nan)
    zero = rng.normal(size=(400, 384)).astype(np.float32)
    zero[3] = 0
    np.save(root / "zero.npy", zero)
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "empty.npy", np.zeros((0, 384), dtype=np.float32))
    (root / "garbage.npy").write_bytes(b"not an array")
    (root / "bad.parquet").write_bytes(b"PAR1 nope")
    pq.write_table(pa.table({"a": pa.array([[1.0, 2.0], [1.0]])}), root / "ragged.parquet")
    pq.write_table(pa.table({"a": pa.array([[1.0, 2.0], None])}), root / "nulls.parquet")
    pq.write_table(pa.table({"a": pa.array([[1.0], [2.0]]), "b": pa.array([[1.0], [2.0]])}),
                   root / "two.parquet")


ERRORS = [
    (("-q", "missing.npy", "-p", "positives.npy"), 1, "error: missing.npy: no such file"),
    (("-q", "ints.npy", "-p", "positives.npy"), 1,
     "error: ints.npy: expected a float array (float16/32/64), got int64"),
    (("-q", "cube.npy", "-p", "positives.npy"), 1,
     "error: cube.npy: expected a 2-D float array (N, d), got shape (3, 4, 5)"),
    (("-q", "queries.npy", "-p", "short.npy"), 1,
     "error: short.npy: has 399 rows but queries.npy has 400; row i of each must be a pair"),
    (("-q", "queries.npy", "-p", "narrow.npy"), 1,
     "error: narrow.npy: vectors have dimension 8 but queries.npy has 384"),
    (("-q", "nan.npy", "-p", "positives.npy"), 1,
     "error: nan.npy: 2 rows contain NaN or Inf (first: row 7)"),
    (("-q", "zero.npy", "-p", "positives.npy"), 1,
     "error: zero.npy: 1 row has zero norm, which cosine similarity cannot score (first: row "
     "3); use --similarity dot or l2, or drop them"),
    (("-q", "objects.npy", "-p", "positives.npy"), 1,
     "error: objects.npy: holds Python objects (pickled data), which are never loaded; save it "
     "without them (floats for vectors, strings or integers for ids)"),
    (("-q", "empty.npy", "-p", "positives.npy"), 1,
     "error: empty.npy: empty array of shape (0, 384)"),
    (("-q", "garbage.npy", "-p", "positives.npy"), 1,
     "error: garbage.npy: not a valid .npy file (its first bytes are not the .npy signature)"),
    (("-q", "bad.parquet", "-p", "positives.npy"), 1,
     "error: bad.parquet: not a readable Parquet file"),
    (("-q", "ragged.parquet", "-p", "positives.npy"), 1,
     "error: ragged.parquet:a: ragged lists: row 1 has 1 values, row 0 has 2"),
    (("-q", "nulls.parquet", "-p", "positives.npy"), 1,
     "error: nulls.parquet:a: 1 null rows or lists; every row needs a vector"),
    (("-q", "two.parquet", "-p", "positives.npy"), 1,
     "error: two.parquet: 2 list columns (a, b); choose one with the matching --*-col option"),
    (("-q", "pairs.parquet", "--query-col", "nope", "-p", "positives.npy"), 1,
     "error: pairs.parquet: no column 'nope'; columns: id (string), query "
     "(fixed_size_list<element: float>[384]), positive (fixed_size_list<element: float>[384])"),
    (("-q", "queries.npy", "-p", "positives.npy", "-t", "0"), 2,
     "error: --temperature must be > 0, got 0"),
    (("-q", "queries.npy", "-p", "positives.npy", "-t", "-1"), 2,
     "error: --temperature must be > 0, got -1"),
    (("-q", "queries.npy", "-p", "positives.npy", "--device", "tpu"), 2,
     "error: --device: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    (("-q", "queries.npy", "-p", "positives.npy", "--batch-size", "0"), 2,
     "error: --batch-size must be at least 1, got 0"),
    (("-q", "queries.npy", "-p", "positives.npy", "--in-batch"), 2,
     "error: --in-batch pools the batch with the negatives of --neg (paired (N, M, d) or shared "
     "(K, d)): give --neg; without it, negatives are in-batch already"),
    (("-q", "queries.npy", "-p", "positives.npy", "--neg", "distractors.npy", "--symmetric"), 2,
     "error: --symmetric works with in-batch negatives only (leave out --neg)"),
    (("-q", "queries.npy", "-p", "positives.npy", "--max-memory", "lots"), 2,
     "error: --max-memory: cannot read 'lots'; use e.g. 512MiB or 2GB"),
    (("-q", "queries.npy", "-p", "positives.npy", "--output", "queries.npy"), 2,
     "error: --output queries.npy is also an input file; choose another path"),
    (("-q", "queries.npy", "-p", "positives.npy", "--output", "no/such/dir/out.json"), 1,
     "error: no/such/dir/out.json: directory 'no/such/dir' does not exist"),
    (("-q", "queries.npy", "-p", "positives.npy", "--per-sample", "rows.txt"), 2,
     "error: --per-sample rows.txt: use a .parquet, .csv or .jsonl file name, or - for JSONL "
     "on stdout"),
]


@pytest.mark.parametrize(("args", "code", "line"), ERRORS, ids=[e[2][7:60] for e in ERRORS])
def test_bad_input_gives_one_error_line_and_no_output(data, args, code, line):
    _write_bad_inputs(data)
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    result = run("score", *args, "--per-sample", "rows.parquet", "--output", "agg.json") \
        if "--output" not in args and "--per-sample" not in args else run("score", *args)
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.splitlines()[0].startswith(line)
    assert len(result.stderr.splitlines()) == 1
    after = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    assert after == before  # nothing created, nothing modified


def test_debug_shows_the_traceback(data):
    result = run("score", "-q", "missing.npy", "-p", "positives.npy", "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith("error: missing.npy: no such file")


def test_inspect_reports_norms_and_bad_rows(data):
    _write_bad_inputs(data)
    result = run("inspect", "queries.npy", "nan.npy", "pairs.parquet", "--format", "json")
    assert result.exit_code == 0
    files = json.loads(result.stdout)["files"]
    queries = np.load("queries.npy")
    norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    (q,) = files[0]["arrays"]
    assert q["shape"] == [400, 384]
    assert q["dtype"] == "float32"
    assert q["norm_min"] == pytest.approx(norms.min())
    assert q["norm_max"] == pytest.approx(
        norms.max())
    assert files[1]["arrays"][0]["non_finite_rows"] == 2
    assert files[2]["columns"]["id"] == "string"
    assert files[2]["rows"] == 400
    assert [a["name"] for a in files[2]["arrays"]] == ["query", "positive"]
    table = run("inspect", "queries.npy", "--format", "table")
    assert table.exit_code == 0
    assert "400×384" in table.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("infonce 0.")


def test_symmetric_and_dot_run(data):
    sym = score_json(*BASE, "--symmetric", "-s", "dot", "-t", "1")
    plain = score_json(*BASE, "-s", "dot", "-t", "1")
    assert sym.get("symmetric") is True
    assert sym["loss"]["mean"] != plain["loss"]["mean"]
    assert sym["accuracy_at_1"] == plain["accuracy_at_1"]  # ranks are query → positive


def test_read_only_inputs_are_left_alone(data):
    before = Path("queries.npy").read_bytes()
    score_json(*BASE, "--per-sample", "rows.parquet")
    assert Path("queries.npy").read_bytes() == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(data):
    result = run("score", *BASE, "--device", "cuda")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --device cuda: no CUDA device is available here")
