"""Diagnostics against the papers' formulas written plainly in float64, and torchmetrics'
CalibrationError as an oracle, on random and real data in every negative mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import infonce_cli
from infonce_cli.calibration import calibration
from tests.conftest import run_cli
from tests.reference import candidate_sets, reference


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def alignment_reference(query, positive):
    q, p = _unit(query), _unit(positive)
    return float(np.mean([np.sum((q[i] - p[i]) ** 2) for i in range(len(q))]))


def uniformity_reference(x):
    x = _unit(x)
    n = len(x)
    terms = [math.exp(-2 * float(np.sum((x[i] - x[j]) ** 2)))
             for i in range(n) for j in range(i + 1, n)]
    return math.log(sum(terms) / len(terms))


def effective_rank_reference(x):
    singular = np.linalg.svd(_unit(x), compute_uv=False)
    p = singular / singular.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def anisotropy_reference(x):
    x = _unit(x)
    cosines = x @ x.T
    n = len(x)
    return float((cosines.sum() - np.trace(cosines)) / (n * (n - 1)))


def hubness_reference(query, positive, negatives, in_batch, k, batch_size=None):
    """k-occurrence over the candidates the queries share: each query's k best among its
    positive and its negatives, counted by candidate vector's identity (which positive,
    which negative row); with shared negatives alone, only the shared rows are counted."""
    n = len(query)
    sets = candidate_sets(n, negatives, in_batch, batch_size, positive)
    shared_only = negatives is not None and negatives.ndim == 2 and not in_batch
    counts = {}
    if shared_only:
        counts = {("shared", r): 0 for r in range(len(negatives))}
    else:
        counts = {("positive", r): 0 for r in range(n)}
        if negatives is not None:
            counts.update({("negative", r): 0 for r in range(int(np.prod(
                negatives.shape[:-1])))})
    q = _unit(query)

    def name(j):  # the engine's numbering, back to the candidate it names
        if shared_only:
            return ("shared", j)
        return ("positive", j) if j < n else ("negative", j - n)

    for i in range(n):
        scored = [(float(q[i] @ _unit(positive[i])), ("positive", i))]
        scored += [(float(q[i] @ _unit(vec)), name(j)) for j, vec in sets[i]]
        for _, key in sorted(scored, reverse=True)[:k]:
            if key in counts:
                counts[key] += 1
    counts = np.array(list(counts.values()), dtype=np.float64)
    mean, std = counts.mean(), counts.std()
    return float(((counts - mean) ** 3).mean() / std ** 3), float((counts == 0).mean())


def calibration_oracle(query, positive, negatives, in_batch, temperature):
    """torchmetrics' multiclass CalibrationError on the explicit softmax over each query's
    candidates (the positive as class 0), top-1, 15 bins, in float64."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    n = len(query)
    sets = candidate_sets(n, negatives, in_batch, None, positive)
    width = 1 + max(len(s) for s in sets)
    logits = torch.full((n, width), -math.inf, dtype=torch.float64)
    q = _unit(query)
    for i in range(n):
        scores = [q[i] @ _unit(positive[i])] + [q[i] @ _unit(vec) for _, vec in sets[i]]
        logits[i, :len(scores)] = torch.tensor(scores) / temperature
    probabilities = torch.softmax(logits, dim=1)
    # A negative tying with the positive counts against it, as in the rank: the target
    # is then that negative, which torchmetrics' argmax (the first maximum) never picks.
    ties = logits[:, 1:] == logits[:, :1]
    target = torch.where(ties.any(dim=1), ties.int().argmax(dim=1) + 1, 0)
    ece = multiclass_calibration_error(probabilities, target, num_classes=width, n_bins=15)
    mce = multiclass_calibration_error(probabilities, target, num_classes=width, n_bins=15,
                                       norm="max")
    return float(ece), float(mce), float(probabilities.max(dim=1).values.max())


MODES = {
    "in-batch": {"neg": None, "in_batch": False},
    "shared": {"neg": "shared", "in_batch": False},
    "in-batch+shared": {"neg": "shared", "in_batch": True},
    "in-batch+paired": {"neg": "paired", "in_batch": True},
    "paired": {"neg": "paired", "in_batch": False},
}


