"""Graded retrieval metrics from exact positions, against ranx and trec_eval (pytrec_eval)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from infonce_cli.errors import InputError, UsageError
from infonce_cli.metrics import Gain, graded_metrics

AT = (1, 3, 5, 10, 20, 100, 200)
"""Cut-offs, 200 beyond the corpus."""
NUM_DOCS = 150
DEPTH = 20
"""Depth of the truncated run: cut-offs up to it are computable from it."""


@dataclass
class Case:
    """Random graded qrels over a corpus, the corpus's scores per query, and the exact
    1-based position of every ranked relevant document."""

    qrels: dict[str, dict[str, int]]
    scores: np.ndarray  # (Q, NUM_DOCS), the order the ranking follows
    query_index: np.ndarray
    position: np.ndarray
    relevance: np.ndarray
    ideal_query_index: np.ndarray
    ideal_relevance: np.ndarray

    @property
    def num_queries(self) -> int:
        return len(self.qrels)

    def run(self, depth: int = NUM_DOCS) -> dict[str, dict[str, float]]:
        """The top ``depth`` documents per query with their scores (distinct per query)."""
        run = {}
        for i, qid in enumerate(self.qrels):
            top = np.argsort(-self.scores[i], kind="stable")[:depth]
            run[qid] = {_doc(d): float(self.scores[i, d]) for d in top}
        return run

    def metrics(self, gain: Gain, at: tuple[int, ...] = AT):
        return graded_metrics(self.query_index, self.position, self.relevance, self.num_queries,
                              ideal_query_index=self.ideal_query_index,
                              ideal_relevance=self.ideal_relevance, at=at, gain=gain)


def _doc(row: int) -> str:
    return f"d{row:04d}"


def _random_case(seed: int, num_queries: int = 60, ties: bool = False) -> Case:
    """Qrels graded 0–3 (judged non-relevant documents included, and relevant ones missing
    from the corpus), with scores that favour the relevant documents. With ``ties`` the
    scores are a few integers, relevant and non-relevant documents tie, and the order
    breaks ties as the engine does: non-relevant documents first, relevant ones in corpus
    order; the scores handed out are perturbed so that they follow that order strictly."""
    rng = np.random.default_rng(seed)
    qrels: dict[str, dict[str, int]] = {}
    scores = np.empty((num_queries, NUM_DOCS))
    pairs: list[tuple[int, int, int]] = []
    ideal: list[tuple[int, int]] = []
    for i in range(num_queries):
        judged = rng.choice(NUM_DOCS, size=int(rng.integers(1, 16)), replace=False)
        grades = rng.integers(0, 4, size=len(judged))
        grades[0] = max(grades[0], 1)
        qid = f"q{i:04d}"
        qrels[qid] = {_doc(d): int(g) for d, g in zip(judged, grades, strict=True)}
        for j in range(int(rng.integers(0, 3)) if i % 4 == 0 else 0):
            grade = int(rng.integers(1, 4))
            qrels[qid][f"missing-{i}-{j}"] = grade
            ideal.append((i, grade))
        grade_of = np.zeros(NUM_DOCS, dtype=np.int64)
        grade_of[judged] = grades
        if ties:
            raw = rng.integers(0, 4, size=NUM_DOCS) + (grade_of > 0) * rng.integers(0, 3)
            # Within equal scores: non-relevant first, then relevant by corpus row.
            order = np.lexsort((np.arange(NUM_DOCS), grade_of > 0, -raw))
            within_tie = np.empty(NUM_DOCS)
            within_tie[order] = np.arange(NUM_DOCS)
            scores[i] = raw - within_tie / NUM_DOCS
        else:
            scores[i] = rng.normal(size=NUM_DOCS) + 0.8 * grade_of * rng.random()
        assert len(np.unique(scores[i])) == NUM_DOCS
        place = np.empty(NUM_DOCS, dtype=np.int64)
        place[np.argsort(-scores[i], kind="stable")] = np.arange(1, NUM_DOCS + 1)
        for d in np.flatnonzero(grade_of):
            pairs.append((i, int(place[d]), int(grade_of[d])))
            ideal.append((i, int(grade_of[d])))
    shuffled = rng.permutation(len(pairs))  # the input needs no order
    query_index, position, relevance = np.array(pairs)[shuffled].T
    ideal_query_index, ideal_relevance = np.array(ideal).T
    return Case(qrels, scores, query_index, position, relevance, ideal_query_index,
                ideal_relevance)


def _ranx_names(at: tuple[int, ...], full_ranking: bool) -> list[str]:
    names = [f"{m}@{k}" for k in at for m in
             ("ndcg", "ndcg_burges", "recall", "precision", "mrr", "map", "hit_rate")]
    return names + (["mrr", "map", "r-precision"] if full_ranking else [])


def _ours(case: Case, at: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Our per-query columns under ranx's names (ndcg_burges for the exponential gain)."""
    linear, exponential = case.metrics(Gain.LINEAR, at), case.metrics(Gain.EXPONENTIAL, at)
    columns = dict(linear.per_query)
    columns.update({f"ndcg_burges@{k}": exponential.per_query[f"ndcg@{k}"] for k in at})
    for name, column in exponential.per_query.items():
        if not name.startswith("ndcg@"):
            assert np.array_equal(column, linear.per_query[name]), name
    return columns


