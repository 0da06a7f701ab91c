"""One pipeline under the CLI and the Python API: every option reaches both and means the
same; the sweep takes every option of score and agrees with it; errors name arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import infonce_cli
from infonce_cli import render
from infonce_cli.errors import GateFailed, InfonceError, UsageError

from .conftest import run_cli

N_POS_IDS = 150


@pytest.fixture
def ids(data):
    """Id files and Parquet files with id columns beside the sample data."""
    rng = np.random.default_rng(7)
    np.save("pos_ids.npy", np.arange(400) % N_POS_IDS)
    np.save("paired_ids.npy", rng.integers(0, N_POS_IDS, (400, 7)))
    np.save("shared_ids.npy", rng.integers(0, N_POS_IDS, 1000))
    np.save("query_ids.npy", np.arange(400) // 2)
    np.savez("pairs.npz", q=np.load("queries.npy"), p=np.load("positives.npy"))
    table = pq.read_table("pairs.parquet")
    pq.write_table(table.append_column("pos_id", pa.array((np.arange(400) % N_POS_IDS)
                                                          .astype(str))), "with_ids.parquet")
    distractors = np.load("distractors.npy")
    pq.write_table(pa.table({"vec": pa.array(list(distractors)),
                             "doc_id": pa.array(np.load("shared_ids.npy").astype(str))}),
                   "distractors.parquet")
    return data


Q, P = ("queries.npy", "positives.npy")
SCORE_CASES = {
    "defaults": (Q, P, None, {}),
    "temperature": (Q, P, None, {"temperature": 0.1}),
    "temperature auto": (Q, P, None, {"temperature": "auto"}),
    "dot, recall_at": (Q, P, None, {"similarity": "dot", "temperature": 1.0,
                                    "recall_at": "2,3"}),
    "l2, batch_size": (Q, P, None, {"similarity": "l2", "batch_size": 64}),
    "symmetric": (Q, P, None, {"symmetric": True}),
    "paired": (Q, P, "hard_negatives.npy", {}),
    "shared": (Q, P, "distractors.npy", {"dtype": "float64", "max_memory": "2MiB"}),
    "pooled, masked duplicates": (Q, P, "hard_negatives.npy", {"in_batch": True,
                                                               "mask_duplicates": True}),
    "pos_ids, neg_ids paired": (Q, P, "hard_negatives.npy",
                                {"pos_ids": "pos_ids.npy", "neg_ids": "paired_ids.npy",
                                 "worst": 4}),
    "shared neg_id_col": (Q, P, "distractors.parquet",
                          {"pos_ids": "pos_ids.npy", "neg_id_col": "doc_id",
                           "neg_col": "vec", "worst": 3}),
    "pos_id_col, id_col": ("with_ids.parquet", "with_ids.parquet", None,
                           {"query_col": "query", "pos_col": "positive", "id_col": "id",
                            "pos_id_col": "pos_id", "allow_empty": True, "worst": 2}),
    "npz keys": ("pairs.npz", "pairs.npz", None, {"query_key": "q", "pos_key": "p"}),
    "several positives ntxent": (Q, P, None, {"query_ids": "query_ids.npy"}),
    "several positives supcon": (Q, P, None, {"query_ids": "query_ids.npy",
                                              "multi_positive": "supcon"}),
    "ci": (Q, P, None, {"ci": True, "bootstrap": 200, "seed": 3}),
    "gates met": (Q, P, None, {"fail_above": 100.0, "fail_below_accuracy": 0.01,
                               "device": "cpu"}),
}


def _flags(options: dict) -> list[str]:
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:
            flags += [flag, str(value)]
    return flags


def _plain(result) -> dict:
    """A result as its JSON text reads back (non-finite numbers as null), less the time."""
    out = json.loads(render.to_json(result.to_dict()))
    out.pop("seconds")
    return out


def _cli_json(*args: str) -> dict:
    result = run_cli(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    out.pop("seconds")
    return out


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_score_cli_json_equals_the_api_result(ids, case):
    query, pos, neg, options = SCORE_CASES[case]
    args = ["score", "-q", query, "-p", pos, *(["--neg", neg] if neg else []), *_flags(options)]
    assert _cli_json(*args) == _plain(infonce_cli.score(query, pos, neg, **options))


SWEEP_CASES = {
    "in-batch": (None, {}),
    "masked duplicates, pooled": ("hard_negatives.npy", {"in_batch": True,
                                                          "mask_duplicates": True}),
    "pos_ids, allow_empty": (None, {"pos_ids": "pos_ids.npy", "allow_empty": True}),
    "neg_ids shared": ("distractors.npy", {"pos_ids": "pos_ids.npy",
                                           "neg_ids": "shared_ids.npy"}),
    "several positives ntxent": (None, {"query_ids": "query_ids.npy"}),
    "several positives supcon": (None, {"query_ids": "query_ids.npy",
                                        "multi_positive": "supcon"}),
    "batches, symmetric": (None, {"batch_size": 100, "symmetric": True}),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_sweep_takes_every_option_of_score_and_agrees_with_it(ids, case):
    neg, options = SWEEP_CASES[case]
    temperatures = (0.03, 0.1, 0.4)
    swept = infonce_cli.sweep(Q, P, neg, temperatures=temperatures, **options)
    for row in swept.rows:
        scored = infonce_cli.score(Q, P, neg, temperature=row.temperature, **options)
        assert row.loss_mean == pytest.approx(scored.loss.mean, rel=1e-6)
        assert row.loss_std == pytest.approx(scored.loss.std, rel=1e-5)
        assert swept.retrieval == scored.retrieval
        assert (swept.masked, swept.skipped) == (scored.masked, scored.skipped)
    cli = _cli_json("sweep-temperature", "-q", Q, "-p", P, *(["--neg", neg] if neg else []),
                    "--temperatures", ",".join(map(str, temperatures)), *_flags(options))
    assert cli == _plain(swept)


def test_masking_changes_the_sweep_as_it_changes_score(ids):
    plain = infonce_cli.sweep(Q, P, temperatures=(0.05,))
    masked = infonce_cli.sweep(Q, P, temperatures=(0.05,), pos_ids="pos_ids.npy",
                               allow_empty=True)
    assert masked.masked > 0
    assert masked.rows[0].loss_mean < plain.rows[0].loss_mean


def test_sweep_per_sample_rows_are_the_scores_at_the_optimum(ids):
    result = run_cli("sweep-temperature", "-q", Q, "-p", P, "--pos-ids", "pos_ids.npy",
                     "--allow-empty", "--per-sample", "rows.jsonl", "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    tau = out["optimum"]["temperature"]
    assert out["per_sample_temperature"] == tau
    rows = [json.loads(line) for line in Path("rows.jsonl").read_text().splitlines()]
    at_optimum = infonce_cli.score(Q, P, temperature=tau, pos_ids="pos_ids.npy",
                                   allow_empty=True)
    np.testing.assert_allclose([row["loss"] for row in rows], at_optimum.per_sample["loss"],
                               rtol=1e-6)
    assert [row["masked"] for row in rows] == at_optimum.per_sample["masked"].tolist()


def test_api_takes_arrays_and_tensors_and_matches_files(ids):
    from_files = _plain(infonce_cli.score(Q, P, "hard_negatives.npy", temperature=0.1))
    arrays = [np.load(name) for name in (Q, P, "hard_negatives.npy")]
    assert _plain(infonce_cli.score(*arrays, temperature=0.1)) == from_files
    tensors = [torch.from_numpy(array) for array in arrays]
    assert _plain(infonce_cli.score(*tensors, temperature=0.1)) == from_files


def test_library_errors_name_the_argument_and_the_cli_its_flag(data):
    with pytest.raises(UsageError, match=r"^temperature must be > 0, got 0$"):
        infonce_cli.score(Q, P, temperature=0)
    with pytest.raises(InfonceError, match=r"^masking left 400 queries with no negative "
                                           r"\(first: row 0\); pass allow_empty to leave"):
        infonce_cli.score(Q, P, pos_ids=np.zeros(400, dtype=int))
    with pytest.raises(UsageError, match="unknown option 'mask_duplicate'; did you mean "
                                         "'mask_duplicates'"):
        infonce_cli.score(Q, P, mask_duplicate=True)
    result = run_cli("score", "-q", Q, "-p", P, "--batch-size", "0")
    assert result.stderr == "error: --batch-size must be at least 1, got 0\n"


def test_a_missed_gate_raises_with_the_result(data):
    with pytest.raises(GateFailed) as failed:
        infonce_cli.score(Q, P, fail_below_accuracy=0.99)
    assert failed.value.result.retrieval.accuracy_at_1 < 0.99
    assert str(failed.value).startswith("quality gate failed: accuracy@1 ")
    assert "below fail_below_accuracy 0.99" in str(failed.value)


def test_compare_reads_parquet_columns_and_records_what_it_did(data):
    result = run_cli("compare", "--query-a", "pairs.parquet", "--pos-a", "pairs.parquet",
                     "--query-b", "pairs.parquet", "--pos-b", "pairs.parquet", "--query-col",
                     "query", "--pos-col", "positive", "-t", "auto", "--metric", "recall_at_5",
                     "--bootstrap", "200", "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["temperature_fitted"] is True
    fitted = infonce_cli.sweep(Q, P).optimum.temperature
    assert out["temperature"] == {"a": fitted, "b": fitted}
    assert out["negatives"] == {"a": "in-batch", "b": "in-batch"}
    assert out["difference"]["recall_at_5"]["value"] == 0
    assert set(out["difference"]) >= {"ndcg_at_10", "recall_at_10"}


def test_compare_refuses_an_unknown_metric(data):
    result = run_cli("compare", "--query-a", Q, "--pos-a", P, "--query-b", Q, "--pos-b", P,
                     "--metric", "recall_at_7")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --metric: unknown metric 'recall_at_7'; choose one "
                                    "of loss_mean, accuracy_at_1, mrr, ndcg_at_10, recall_at_1")
