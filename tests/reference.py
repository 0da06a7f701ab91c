"""A slow, obvious float64 reference: one query at a time, candidate sets built explicitly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Reference:
    loss: np.ndarray
    rank: np.ndarray
    num_candidates: np.ndarray
    positive_score: np.ndarray
    hardest_negative_score: np.ndarray
    hardest_negative_index: np.ndarray


def similarity(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if kind == "cosine":
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    if kind == "dot":
        return float(a @ b)
    return -float(((a - b) ** 2).sum())


def candidate_sets(n, negatives, in_batch, batch_size, positives, drop=None):
    """For each query: a list of (negative index, vector), the positive excluded, and those
    for which ``drop(query, negative index)`` holds. In-batch with shared negatives (K, d),
    a query sees its batch's other positives (index j) then every shared row (N + k)."""
    sets = []
    size = batch_size or n
    for i in range(n):
        start = (i // size) * size
        stop = min(start + size, n)
        cands = []
        if negatives is None or in_batch:
            cands += [(j, positives[j]) for j in range(start, stop) if j != i]
        if negatives is not None and negatives.ndim == 2:  # in-batch too: N + k, after the batch
            first = n if in_batch else 0
            cands += [(first + k, negatives[k]) for k in range(len(negatives))]
        elif negatives is not None and not in_batch:
            cands += [(m, negatives[i, m]) for m in range(negatives.shape[1])]
        elif negatives is not None:
            per = negatives.shape[1]
            cands += [(n + r * per + m, negatives[r, m]) for r in range(start, stop)
                      for m in range(per)]
        if drop is not None:
            cands = [(j, vec) for j, vec in cands if not drop(i, j)]
        sets.append(cands)
    return sets


def reference(query, positive, negatives=None, *, temperature=0.05, kind="cosine",
              in_batch=False, batch_size=None, symmetric=False, drop=None) -> Reference:
    n = len(query)
    sets = candidate_sets(n, negatives, in_batch, batch_size, positive, drop)
    out = {k: [] for k in Reference.__dataclass_fields__}
    for i in range(n):
        pos = similarity(query[i], positive[i], kind)
        scores = [similarity(query[i], vec, kind) for _, vec in sets[i]]
        logits = [pos / temperature] + [s / temperature for s in scores]
        top = max(logits)
        lse = top + math.log(sum(math.exp(z - top) for z in logits))
        out["loss"].append(lse - pos / temperature)
        out["rank"].append(1 + sum(s >= pos for s in scores))
        out["num_candidates"].append(1 + len(scores))
        out["positive_score"].append(pos)
        if scores:
            best = int(np.argmax(scores))
            out["hardest_negative_score"].append(scores[best])
            out["hardest_negative_index"].append(sets[i][best][0])
        else:
            out["hardest_negative_score"].append(-math.inf)
            out["hardest_negative_index"].append(-1)
    result = Reference(**{k: np.array(v) for k, v in out.items()})
    if symmetric:
        back = reference(positive, query, None, temperature=temperature, kind=kind,
                         batch_size=batch_size)
        result.loss = (result.loss + back.loss) / 2
    return result
