"""What a new user meets on a first afternoon: numbers that are never silently wrong, clear
refusals, notes that explain a surprising result, help that reads at 80 columns."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli

BASE = ("-q", "queries.npy", "-p", "positives.npy")
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("args", "line"), [
    (("--fail-below-accuracy", "71.45"),
     "error: --fail-below-accuracy is a fraction between 0 and 1 (0.7 for 70%); got 71.45"),
    (("--fail-below-accuracy", "-1"),
     "error: --fail-below-accuracy is a fraction between 0 and 1 (0.7 for 70%); got -1"),
    (("--fail-above", "-0.5"),
     "error: --fail-above is a mean loss in nats, a number ≥ 0; got -0.5"),
    (("--worst", "-1"), "error: --worst must be at least 0, got -1"),
    (("--bootstrap", "0", "--ci"), "error: --bootstrap must be between 100 and 100,000, got 0"),
    (("--bootstrap", "1", "--ci"), "error: --bootstrap must be between 100 and 100,000, got 1"),
    (("--bootstrap", "10000000", "--ci"),
     "error: --bootstrap must be between 100 and 100,000, got 10000000"),
    (("--bootstrap", "500"), "error: --bootstrap sets the resamples of --ci: add --ci"),
    (("--temperature", "hot"), "error: --temperature: expected a number > 0 or auto, got 'hot'"),
])
def test_out_of_range_options_are_usage_errors(data, args, line):
    result = run_cli("score", *BASE, *args)
    assert result.exit_code == 2
    assert result.stderr == line + "\n"
    assert result.stdout == ""


def test_a_huge_grid_is_refused_before_anything_is_allocated(data):
    result = run_cli("sweep-temperature", *BASE, "--steps", "1000000000")
    assert result.exit_code == 2
    assert result.stderr == "error: --steps must be at most 10000, got 1000000000\n"


def test_a_prefix_of_a_command_suggests_it():
    result = run_cli("sweep", "-q", "q.npy")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no command 'sweep'; did you mean "
                                    "'sweep-temperature'?")


@pytest.mark.parametrize(("temperature", "line"), [
    ("1e-40", "error: temperature 1e-40 is too small for float32 scores: 1/τ overflows "
              "float32; use a temperature above 2.94e-39, or --dtype float64"),
    ("1e38", "error: temperature 1e+38 is too large for float32 scores: 1/τ is below the "
             "smallest normal float32 (1.18e-38); use a temperature below 8.51e+37, or "
             "--dtype float64"),
])
def test_a_temperature_whose_scale_float32_cannot_hold_is_refused(data, temperature, line):
    """1/τ beyond float32's range, or below its normal numbers (which the CPU flushes to
    0, turning an excluded candidate's −inf into NaN), is refused, not printed as null;
    float64 holds it."""
    scored = run_cli("score", *BASE, "-t", temperature, "--format", "json")
    assert (scored.exit_code, scored.stdout, scored.stderr) == (2, "", line + "\n")
    swept = run_cli("sweep-temperature", *BASE, "--temperatures", f"{temperature},0.05",
                    "--format", "json")
    assert (swept.exit_code, swept.stdout, swept.stderr) == (2, "", line + "\n")
    wide = run_cli("score", *BASE, "-t", temperature, "--dtype", "float64", "--format", "json")
    assert wide.exit_code == 0, wide.stderr
    assert np.isfinite(json.loads(wide.stdout)["loss"]["mean"])


def test_a_loss_at_chance_is_explained_by_its_cause(data):
    """Every loss at log|C|: a τ so large that the softmax is uniform is named as such, and
    rows that score every candidate alike are not blamed on τ, in score and in a sweep."""
    hot = json.loads(run_cli("score", *BASE, "-t", "1e30", "--format", "json").stdout)
    assert [note for note in hot["notes"] if "log|C|" in note] == [
        "every query's loss is log|C| = 5.99 nats to rounding: at τ = 1e+30 the softmax over "
        "the cosine scores is uniform, so τ is far too large for them; try temperature auto "
        "or a sweep"]
    np.save("same.npy", np.repeat(np.load("queries.npy")[:1], 50, axis=0))
    tied = run_cli("score", "-q", "same.npy", "-p", "same.npy", "--format", "json")
    notes = json.loads(tied.stdout)["notes"]
    assert notes[0] == ("every candidate of each query scores as its positive, so each loss "
                        "is log|C| = 3.91 nats at any temperature: these rows cannot tell the "
                        "pairs apart (the MI lower bound is 0)")
    assert not any("τ = " in note for note in notes)
    swept = json.loads(run_cli("sweep-temperature", "-q", "same.npy", "-p", "same.npy",
                               "--steps", "3", "--format", "json").stdout)
    assert swept["optimum"]["reason"] == ("every candidate scores as its query's positive, so "
                                          "the loss is log|C| at every τ")


def test_overflowing_dot_products_are_refused(data):
    big = np.load("queries.npy").astype(np.float32) * np.float32(1e20)
    np.save("big.npy", big)
    result = run_cli("score", "-q", "big.npy", "-p", "big.npy", "-s", "dot", "--format", "json")
    assert result.exit_code == 1
    assert "null" not in result.stdout
    assert result.stderr.startswith("error: the loss is not finite at temperature 0.05")
    in_float64 = run_cli("score", "-q", "big.npy", "-p", "big.npy", "-s", "dot", "--dtype",
                         "float64", "-t", "1e40", "--format", "json")
    assert in_float64.exit_code == 0, in_float64.stderr
    assert np.isfinite(json.loads(in_float64.stdout)["loss"]["mean"])
    # float16 scores themselves overflow: no temperature helps, float32 does.
    np.save("hundred.npy", np.load("queries.npy").astype(np.float32) * np.float32(100))
    half = run_cli("score", "-q", "hundred.npy", "-p", "hundred.npy", "-s", "dot", "--dtype",
                   "float16", "-t", "1e9")
    assert half.exit_code == 1
    assert re.fullmatch(r"error: the loss is not finite at temperature 1e\+09 for \d+ pairs "
                        r"\(first: row \d+\): the scores or the logits overflow float16; use "
                        r"--dtype float32, a larger temperature, or rescale the vectors\n",
                        half.stderr)


def test_raw_scores_float32_would_flush_are_refused(data):
    """Vectors around 1e-19 have dot products below float32's normal numbers, which the CPU
    flushes to zero: ranks came out wrong with exit 0. They are refused under dot and l2;
    float64 scores them, and vectors around 1e-14 still score exactly in float32."""
    query = np.load("queries.npy").astype(np.float64)[:100]
    positive = np.load("positives.npy").astype(np.float64)[:100]
    scores = query @ positive.T
    want = (scores > np.diag(scores)[:, None]).sum(axis=1) + 1  # no ties in these rows
    for scale, name in ((1e-19, "tiny"), (1e-14, "small")):
        np.save(f"{name}_q.npy", (query * scale).astype(np.float32))
        np.save(f"{name}_p.npy", (positive * scale).astype(np.float32))
    for similarity in ("dot", "l2"):
        refused = run_cli("score", "-q", "tiny_q.npy", "-p", "tiny_p.npy", "-s", similarity)
        assert refused.exit_code == 1
        assert refused.stderr.startswith(f"error: under --similarity {similarity} these "
                                         "vectors score below the normal range of float32, "
                                         "which the CPU flushes to zero (")
        assert refused.stderr.endswith("): use --dtype float64 or multiply the vectors by a "
                                       "power of two (2^64, say)\n")
    for args in (("tiny_q.npy", "tiny_p.npy", "-t", "1e-37", "--dtype", "float64"),
                 ("small_q.npy", "small_p.npy", "-t", "1e-27")):
        scored = run_cli("score", "-q", args[0], "-p", args[1], "-s", "dot", *args[2:],
                         "--per-sample", "rows.jsonl", "--format", "json")
        assert scored.exit_code == 0, scored.stderr
        rows = [json.loads(line) for line in Path("rows.jsonl").read_text().splitlines()]
        assert [row["rank"] for row in rows] == want.tolist()


def test_copies_of_the_positive_among_the_negatives_are_pointed_out(data):
    result = run_cli("score", *BASE, "--neg", "positives.npy", "--format", "json")
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    run_cli("score", *BASE, "--neg", "positives.npy", "--per-sample", "rows.jsonl")
    rows = [json.loads(line) for line in Path("rows.jsonl").read_text().splitlines()]
    tied = sum(row["hardest_negative_score"] == row["positive_score"] for row in rows)
    assert tied > 300
    notes = [note for note in out["notes"] if "scoring exactly as the positive" in note]
    assert notes == [f"{tied} queries have their hardest negative scoring exactly as the "
                     "positive (a bit-identical copy, most likely), which counts against the "
                     "rank; mask_duplicates drops such copies"]
    assert out["accuracy_at_1"] == 0.0
    assert f"note: {tied} queries have their hardest negative" in result.stderr
    assert "--mask-duplicates drops such copies" in result.stderr
    masked = json.loads(run_cli("score", *BASE, "--neg", "positives.npy", "--mask-duplicates",
                                "--format", "json").stdout)
    assert masked["accuracy_at_1"] > 0.5
    assert not [note for note in masked["notes"] if "exactly as the positive" in note]


def test_a_temperature_unsuited_to_the_score_scale_is_pointed_out(data):
    result = run_cli("score", *BASE, "-s", "dot", "--format", "json")
    out = json.loads(result.stdout)
    assert out["mi_lower_bound_nats"] < 0
    assert any("may not suit the scale of the dot scores" in note for note in out["notes"])
    assert "try --temperature auto" in result.stderr
    fitted = json.loads(run_cli("score", *BASE, "-s", "dot", "-t", "auto", "--format",
                                "json").stdout)
    assert not any("may not suit" in note for note in fitted["notes"])


def test_the_table_shows_what_json_has(data):
    np.save("qids.npy", np.arange(400) // 2)
    result = run_cli("score", *BASE, "--query-ids", "qids.npy", "--multi-positive", "supcon",
                     "--batch-size", "100", "--format", "table")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "in-batch, batches of 100" in text
    assert "queries (supcon)" in text
    assert "per query: loss mean" in text
    assert "loss median [5th, 95th pct]" in text


def test_a_file_name_with_a_newline_gives_one_error_line(data):
    result = run_cli("score", "-q", "bad\nname.npy", "-p", "positives.npy")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "bad\\nname.npy" in result.stderr


def test_a_closed_stdout_ends_the_run_quietly(tmp_path):
    sample = Path(__file__).resolve().parent.parent / "sample_data"
    command = (f"{BIN}/infonce score -q {sample}/queries.npy -p {sample}/positives.npy "
               "--per-sample - --quiet | head -2")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert len(result.stdout.splitlines()) == 2
    assert result.returncode in (0, 141)
    assert "error" not in result.stderr
    assert "Exception" not in result.stderr


@pytest.mark.parametrize("command", ["score", "sweep-temperature", "compare", "inspect"])
def test_help_reads_at_80_columns(command):
    result = subprocess.run([f"{BIN}/infonce", command, "--help"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout  # nothing cut
    assert "<bool>" not in result.stdout
    assert "Example" in result.stdout
    for option in re.findall(r"--[a-z0-9-]+", result.stdout):
        assert not option.endswith("-")
    if command == "sweep-temperature":
        assert "infonce-cli[plot]" in result.stdout


def test_inspect_reports_every_file_and_fails_if_any_is_bad(data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"vec": pa.array([[1.0, 2.0], [3.0, 4.0]]),
                             "labels": pa.array([[1, 2, 3], [4, 5, 6]])}), "mixed.parquet")
    result = run_cli("inspect", "queries.npy", "missing.npy", "mixed.parquet", "--format", "json")
    assert result.exit_code == 1
    assert result.stderr == "error: missing.npy: no such file\n"
    files = json.loads(result.stdout)["files"]
    assert [info["file"] for info in files] == ["queries.npy", "mixed.parquet"]
    arrays = {array["name"]: array for array in files[1]["arrays"]}
    assert arrays["labels"]["dtype"] == "int64"
    assert arrays["vec"]["norm_max"] == pytest.approx(5.0)


def test_paired_negative_ids_as_a_parquet_list_column(data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    neg_ids = rng.integers(0, 150, (400, 7))
    pos_ids = np.arange(400) % 150
    np.save("pos_ids.npy", pos_ids)
    np.save("neg_ids.npy", neg_ids)
    negatives = np.load("hard_negatives.npy")
    pq.write_table(pa.table({"negs": pa.array([[list(v) for v in row] for row in negatives]),
                             "neg_id": pa.array(list(neg_ids))}), "negs.parquet")
    from_column = run_cli("score", *BASE, "--neg", "negs.parquet", "--neg-col", "negs",
                          "--neg-id-col", "neg_id", "--pos-ids", "pos_ids.npy", "--format",
                          "json")
    assert from_column.exit_code == 0, from_column.stderr
    from_file = run_cli("score", *BASE, "--neg", "hard_negatives.npy", "--neg-ids",
                        "neg_ids.npy", "--pos-ids", "pos_ids.npy", "--format", "json")
    out = json.loads(from_column.stdout)
    assert out["masked"] == int((neg_ids == pos_ids[:, None]).sum()) > 0
    assert out["loss"] == json.loads(from_file.stdout)["loss"]


def test_shell_completion_is_offered():
    result = subprocess.run([f"{BIN}/infonce", "--show-completion", "bash"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "_infonce_completion" in result.stdout
    assert "--install-completion" in run_cli("--help").stdout


def _pairs(tmp_path: Path, scale: float = 1.0, dtype: str = "float32") -> tuple[str, str]:
    rng = np.random.default_rng(7)
    query = rng.normal(size=(7, 5))
    positive = query + 0.3 * rng.normal(size=(7, 5))
    np.save(tmp_path / "q.npy", (query * scale).astype(dtype))
    np.save(tmp_path / "p.npy", (positive * scale).astype(dtype))
    return str(tmp_path / "q.npy"), str(tmp_path / "p.npy")


def _float64_losses(query, positive, temperature, cosine=True):
    """Per-pair in-batch InfoNCE in float64, scaled so that nothing overflows."""
    if cosine:
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        positive = positive / np.linalg.norm(positive, axis=1, keepdims=True)
    logits = (query @ positive.T) / temperature
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return lse - np.diag(logits)


@pytest.mark.parametrize(("args", "line"), [
    (("score", "--query", "-", "--pos", "-"),
     "error: --query and --pos both read standard input (-), which holds one input: save all "
     "but one of them to files, or take a different column of one Parquet stream for each"),
    (("score", "--query", "-", "--query-col", "x", "--pos", "-", "--pos-col", "x"),
     "error: --query and --pos both read standard input (-), which holds one input: save all "
     "but one of them to files, or take a different column of one Parquet stream for each"),
    (("compare", "--query-a", "-", "--pos-a", "p.npy", "--query-b", "-", "--pos-b", "p.npy"),
     "error: --query-a and --query-b both read standard input (-), which holds one input: "
     "save all but one of them to files, or take a different column of one Parquet stream "
     "for each"),
    (("score", "--query", "q.npy", "--pos", "p.npy", "--output", "-", "--per-sample", "-"),
     "error: --output and --per-sample both write to standard output (-): send one of them "
     "to a file"),
])
def test_standard_input_and_output_are_one_stream_each(tmp_path, monkeypatch, args, line):
    """Standard input is read once: two inputs on it would score one file against itself;
    two outputs on standard output would interleave."""
    _pairs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stderr == line + "\n"
    assert result.stdout == ""


def test_output_dash_is_standard_output(tmp_path, monkeypatch):
    _pairs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("score", "-q", "q.npy", "-p", "p.npy", "--output", "-", "--quiet")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["n"] == 7
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("args", [
    ("score", "-q", "q.npy", "-p", "p.npy", "--dtype", "float128"),
    ("score", "-q", "q.npy", "-p", "p.npy", "--batch-size", "abc"),
    ("score", "-q", "q.npy", "-p", "p.npy", "--bogus"),
    ("score", "-p", "p.npy"),
    ("--bogus",),
])
def test_command_line_mistakes_are_one_error_line(tmp_path, monkeypatch, args):
    _pairs(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert re.fullmatch(r"error: .+ \(see infonce( score)? --help\)\n", result.stderr)


def test_a_softmax_too_sharp_for_float32_has_no_calibration(tmp_path, monkeypatch):
    """At τ = 1e-8 the top probability is a difference of numbers near 1e8, which float32
    cannot give: refused, and in float64 every confidence is 1, so ECE = 1 − accuracy."""
    query, positive = _pairs(tmp_path)
    monkeypatch.chdir(tmp_path)
    line = ("error: calibration at temperature 1e-08: the softmax is too sharp for float32 to "
            "give its largest probability; use a larger temperature or --dtype float64\n")
    for args in (("score", "-q", query, "-p", positive, "-t", "1e-8", "--diagnostics"),
                 ("sweep-temperature", "-q", query, "-p", positive,
                  "--temperatures", "1e-8,0.1")):
        result = run_cli(*args, "--format", "json")
        assert result.exit_code == 1
        assert result.stderr == line
        assert result.stdout == ""
    result = run_cli("score", "-q", query, "-p", positive, "-t", "1e-8", "--diagnostics",
                     "--dtype", "float64", "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    calibration = out["diagnostics"]["calibration"]
    assert calibration["ece"] == pytest.approx(1 - out["accuracy_at_1"], abs=1e-12)
    assert calibration["bins"][-1]["count"] == 7
    assert calibration["bins"][-1]["confidence"] == 1.0


def test_losses_near_1e300_have_a_finite_spread(tmp_path):
    """Squares of such losses overflow float64; their mean and std do not."""
    query, positive = _pairs(tmp_path, scale=1e150, dtype="float64")
    result = run_cli("score", "-q", query, "-p", positive, "--similarity", "dot", "--dtype",
                     "float64", "-t", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    loss = json.loads(result.stdout)["loss"]
    want = _float64_losses(np.load(query), np.load(positive), 1.0, cosine=False)
    assert np.abs(want).max() > 1e298
    largest = np.abs(want).max()
    assert loss["mean"] == pytest.approx(largest * (want / largest).mean(), rel=1e-9)
    assert loss["std"] == pytest.approx(largest * (want / largest).std(), rel=1e-9)


def test_uniformity_of_float64_rows_beyond_float32_range(tmp_path):
    """Rows near 1e150 are normalised before they are narrowed to float32."""
    query, positive = _pairs(tmp_path, scale=1e150, dtype="float64")
    result = run_cli("score", "-q", query, "-p", positive, "--diagnostics", "--format", "json")
    assert result.exit_code == 0, result.stderr
    uniformity = json.loads(result.stdout)["diagnostics"]["uniformity"]
    for side, path in (("query", query), ("pos", positive)):
        rows = np.load(path)
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        pairs = [np.exp(-2 * np.sum((rows[i] - rows[j]) ** 2))
                 for i in range(len(rows)) for j in range(i + 1, len(rows))]
        assert uniformity[side] == pytest.approx(np.log(np.mean(pairs)), abs=1e-6)


def test_a_run_file_keeps_six_columns(tmp_path, monkeypatch):
    """A TREC run's columns are separated by whitespace: a tag or an id that holds some is
    refused, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    np.save("q.npy", rng.normal(size=(3, 4)).astype(np.float32))
    np.save("c.npy", rng.normal(size=(6, 4)).astype(np.float32))
    Path("qids.txt").write_text("q 0\nq1\nq2\n")
    Path("qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq 0\t1\t1\nq1\t2\t1\n")
    base = ("retrieval", "--query", "q.npy", "--corpus", "c.npy", "--qrels", "qrels.tsv")
    result = run_cli(*base, "--run", "run.trec", "--run-tag", "my tag")
    assert result.exit_code == 2
    assert result.stderr == ("error: --run-tag 'my tag': the tag is a column of the run file; "
                             "give one word without whitespace\n")
    result = run_cli(*base, "--query-ids", "qids.txt", "--run", "run.trec")
    assert result.exit_code == 1
    assert result.stderr == ("error: --run: the query id 'q 0' is empty or holds whitespace, "
                             "which would split the run file's columns\n")
    assert not Path("run.trec").exists()
    result = run_cli(*base, "--run", "-", "--per-query", "-")
    assert result.exit_code == 2
    assert result.stderr == ("error: --run and --per-query both write to standard output (-): "
                             "send one of them to a file\n")