def _random(rng, n=48, d=12, k=20, m=3):
    query = rng.normal(size=(n, d)).astype(np.float32)
    positive = (query + 0.8 * rng.normal(size=(n, d))).astype(np.float32)
    return {"query": query, "positive": positive,
            "shared": rng.normal(size=(k, d)).astype(np.float32),
            "paired": rng.normal(size=(n, m, d)).astype(np.float32)}


def _real(real_data, n=60):
    return {"query": real_data["query"][:n], "positive": real_data["positive"][:n],
            "shared": real_data["shared"][:40], "paired": real_data["paired"][:n, :4]}


@pytest.mark.parametrize("source", ["random", "real"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_diagnostic_matches_its_float64_formula(source, mode, rng, real_data):
    arrays = _random(rng) if source == "random" else _real(real_data)
    setting = MODES[mode]
    negatives = None if setting["neg"] is None else arrays[setting["neg"]]
    temperature = 0.1 if source == "random" else 0.05
    result = infonce_cli.score(arrays["query"], arrays["positive"], negatives,
                               in_batch=setting["in_batch"], temperature=temperature,
                               diagnostics=True, hubness_k=5, device="cpu")
    diagnostics = result.diagnostics
    query, positive = arrays["query"], arrays["positive"]
    assert diagnostics.alignment == pytest.approx(alignment_reference(query, positive),
                                                  rel=1e-6)
    for side, values in (("query", query), ("pos", positive)):
        assert getattr(diagnostics.uniformity, side) == pytest.approx(
            uniformity_reference(values), rel=1e-6)
        assert getattr(diagnostics.effective_rank, side) == pytest.approx(
            effective_rank_reference(values), rel=1e-6)
        assert getattr(diagnostics.anisotropy, side) == pytest.approx(
            anisotropy_reference(values), rel=1e-6, abs=1e-9)
    if mode == "paired":
        assert diagnostics.hubness is None
    else:
        skewness, antihubs = hubness_reference(query, positive, negatives,
                                               setting["in_batch"], 5)
        assert diagnostics.hubness.skewness == pytest.approx(skewness, rel=1e-6)
        assert diagnostics.hubness.antihub_share == pytest.approx(antihubs)
    ece, mce, top = calibration_oracle(query, positive, negatives, setting["in_batch"],
                                       temperature)
    assert top < 1 - 1e-6  # torchmetrics gives exact 1.0 a bin of its own
    assert diagnostics.calibration.ece == pytest.approx(ece, abs=1e-6)
    # The largest gap may be a bin of one query, whose confidence exp(s·gap − loss) carries
    # the float32 rounding of its scores (about 1e-7) times s = 20: a few 1e-6 on some CPUs.
    assert diagnostics.calibration.mce == pytest.approx(mce, abs=5e-6)


def test_calibration_bins_hold_what_the_formula_says(rng):
    confidence = rng.uniform(size=500)
    correct = rng.uniform(size=500) < confidence ** 2
    result = calibration(confidence, correct)
    assert sum(b.count for b in result.bins) == 500
    total = 0.0
    for b in result.bins:
        inside = (confidence >= b.low) & (confidence < b.high)
        assert b.count == int(inside.sum())
        if b.count:
            assert b.confidence == pytest.approx(confidence[inside].mean())
            assert b.accuracy == pytest.approx(correct[inside].mean())
            total += b.count / 500 * abs(b.accuracy - b.confidence)
    assert result.ece == pytest.approx(total)
    assert calibration(np.array([1.0]), np.array([True])).bins[-1].count == 1


def test_uniformity_streams_rows_it_does_not_keep(rng, tmp_path):
    """With a budget too small to keep the unit rows, every block is read again: the
    result is the same, from a file as from an array."""
    from infonce_cli.diagnostics import uniformity

    x = rng.normal(size=(700, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    kept = uniformity(x, torch.float32, torch.device("cpu"), 2**30)
    streamed = uniformity(np.load(tmp_path / "x.npy", mmap_mode="r"), torch.float32,
                          torch.device("cpu"), 1024)
    assert kept == pytest.approx(uniformity_reference(x), rel=1e-6)
    assert streamed == pytest.approx(kept, rel=1e-7)


def test_masking_and_several_positives_follow_the_candidate_sets(rng):
    """Masked false negatives leave the softmax, so calibration follows the masked loss;
    the geometry does not depend on the masking. With several positives per query
    (ntxent), a row's softmax leaves out the query's other positives."""
    query = rng.normal(size=(30, 8)).astype(np.float32)
    positive = query + 0.5 * rng.normal(size=(30, 8)).astype(np.float32)
    ids = np.arange(30) % 10
    plain = infonce_cli.score(query, positive, diagnostics=True, temperature=0.2)
    masked = infonce_cli.score(query, positive, diagnostics=True, temperature=0.2,
                               pos_ids=ids)
    assert masked.diagnostics.alignment == plain.diagnostics.alignment
    assert masked.diagnostics.uniformity == plain.diagnostics.uniformity
    ref = reference(query, positive, temperature=0.2,
                    drop=lambda i, j: ids[i] == ids[j])
    top = np.maximum(ref.positive_score, ref.hardest_negative_score)
    confidence = np.exp((top - ref.positive_score) / 0.2 - ref.loss)
    expected = calibration(confidence, ref.rank == 1)
    assert masked.diagnostics.calibration.ece == pytest.approx(expected.ece, abs=1e-6)
    grouped = infonce_cli.score(query, positive, diagnostics=True, temperature=0.2,
                                query_ids=ids)
    ref = reference(query, positive, temperature=0.2, drop=lambda i, j: ids[i] == ids[j])
    top = np.maximum(ref.positive_score, ref.hardest_negative_score)
    confidence = np.exp((top - ref.positive_score) / 0.2 - ref.loss)
    expected = calibration(confidence, ref.rank == 1)
    assert grouped.diagnostics.calibration.ece == pytest.approx(expected.ece, abs=1e-6)
    assert grouped.diagnostics.alignment == plain.diagnostics.alignment


def test_cli_reports_diagnostics_in_json_and_table(data):
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--diagnostics", "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    api = infonce_cli.score("queries.npy", "positives.npy", diagnostics=True)
    assert out["diagnostics"] == json.loads(json.dumps(api.to_dict()["diagnostics"]))
    assert set(out["diagnostics"]) == {"alignment", "uniformity", "effective_rank",
                                       "anisotropy", "hubness", "calibration"}
    table = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                    "--diagnostics", "--format", "table")
    assert table.exit_code == 0
    assert "per-sample loss" in table.stdout  # the text histograms under the table
    for name in ("alignment", "uniformity", "effective rank", "anisotropy", "hubness", "ECE"):
        assert name in table.stdout


def test_diagnostics_refuse_what_they_cannot_describe(data):
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--diagnostics", "--symmetric")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --diagnostics describes one direction's "
                                     "softmax: leave out --symmetric")
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--diagnostics", "--hubness-k", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --hubness-k must be between 1 and 1000, got 0"
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--diagnostics", "--hubness-k", "99999999999999999999")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --hubness-k must be between 1 and 1000, got "
                                     "99999999999999999999")


def test_sweep_reports_the_ece_at_every_temperature(real_data):
    query, positive = real_data["query"][:200], real_data["positive"][:200]
    swept = infonce_cli.sweep(query, positive, temperatures="0.02,0.05,0.1,0.3")
    for row in swept.rows:
        scored = infonce_cli.score(query, positive, temperature=row.temperature,
                                   diagnostics=True)
        assert row.ece == pytest.approx(scored.diagnostics.calibration.ece, abs=1e-9)
    best = min(swept.rows, key=lambda row: row.ece)
    assert swept.to_dict()["calibration_optimum"] == {"temperature": best.temperature,
                                                      "ece": best.ece}


def test_report_writes_one_page_from_the_same_pipeline(data):
    result = run_cli("report", "--query", "queries.npy", "--pos", "positives.npy", "--neg",
                     "hard_negatives.npy", "--steps", "12", "--id-col", "id", "-o", "r.html")
    assert result.exit_code == 2  # --id-col needs a Parquet input: refused in one line
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert not (data / "r.html").exists()
    result = run_cli("report", "--query", "queries.npy", "--pos", "positives.npy", "--neg",
                     "hard_negatives.npy", "--steps", "12", "--worst", "4", "-o", "r.html")
    assert result.exit_code == 0, result.output
    page = (data / "r.html").read_text()
    api = infonce_cli.report("queries.npy", "positives.npy", "hard_negatives.npy", steps=12,
                             worst=4)
    assert page == infonce_cli.report_html(api)  # one pipeline: the same page
    assert len(api.score.worst) == 4
    assert api.score.diagnostics is not None
    assert api.sweep.calibration_optimum is not None


def test_report_refuses_what_it_cannot_write(data):
    result = run_cli("report", "--query", "queries.npy", "--pos", "positives.npy",
                     "-o", "r.json")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --output r.json: use a .html file name"
    before = (data / "queries.npy").read_bytes()
    (data / "link.html").symlink_to(data / "queries.npy")
    result = run_cli("report", "--query", "queries.npy", "--pos", "positives.npy",
                     "-o", "link.html")
    assert result.exit_code == 2
    assert "queries.npy" in result.stderr
    assert (data / "queries.npy").read_bytes() == before
    result = run_cli("report", "--query", "queries.npy", "--pos", "positives.npy")
    assert result.exit_code == 2


def _beir_arrays():
    """The sample BEIR set as arrays: query and corpus vectors and the relevant pairs."""
    import pyarrow.parquet as pq

    from tests.conftest import SAMPLE

    folder = SAMPLE / "retrieval"
    queries, corpus = pq.read_table(folder / "queries.parquet"), pq.read_table(
        folder / "corpus.parquet")
    query_vectors = np.stack(queries.column("embedding").to_numpy(zero_copy_only=False))
    corpus_vectors = np.stack(corpus.column("embedding").to_numpy(zero_copy_only=False))
    query_row = {q: i for i, q in enumerate(queries.column("_id").to_pylist())}
    doc_row = {d: i for i, d in enumerate(corpus.column("_id").to_pylist())}
    pairs = []
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        q, d, rel = line.split("\t")
        if int(rel) >= 1 and q in query_row and d in doc_row:
            pairs.append((query_row[q], doc_row[d]))
    return query_vectors, corpus_vectors, sorted(set(pairs)), folder


def test_retrieval_diagnostics_match_the_formulas_over_the_whole_corpus():
    """Alignment over the relevant pairs, the geometry of the queries and of the corpus,
    hubness from each query's top k of the whole corpus (relevant documents included) and
    the calibration of each pair's softmax over the corpus (the query's other relevant
    documents left out, as in its loss), against float64 references and torchmetrics."""
    from scipy.spatial.distance import pdist
    from torchmetrics.functional.classification import multiclass_calibration_error

    query, corpus, pairs, folder = _beir_arrays()
    result = infonce_cli.retrieval(str(folder / "queries.parquet"),
                                   str(folder / "corpus.parquet"), str(folder / "qrels.tsv"),
                                   diagnostics=True, hubness_k=7, temperature=0.05,
                                   device="cpu")
    d = result.diagnostics
    q, c = _unit(query), _unit(corpus)
    assert d.alignment == pytest.approx(
        np.mean([np.sum((q[i] - c[j]) ** 2) for i, j in pairs]), rel=1e-6)
    for side, values in (("query", query), ("pos", corpus)):
        x = _unit(values)
        expected = math.log(np.mean(np.exp(-2 * pdist(x, "sqeuclidean"))))
        assert getattr(d.uniformity, side) == pytest.approx(expected, rel=1e-6)
        assert getattr(d.effective_rank, side) == pytest.approx(
            effective_rank_reference(values), rel=1e-6)
        assert getattr(d.anisotropy, side) == pytest.approx(anisotropy_reference(values),
                                                            rel=1e-6)
    assert d.to_dict()["uniformity"].keys() == {"query", "corpus"}
    similarity = q @ c.T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :7]
    counts = np.bincount(top.ravel(), minlength=len(corpus)).astype(np.float64)
    skewness = ((counts - counts.mean()) ** 3).mean() / counts.std() ** 3
    assert d.hubness.skewness == pytest.approx(skewness, rel=1e-6)
    assert d.hubness.antihub_share == pytest.approx((counts == 0).mean())
    relevant = {}
    for i, j in pairs:
        relevant.setdefault(i, set()).add(j)
    logits = torch.full((len(pairs), len(corpus) + 1), -math.inf, dtype=torch.float64)
    for row, (i, j) in enumerate(pairs):
        others = np.ones(len(corpus), dtype=bool)
        others[list(relevant[i])] = False
        logits[row, 0] = similarity[i, j] / 0.05
        logits[row, 1:][torch.from_numpy(others)] = torch.from_numpy(
            similarity[i, others] / 0.05)
    ties = logits[:, 1:] == logits[:, :1]
    target = torch.where(ties.any(dim=1), ties.int().argmax(dim=1) + 1, 0)
    probabilities = torch.softmax(logits, dim=1)
    assert float(probabilities.max(dim=1).values.max()) < 1 - 1e-6
    ece = multiclass_calibration_error(probabilities, target, num_classes=len(corpus) + 1,
                                       n_bins=15)
    assert d.calibration.ece == pytest.approx(float(ece), abs=1e-6)