def _compare_with_ranx(case: Case, depth: int, at: tuple[int, ...]) -> None:
    ranx = pytest.importorskip("ranx")
    from numba.core.errors import NumbaTypeSafetyWarning

    names = _ranx_names(at, full_ranking=depth == NUM_DOCS)
    with warnings.catch_warnings():
        # ranx's r-precision warns of a cast inside numba when it is first compiled.
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        theirs = ranx.evaluate(ranx.Qrels(case.qrels), ranx.Run(case.run(depth)), names,
                               return_mean=False)
    ours = _ours(case, at)
    assert sorted(case.qrels) == list(case.qrels)  # ranx reports queries in sorted id order
    for name in names:
        np.testing.assert_allclose(ours[name.replace("-", "_")], theirs[name], rtol=0, atol=1e-9,
                                   err_msg=name)


# ranx compiles its metrics with numba on first use: about a minute on a fresh install.
@pytest.mark.slow
def test_full_rankings_agree_with_ranx():
    _compare_with_ranx(_random_case(seed=0), depth=NUM_DOCS, at=AT)


@pytest.mark.slow
def test_cut_offs_agree_with_ranx_on_a_run_cut_at_its_depth():
    # Relevant documents below the run's depth stay in R and in the ideal ranking.
    case = _random_case(seed=1)
    assert (case.position > DEPTH).any()
    _compare_with_ranx(case, depth=DEPTH, at=tuple(k for k in AT if k <= DEPTH))


@pytest.mark.slow
def test_ties_in_the_scores_agree_with_ranx_under_the_tie_rule():
    case = _random_case(seed=2, ties=True)
    _compare_with_ranx(case, depth=NUM_DOCS, at=AT)


def test_full_rankings_agree_with_trec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    case = _random_case(seed=3)
    cutoffs = ",".join(map(str, AT))
    evaluator = pytrec_eval.RelevanceEvaluator(
        case.qrels, {f"{m}.{cutoffs}" for m in ("ndcg_cut", "P", "recall", "map_cut", "success")}
        | {"recip_rank", "map", "Rprec"})
    theirs = evaluator.evaluate(case.run())
    ours = case.metrics(Gain.LINEAR).per_query
    names = {"mrr": "recip_rank", "map": "map", "r_precision": "Rprec"}
    for k in AT:
        names |= {f"ndcg@{k}": f"ndcg_cut_{k}", f"precision@{k}": f"P_{k}",
                  f"recall@{k}": f"recall_{k}", f"map@{k}": f"map_cut_{k}",
                  f"hit_rate@{k}": f"success_{k}"}
    for name, trec_name in names.items():
        np.testing.assert_allclose(ours[name], [theirs[qid][trec_name] for qid in case.qrels],
                                   rtol=0, atol=1e-9, err_msg=name)


def test_means_are_the_means_of_the_per_query_columns_and_serialise_to_json():
    case = _random_case(seed=4, num_queries=7)
    metrics = case.metrics(Gain.EXPONENTIAL, at=(10, 1))
    assert metrics.queries == 7
    assert metrics.ndcg_at[10] == metrics.per_query["ndcg@10"].mean()
    assert metrics.map == metrics.per_query["map"].mean()
    out = json.loads(json.dumps(metrics.to_dict()))
    assert list(out) == ["queries", "gain", "ndcg_at", "recall_at", "precision_at", "mrr_at",
                         "mrr", "map", "map_at", "r_precision", "hit_rate_at"]
    assert out["gain"] == "exponential"
    assert list(out["ndcg_at"]) == ["1", "10"]
    assert all(column.shape == (7,) for column in metrics.per_query.values())