def test_the_python_api_refuses_what_it_cannot_take():
    import torch

    import infonce_cli
    from infonce_cli.errors import UsageError

    q = torch.randn(4, 3)
    with pytest.raises(UsageError, match="reduction must be mean, sum or none, got 'max'"):
        infonce_cli.info_nce(q, q, reduction="max")
    with pytest.raises(UsageError, match=r"query and positive must both be \(N, d\)"):
        infonce_cli.info_nce(q, torch.randn(5, 3))
    with pytest.raises(UsageError, match="info_nce takes torch tensors, and query is a ndarray"):
        infonce_cli.info_nce(q.numpy(), q)
    with pytest.raises(UsageError, match=r"negatives must be \(K, d\) or \(N, M, d\)"):
        infonce_cli.info_nce(q, q, torch.randn(4, 2, 2))
    with pytest.raises(UsageError, match="qrels must be the path of a qrels file"):
        infonce_cli.retrieval(q.numpy(), q.numpy(), qrels={"q0": {"d0": 1}})
    for args, kwargs, line in (
        ((q[:0], q[:0]), {}, "query and positive must both be (N, d) with N, d ≥ 1, got "
                             "(0, 3) and (0, 3)"),
        ((q, q), {"batch_size": 2.5}, "batch_size must be a whole number ≥ 1, got 2.5"),
        ((q, q), {"temperature": True}, "temperature must be a finite number > 0, got True"),
        ((torch.zeros(4, 3), q), {}, "query holds a row of zeros, which cosine similarity "
                                     "cannot score; use similarity='dot' or 'l2', or drop it"),
    ):
        with pytest.raises(UsageError) as raised:
            infonce_cli.info_nce(*args, **kwargs)
        assert str(raised.value) == line
    assert infonce_cli.info_nce(torch.zeros(4, 3), q, similarity="dot").item() == pytest.approx(
        math.log(4))