def test_retrieval_diagnostics_on_the_command_line(tmp_path):
    from tests.conftest import SAMPLE

    folder = SAMPLE / "retrieval"
    args = ("retrieval", "--query", str(folder / "queries.parquet"), "--corpus",
            str(folder / "corpus.parquet"), "--qrels", str(folder / "qrels.trec"),
            "--diagnostics", "--hubness-k", "5")
    result = run_cli(*args, "--format", "json", "--run", str(tmp_path / "run.trec"),
                     "--top-k", "3")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["diagnostics"]["hubness"]["k"] == 5
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert {line.split()[3] for line in lines} == {"1", "2", "3"}  # --top-k, not the k of 5
    table = run_cli(*args, "--format", "table")
    assert table.exit_code == 0
    assert "corpus" in table.stdout
    assert "hubness (k = 5)" in table.stdout


def test_too_few_rows_are_refused_in_one_line(data):
    q, p = np.load("queries.npy")[:1], np.load("positives.npy")[:1]
    with pytest.raises(infonce_cli.InfonceError, match="at least 2 queries"):
        infonce_cli.score(q, p, np.load("hard_negatives.npy")[:1], diagnostics=True)
    np.save("one.npy", q)
    np.save("one_pos.npy", p)
    result = run_cli("score", "--query", "one.npy", "--pos", "one_pos.npy", "--neg",
                     "distractors.npy", "--diagnostics")
    assert result.exit_code == 1
    assert result.stderr == ("error: the diagnostics need at least 2 queries: uniformity and "
                             "anisotropy compare distinct rows (got 1)\n")
    report = run_cli("report", "--query", "one.npy", "--pos", "one_pos.npy", "-o", "one.html")
    assert (report.exit_code, report.stderr) == (1, result.stderr)
    assert not Path("one.html").exists()


