"""`infonce retrieval` as a user meets it: queries, a corpus and qrels in BEIR/TREC layout,
metrics equal to ranx's, a TREC run that ranx reads back to the same metrics, and the loss
equal to `score` on the equivalent row-aligned arrays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import infonce_cli
from infonce_cli import render

from .conftest import SAMPLE, run_cli

ranx = pytest.importorskip("ranx")
# ranx compiles its metrics with numba on first use, which warns about a cast.
pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaTypeSafetyWarning")

RETRIEVAL = SAMPLE / "retrieval"
METRICS = {"ndcg@{k}": ("ndcg_at", True), "recall@{k}": ("recall_at", True),
           "precision@{k}": ("precision_at", True), "mrr@{k}": ("mrr_at", True),
           "map@{k}": ("map_at", True), "hit_rate@{k}": ("hit_rate_at", True),
           "mrr": ("mrr", False), "map": ("map", False), "r-precision": ("r_precision", False)}


@pytest.fixture
def beir(tmp_path, monkeypatch):
    for file in RETRIEVAL.iterdir():
        shutil.copy(file, tmp_path / file.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ranx_metrics(qrels_path: str, run_path: str, at: tuple[int, ...]) -> dict[str, float]:
    qrels = ranx.Qrels.from_file(qrels_path, kind="trec")
    run = ranx.Run.from_file(run_path, kind="trec")
    names = [name.format(k=k) for name, (_, cut) in METRICS.items()
             for k in (at if cut else (None,))]
    return ranx.evaluate(qrels, run, sorted(set(names)), make_comparable=True)


def _ours(out: dict, name: str) -> float:
    for pattern, (key, cut) in METRICS.items():
        if cut and name.startswith(pattern.split("@")[0] + "@"):
            return float(out[key][name.split("@")[1]])
        if not cut and name == pattern:
            return float(out[key])
    raise KeyError(name)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-9), ("float32", 1e-6)])
def test_metrics_and_the_run_file_agree_with_ranx_on_real_data(beir, dtype, tolerance):
    corpus_size = pq.read_metadata("corpus.parquet").num_rows
    result = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                     "--qrels", "qrels.tsv", "--dtype", dtype, "--at", "1,3,10,100",
                     "--run", "run.trec", "--top-k", str(corpus_size), "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["queries"] == 400
    assert out["corpus"] == corpus_size
    reference = _ranx_metrics("qrels.trec", "run.trec", (1, 3, 10, 100))
    for name, value in reference.items():
        assert _ours(out, name) == pytest.approx(value, abs=tolerance), name


def test_exponential_gain_is_ranx_ndcg_burges(beir):
    out = json.loads(run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                             "--qrels", "qrels.trec", "--gain", "exponential", "--dtype",
                             "float64", "--run", "run.trec", "--top-k", "200",
                             "--format", "json").stdout)
    qrels = ranx.Qrels.from_file("qrels.trec", kind="trec")
    run = ranx.Run.from_file("run.trec", kind="trec")
    burges = ranx.evaluate(qrels, run, ["ndcg_burges@10", "ndcg_burges@100"])
    assert out["ndcg_at"]["10"] == pytest.approx(burges["ndcg_burges@10"], abs=1e-9)
    assert out["ndcg_at"]["100"] == pytest.approx(burges["ndcg_burges@100"], abs=1e-9)


def test_the_loss_equals_score_on_the_row_aligned_arrays(beir):
    """With one positive per query (min_relevance 2 keeps each query's own document), the
    loss over the corpus is score's loss with the corpus as shared negatives and the
    positive's own row masked by id."""
    queries = pq.read_table("queries.parquet")
    corpus = pq.read_table("corpus.parquet")
    qrels = ranx.Qrels.from_file("qrels.trec", kind="trec").to_dict()
    corpus_ids = corpus.column("_id").to_pylist()
    row_of = {doc: row for row, doc in enumerate(corpus_ids)}
    query_ids = queries.column("_id").to_pylist()
    own = [next(doc for doc, rel in qrels[q].items() if rel == 2) for q in query_ids]
    query_vectors = np.stack(queries.column("embedding").to_numpy(zero_copy_only=False))
    corpus_vectors = np.stack(corpus.column("embedding").to_numpy(zero_copy_only=False))
    positives = corpus_vectors[[row_of[doc] for doc in own]]
    scored = infonce_cli.score(query_vectors, positives, corpus_vectors, temperature=0.05,
                               pos_ids=np.array(own), neg_ids=np.array(corpus_ids),
                               device="cpu")
    retrieved = infonce_cli.retrieval("queries.parquet", "corpus.parquet", "qrels.tsv",
                                          min_relevance=2, temperature=0.05, device="cpu")
    assert retrieved.loss.mean == pytest.approx(scored.loss.mean, rel=1e-6)
    assert retrieved.mi_lower_bound_nats == pytest.approx(scored.mi_lower_bound_nats, rel=1e-6)


def test_ids_from_text_files_and_row_numbers_give_the_same_metrics(beir):
    queries = pq.read_table("queries.parquet")
    corpus = pq.read_table("corpus.parquet")
    np.save("q.npy", np.stack(queries.column("embedding").to_numpy(zero_copy_only=False)))
    np.save("c.npy", np.stack(corpus.column("embedding").to_numpy(zero_copy_only=False)))
    Path("q.txt").write_text("\n".join(queries.column("_id").to_pylist()) + "\n")
    Path("c.txt").write_text("\n".join(corpus.column("_id").to_pylist()) + "\n")
    from_parquet = json.loads(run_cli("retrieval", "-q", "queries.parquet", "-c",
                                      "corpus.parquet", "--qrels", "qrels.tsv", "--format",
                                      "json").stdout)
    from_npy = json.loads(run_cli("retrieval", "-q", "q.npy", "-c", "c.npy", "--query-ids",
                                  "q.txt", "--corpus-ids", "c.txt", "--qrels", "qrels.tsv",
                                  "--format", "json").stdout)
    for key in ("ndcg_at", "recall_at", "map", "mrr", "loss"):
        assert from_npy[key] == from_parquet[key]


def test_unknown_ids_are_refused_with_the_line_or_dropped_and_counted(beir):
    lines = Path("qrels.tsv").read_text().splitlines()
    lines.insert(3, "nobody\tdoc-0\t1")
    Path("bad.tsv").write_text("\n".join(lines) + "\n")
    refused = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                      "--qrels", "bad.tsv")
    assert refused.exit_code == 1
    assert refused.stderr == ("error: bad.tsv:4: unknown query id 'nobody', not among the query "
                              "ids of the inputs; set --ignore-unknown to drop such "
                              "judgements\n")
    dropped = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                      "--qrels", "bad.tsv", "--ignore-unknown", "--format", "json")
    assert dropped.exit_code == 0, dropped.stderr
    assert json.loads(dropped.stdout)["unknown_ids"] == 1
    assert "note: 1 judgement names an id that is not in the inputs" in dropped.stderr