def test_without_ideal_grades_the_ranked_documents_are_the_ideal():
    # One query, relevant at positions 2 (grade 1) and 1 (grade 2): a perfect ranking.
    metrics = graded_metrics(np.array([0, 0]), np.array([2, 1]), np.array([1, 2]), 1, at=(2,))
    assert metrics.ndcg_at[2] == 1.0
    assert metrics.map == metrics.r_precision == metrics.mrr == 1.0
    assert metrics.precision_at[2] == metrics.recall_at[2] == 1.0


def test_a_query_with_no_ranked_document_scores_zero():
    metrics = graded_metrics(np.array([0]), np.array([4]), np.array([1]), 2,
                             ideal_query_index=np.array([0, 1]),
                             ideal_relevance=np.array([1, 3]), at=(5,))
    assert metrics.per_query["ndcg@5"][1] == metrics.per_query["mrr"][1] == 0.0
    assert metrics.per_query["map"].tolist() == [0.25, 0.0]


def test_exponential_gains_of_grades_float64_cannot_hold_are_exact():
    """Grades of 1024 and more: 2^rel − 1 overflows float64 (nDCG came out null). Each
    query's gains are taken relative to its largest grade, so nDCG is still exact: here
    against sums of Python integers, with grades that also fit float64."""
    from fractions import Fraction

    cases = [([2, 7, 1], [1030, 1, 1029]), ([1, 3], [2, 5]), ([4, 2, 9], [5000, 4999, 1])]
    query = np.concatenate([[q] * len(p) for q, (p, _) in enumerate(cases)])
    position = np.concatenate([p for p, _ in cases])
    grade = np.concatenate([g for _, g in cases])
    got = graded_metrics(query, position, grade, len(cases), at=(2, 10),
                         gain=Gain.EXPONENTIAL).per_query
    def dcg(pairs, k):
        return sum(Fraction(2 ** g - 1) / Fraction(np.log2(1 + p)) for p, g in pairs if p <= k)

    for k in (2, 10):
        for q, (places, grades) in enumerate(cases):
            ideal = dcg(enumerate(sorted(grades, reverse=True), start=1), k)
            want = float(dcg(zip(places, grades, strict=True), k) / ideal)
            assert got[f"ndcg@{k}"][q] == pytest.approx(want, rel=1e-12), (q, k)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_queries": 3}, InputError, "query 2 has no relevant document"),
        ({"position": np.array([1, 1, 2])}, InputError, "two relevant documents at position 1"),
        ({"position": np.array([0, 1, 2])}, InputError, "position must be ≥ 1, got 0"),
        ({"relevance": np.array([1, 0, 1])}, InputError, "relevance must be ≥ 1, got 0"),
        ({"query_index": np.array([0, 0, 2])}, InputError,
         "query_index must be between 0 and 1, got 2"),
        ({"position": np.array([1.0, 2.0, 3.0])}, InputError, "got dtype float64"),
        ({"relevance": np.array([1, 2])}, InputError, "expected arrays of one length"),
        ({"ideal_query_index": np.array([0, 1])}, UsageError, "give both"),
        ({"ideal_query_index": np.array([0, 1]), "ideal_relevance": np.array([1, 1])},
         InputError, "query 0 has 2 ranked relevant documents but 1 in its ideal grades"),
        ({"at": (5, 0)}, UsageError, "every cut-off must be a whole number ≥ 1, got 0"),
        ({"at": ()}, UsageError, "give at least one cut-off"),
        ({"gain": "burges"}, UsageError, "gain must be one of linear, exponential"),
    ],
)
def test_inconsistent_inputs_are_refused_with_a_message(kwargs, error, message):
    arguments = {"query_index": np.array([0, 0, 1]), "position": np.array([1, 2, 3]),
                 "relevance": np.array([1, 2, 3]), "num_queries": 2, **kwargs}
    with pytest.raises(error, match=message):
        graded_metrics(**arguments)