def test_hubness_with_batches_counts_each_batch_s_candidates(rng):
    """A last batch smaller than k leaves its queries fewer than k candidates: their top-k
    lists are padded, not cut, and the hubness is still the reference's."""
    arrays = _random(rng, n=50)
    result = infonce_cli.score(arrays["query"], arrays["positive"], batch_size=16,
                               diagnostics=True, hubness_k=5, temperature=0.1)
    skewness, antihubs = hubness_reference(arrays["query"], arrays["positive"], None, False, 5,
                                           batch_size=16)
    assert result.diagnostics.hubness.skewness == pytest.approx(skewness, rel=1e-6)
    assert result.diagnostics.hubness.antihub_share == pytest.approx(antihubs)


def test_uniformity_over_many_blocks(rng, monkeypatch):
    """Row and column blocks smaller than the data: the triangle of blocks still covers
    every pair i < j exactly once."""
    from infonce_cli import diagnostics

    x = rng.normal(size=(37, 6)).astype(np.float32)
    expected = uniformity_reference(x)
    for rows, columns in ((4, 7), (7, 4), (1, 1), (8, 3)):
        monkeypatch.setattr(diagnostics, "_PAIR_ROWS", rows)
        monkeypatch.setattr(diagnostics, "_PAIR_COLUMNS", columns)
        for budget in (2**30, 16):  # kept, and read again for each block
            assert diagnostics.uniformity(x, torch.float64, torch.device("cpu"),
                                          budget) == pytest.approx(expected, rel=1e-12)