def test_qrels_left_empty_by_unknown_ids_say_so(beir):
    """Every judgement dropped by --ignore-unknown: the refusal names that, not the
    relevance threshold the grades do reach."""
    first_query = Path("qrels.tsv").read_text().splitlines()[1].split("\t")[0]
    base = ("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--ignore-unknown",
            "--qrels")
    Path("gone.tsv").write_text(f"query-id\tcorpus-id\tscore\n{first_query}\tnope\t1\n"
                                f"{first_query}\tnope-either\t2\n")
    result = run_cli(*base, "gone.tsv")
    assert (result.exit_code, result.stderr) == (
        1, "error: no relevant document of the qrels is in the corpus, so there is no "
           "positive for the loss; 2 judgements name an id missing from the inputs, left out "
           "by --ignore-unknown\n")
    Path("nobody.tsv").write_text("query-id\tcorpus-id\tscore\nnobody\tdoc-0\t1\n")
    result = run_cli(*base, "nobody.tsv")
    assert (result.exit_code, result.stderr) == (
        1, "error: the qrels name no relevant document (relevance ≥ 1) of these queries; 1 "
           "judgement names an id missing from the inputs, left out by --ignore-unknown\n")


def test_a_query_without_a_relevant_document_is_left_out_and_counted(beir):
    lines = Path("qrels.tsv").read_text().splitlines()
    first_query = lines[1].split("\t")[0]
    kept = [lines[0]] + [line for line in lines[1:] if line.split("\t")[0] != first_query]
    kept.append(f"{first_query}\t{lines[1].split(chr(9))[1]}\t0")
    Path("zero.tsv").write_text("\n".join(kept) + "\n")
    out = json.loads(run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                             "--qrels", "zero.tsv", "--format", "json").stdout)
    assert out["queries"] == 399
    assert out["queries_without_relevant"] == 1