@pytest.mark.parametrize(("function", "kwargs", "line"), [
    ("score", {"symmetric": "false"}, "symmetric must be True or False, got 'false'"),
    ("score", {"diagnostics": "False"}, "diagnostics must be True or False, got 'False'"),
    ("sweep", {"per_sample": "rows.parquet"},
     "per_sample must be True or False, got 'rows.parquet'"),
    ("score", {"worst": "3"}, "worst must be a whole number, got '3'"),
    ("score", {"batch_size": 10.5}, "batch_size must be a whole number, got 10.5"),
    ("score", {"temperature": True}, "temperature: expected a number > 0 or auto, got True"),
])
def test_the_python_api_takes_flags_and_counts_of_their_type(function, kwargs, line):
    """A string is not a flag ("false" would be true, a file name for per_sample would write
    nothing) and a count is a whole number: the message says so, not a range. NumPy's
    scalars are taken as the Python ones."""
    import infonce_cli
    from infonce_cli.errors import UsageError

    rng = np.random.default_rng(0)
    q = rng.normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(UsageError) as raised:
        getattr(infonce_cli, function)(q, q + 0.1, device="cpu", **kwargs)
    assert str(raised.value) == line
    numpy_scalars = infonce_cli.score(q, q + 0.1, device="cpu", worst=np.int64(2),
                                      mask_duplicates=np.bool_(True))
    assert len(numpy_scalars.worst) == 2
    assert numpy_scalars.masked == 0