def test_score_plot_draws_the_four_panels(data):
    import xml.etree.ElementTree as ElementTree

    def titles(path):
        texts = [node.text or "" for node in ElementTree.parse(path).iter()
                 if node.tag.endswith("text")]
        return [t for t in texts if t in ("per-sample loss", "rank of the positive",
                                          "similarity: positives and hardest negatives")
                or t.startswith("reliability")]

    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--plot", "f.svg", "--format", "json")
    assert result.exit_code == 0, result.output
    api = infonce_cli.score("queries.npy", "positives.npy", diagnostics=True)
    ece = api.diagnostics.calibration.ece
    assert titles("f.svg") == ["per-sample loss", "rank of the positive",
                               f"reliability (ECE {ece:.4f})",
                               "similarity: positives and hardest negatives"]
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--symmetric", "--plot", "s.svg", "--format", "json")
    assert result.exit_code == 0
    assert not any(t.startswith("reliability") for t in titles("s.svg"))
    for bad, line in (("f.pdf", "error: --plot f.pdf: use a .png, .svg or .html file name"),
                      ("queries.npy", None)):
        result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                         "--plot", bad)
        assert result.exit_code == 2
        if line:
            assert result.stderr.strip() == line


def test_plot_is_refused_under_torchrun(data, monkeypatch):
    from infonce_cli import distributed

    monkeypatch.setattr(distributed, "launched", lambda: True)
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--plot", "f.svg")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --plot draws every pair: run it in one "
                                     "process, without torchrun")
    assert not (data / "f.svg").exists()