def test_gates_per_query_file_and_table(beir):
    failed = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
                     "qrels.tsv", "--fail-below", "ndcg_at_10=0.99", "--per-query",
                     "per_query.jsonl", "--format", "json")
    assert failed.exit_code == 3
    out = json.loads(failed.stdout)
    assert failed.stderr.splitlines()[-1].startswith(
        "error: quality gate failed: ndcg_at_10 ")
    rows = [json.loads(line) for line in Path("per_query.jsonl").read_text().splitlines()]
    assert len(rows) == 400
    assert np.mean([row["ndcg@10"] for row in rows]) == pytest.approx(out["ndcg_at"]["10"])
    unknown = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
                      "qrels.tsv", "--fail-below", "ndcg_at_7=0.5")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: --fail-below: unknown metric 'ndcg_at_7'")
    table = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
                    "qrels.tsv", "--format", "table")
    assert "400 queries · " in table.stdout
    assert "nDCG" in table.stdout


def test_the_run_file_lists_the_top_k_best_first(beir):
    result = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
                     "qrels.tsv", "--run", "run.trec", "--top-k", "5", "--run-tag", "mine",
                     "--format", "json")
    assert result.exit_code == 0, result.stderr
    lines = [line.split() for line in Path("run.trec").read_text().splitlines()]
    assert len(lines) == 400 * 5
    assert {line[1] for line in lines} == {"Q0"}
    assert {line[5] for line in lines} == {"mine"}
    first = lines[:5]
    assert [int(line[3]) for line in first] == [1, 2, 3, 4, 5]
    assert [float(line[4]) for line in first] == sorted((float(line[4]) for line in first),
                                                         reverse=True)


@pytest.mark.parametrize("option", ["--run", "--per-query"])
def test_a_listing_on_stdout_sends_the_aggregate_to_stderr(beir, option):
    """``--run -`` and ``--per-query -`` own stdout: the aggregate goes to stderr, so the
    lines piped on are the listing alone."""
    base = ("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
            "qrels.tsv", "--format", "json", "--quiet")
    result = run_cli(*base, option, "-")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    if option == "--run":
        assert all(len(line.split()) == 6 for line in lines)
    else:
        rows = [json.loads(line) for line in lines]
        assert len({row["query_id"] for row in rows}) == len(rows) == 400
        assert all(0 <= row["ndcg@10"] <= 1 for row in rows)
    assert json.loads(result.stderr) == json.loads(run_cli(*base).stdout) | {
        "seconds": json.loads(result.stderr)["seconds"]}


def test_render_is_what_the_api_returns(beir):
    api = infonce_cli.retrieval("queries.parquet", "corpus.parquet", "qrels.tsv",
                                    device="cpu")
    cli = json.loads(run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet",
                             "--qrels", "qrels.tsv", "--device", "cpu", "--format",
                             "json").stdout)
    paths = infonce_cli.retrieval(Path("queries.parquet"), Path("corpus.parquet"),
                                  Path("qrels.tsv"), device="cpu")
    mine, by_path = (json.loads(render.to_json(result.to_dict())) for result in (api, paths))
    for out in (mine, cli, by_path):
        out.pop("seconds")
    assert mine == cli == by_path


def test_a_relevant_document_missing_from_the_corpus_counts_as_never_retrieved(beir):
    lines = Path("qrels.tsv").read_text().splitlines()
    query = lines[1].split("\t")[0]
    lines.append(f"{query}\tdoc-not-in-the-corpus\t2")
    Path("missing.tsv").write_text("\n".join(lines) + "\n")
    Path("missing.trec").write_text("".join(
        f"{q} 0 {d} {r}\n" for q, d, r in (line.split("\t") for line in lines[1:])))
    result = run_cli("retrieval", "-q", "queries.parquet", "-c", "corpus.parquet", "--qrels",
                     "missing.tsv", "--ignore-unknown", "--dtype", "float64", "--run",
                     "run.trec", "--top-k", "3141", "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["unknown_ids"] == 1
    reference = _ranx_metrics("missing.trec", "run.trec", (10, 100))
    for name in ("ndcg@10", "recall@100", "map", "r-precision"):
        assert _ours(out, name) == pytest.approx(reference[name], abs=1e-9), name


def _noisy_queries(scale: float) -> None:
    table = pq.read_table("queries.parquet")
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    noise = np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32)
    noisy = vectors + scale * noise * np.linalg.norm(vectors, axis=1, keepdims=True) / 20
    np.save("noisy.npy", noisy.astype(np.float32))
    Path("qids.txt").write_text("\n".join(table.column("_id").to_pylist()) + "\n")
    np.save("q.npy", vectors)
    corpus = pq.read_table("corpus.parquet")
    np.save("c.npy", np.stack(corpus.column("embedding").to_numpy(zero_copy_only=False)))
    Path("cids.txt").write_text("\n".join(corpus.column("_id").to_pylist()) + "\n")