def test_rows_of_denormal_values_are_refused_not_turned(tmp_path):
    """The CPU flushes denormal floats to zero while scoring: a float32 row whose values lie
    around the smallest normal (1.2e-38) would lose some of them and turn (the loss went
    from 0.113 to 0.216). Such rows are refused; rows around 1e-35 score exactly."""
    query, positive = _pairs(tmp_path)
    rows = np.load(query).astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    np.save(tmp_path / "denormal.npy",
            (rows / np.abs(rows).max(axis=1, keepdims=True) * tiny * 1.5).astype(np.float32))
    assert (np.abs(np.load(tmp_path / "denormal.npy")) < tiny).any()
    result = run_cli("score", "-q", str(tmp_path / "denormal.npy"), "-p", positive)
    assert result.exit_code == 1
    assert result.stderr == ("error: some rows hold only values near or below the smallest "
                             "normal float32 (1.2e-38), which the CPU flushes to zero while "
                             "scoring: multiply the vectors by a power of two (2^64, say) to "
                             "score them exactly\n")
    np.save(tmp_path / "small.npy", (rows * 1e-35).astype(np.float32))
    assert not (np.abs(np.load(tmp_path / "small.npy")) < tiny).any()
    small = run_cli("score", "-q", str(tmp_path / "small.npy"), "-p", positive, "--format",
                    "json")
    assert small.exit_code == 0, small.stderr
    want = _float64_losses(rows, np.load(positive).astype(np.float64), 0.05).mean()
    assert json.loads(small.stdout)["loss"]["mean"] == pytest.approx(want, rel=1e-5)