def test_hubness_k_needs_diagnostics(data):
    result = run_cli("score", "--query", "queries.npy", "--pos", "positives.npy",
                     "--hubness-k", "5")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --hubness-k sets the hubness of --diagnostics: "
                                     "add --diagnostics")


def test_rows_of_zeros_are_refused_and_tiny_rows_normalised_exactly(rng, data):
    """Every row is normalised: a row of zeros (which dot scores allow) is one line, and a
    row of 1e-30s (whose squares underflow in float32) is the unit vector it points to."""
    query = rng.normal(size=(20, 8)).astype(np.float32)
    positive = query + 0.1
    query[3] = 1e-30 * query[3]
    tiny = infonce_cli.score(query, positive, diagnostics=True)
    assert tiny.diagnostics.uniformity.query == pytest.approx(uniformity_reference(query),
                                                              rel=1e-6)
    assert tiny.diagnostics.effective_rank.query == pytest.approx(
        effective_rank_reference(query), rel=1e-6)
    query[3] = 0
    np.save("zero.npy", query)
    np.save("zero_pos.npy", positive)
    result = run_cli("score", "--query", "zero.npy", "--pos", "zero_pos.npy", "--similarity",
                     "dot", "--temperature", "1", "--diagnostics")
    assert result.exit_code == 1
    assert result.stderr == ("error: the diagnostics normalise every row, and row 3 of the "
                             "queries is all zeros\n")
    from infonce_cli.diagnostics import _check_rows
    from infonce_cli.errors import InputError
    half = torch.from_numpy(query).bfloat16()  # tensors are checked as they come
    with pytest.raises(InputError, match="row 3 of the queries is all zeros"):
        _check_rows(("queries", half), ("positives", torch.from_numpy(positive)))