def test_several_models_against_a_baseline_with_adjusted_p_values(beir):
    from infonce_cli.stats import adjusted_p_values

    _noisy_queries(1.0)
    args = ["compare", "--qrels", "qrels.tsv", "--query-ids", "qids.txt", "--corpus-ids",
            "cids.txt", "--query-a", "q.npy", "--corpus-a", "c.npy",
            "--query-b", "q.npy", "--corpus-b", "c.npy",
            "--query-b", "noisy.npy", "--corpus-b", "c.npy", "--bootstrap", "500",
            "--metric", "ndcg_at_10"]
    result = run_cli(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["baseline"] == "a"
    assert set(out["models"]) == {"a", "b", "c"}
    assert out["bootstrap"]["correction"] == "holm"
    same, noisy = out["difference"]["b"], out["difference"]["c"]
    assert all(d["value"] == 0 and d["p_value"] == 1 for d in same.values())
    assert noisy["ndcg_at_10"]["value"] < 0
    assert noisy["ndcg_at_10"]["p_adjusted"] < 0.05
    for metric in noisy:
        raw = np.array([same[metric]["p_value"], noisy[metric]["p_value"]])
        adjusted = adjusted_p_values(raw)
        assert [same[metric]["p_adjusted"], noisy[metric]["p_adjusted"]] == adjusted.tolist()
    gated = run_cli(*args, "--fail-if-worse", "--format", "json")
    assert gated.exit_code == 3
    assert gated.stderr.splitlines()[-1].startswith(
        "error: quality gate failed: significantly worse than a on ndcg_at_10: c − a = ")
    bonferroni = json.loads(run_cli(*args, "--correction", "bonferroni", "--format",
                                    "json").stdout)
    raw = bonferroni["difference"]["c"]["map"]["p_value"]
    assert bonferroni["difference"]["c"]["map"]["p_adjusted"] == min(1.0, 2 * raw)


def test_compare_with_qrels_refuses_options_of_pairs(beir):
    result = run_cli("compare", "--qrels", "qrels.tsv", "--query-a", "queries.parquet",
                     "--corpus-a", "corpus.parquet", "--query-b", "queries.parquet",
                     "--corpus-b", "corpus.parquet", "--mask-duplicates")
    assert result.exit_code == 2
    assert result.stderr == "error: --mask-duplicates does not apply with --qrels\n"
    missing = run_cli("compare", "--qrels", "qrels.tsv", "--query-a", "queries.parquet",
                      "--corpus-a", "corpus.parquet", "--query-b", "queries.parquet")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: --qrels compares retrieval: give --corpus-a")


def test_auto_temperature_is_the_sweeps_optimum_on_the_row_aligned_arrays(beir):
    queries = pq.read_table("queries.parquet")
    corpus = pq.read_table("corpus.parquet")
    qrels = ranx.Qrels.from_file("qrels.trec", kind="trec").to_dict()
    corpus_ids = corpus.column("_id").to_pylist()
    row_of = {doc: row for row, doc in enumerate(corpus_ids)}
    own = [next(doc for doc, rel in qrels[q].items() if rel == 2)
           for q in queries.column("_id").to_pylist()]
    corpus_vectors = np.stack(corpus.column("embedding").to_numpy(zero_copy_only=False))
    swept = infonce_cli.sweep(np.stack(queries.column("embedding").to_numpy(
        zero_copy_only=False)), corpus_vectors[[row_of[doc] for doc in own]], corpus_vectors,
        pos_ids=np.array(own), neg_ids=np.array(corpus_ids), device="cpu")
    fitted = infonce_cli.retrieval("queries.parquet", "corpus.parquet", "qrels.tsv",
                                   min_relevance=2, temperature="auto", device="cpu")
    assert fitted.temperature_fitted
    assert fitted.temperature == pytest.approx(swept.optimum.temperature, rel=1e-6)
    assert fitted.loss.mean == pytest.approx(swept.optimum.loss_mean, rel=1e-5)


def test_bfloat16_top_lists_are_the_float32_ones(beir):
    """In half precision the lists are chosen among twice as many candidates and rescored
    in float32: on the real sample data they are float32's, in order."""
    runs = {dtype: infonce_cli.retrieval("queries.parquet", "corpus.parquet", "qrels.tsv",
                                         run=True, top_k=10, dtype=dtype, device="cpu")
            for dtype in ("float32", "bfloat16")}
    np.testing.assert_array_equal(runs["bfloat16"].top["doc_ids"], runs["float32"].top["doc_ids"])
    np.testing.assert_allclose(runs["bfloat16"].top["scores"], runs["float32"].top["scores"],
                               atol=1e-6)
    # The metrics are bfloat16's own: positions from half-precision scores.
    assert runs["bfloat16"].metrics.ndcg_at[10] == pytest.approx(
        runs["float32"].metrics.ndcg_at[10], abs=0.02)
