"""The geometry and calibration of an embedding space, streamed by row blocks.

All rows are L2-normalised first (x̂). For queries Q and positives P, row-aligned:

- alignment: the mean over pairs of ‖q̂_i − p̂_i‖² (Wang & Isola 2020, α = 2);
- uniformity, per side: log of the mean over distinct pairs i < j of
  exp(−2‖x̂_i − x̂_j‖²) = exp(4·x̂_i·x̂_j − 4), exact over all N(N−1)/2 pairs: one
  pass over the upper triangle of blocks, each block's exp(4·x̂_i·x̂_j) summed at once
  (they lie in [e⁻⁴, e⁴], so no running maximum is needed);
- effective rank, per side: RankMe, exp(−Σ p_k log p_k) with p_k = σ_k / Σσ + 1e-7 over
  the singular values of the (N, d) matrix of unit rows, from its d × d Gram matrix
  accumulated over row blocks in float64;
- anisotropy, per side: the mean cosine between distinct rows, (‖Σ x̂_i‖² − N) / (N(N−1));
- hubness: the skewness of the k-occurrence N_k (how often each candidate is among the
  k best-scoring candidates of a query) and the share of candidates never among them,
  from the top-k lists the engine keeps;
- calibration: the expected and maximum calibration error of each query's softmax over
  its candidates at τ (confidence: the largest probability; correct: the positive scores
  above every negative), in equal-width bins.

Everything here is torch and NumPy: no files, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .calibration import calibration, top_probability
from .engine import EngineOptions, NegativeMode, PerSampleScores
from .errors import InputError
from .requests import HUBNESS_K
from .results import Calibration, Diagnostics, Hubness, SidePair
from .rows import Rows, gather_rows
from .similarity import Similarity, dtype_name, prepare_rows, reduction_dtype

Array = np.ndarray[Any, Any]

RANKME_EPSILON = 1e-7
"""Added to each normalised singular value before the entropy, as in RankMe."""

_ROW_BLOCK = 512
_PAIR_ROWS = 1024
_PAIR_COLUMNS = 2048
"""Uniformity's blocks of pairs: the shape at which the matrix products run fastest."""


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norms, safely for tiny ones (``_check_rows`` refuses rows
    of zeros first)."""
    return prepare_rows(rows, Similarity.COSINE)


def _read(source: Rows, start: int, stop: int, dtype: torch.dtype,
          device: torch.device) -> torch.Tensor:
    """Unit rows [start, stop) of ``source``, normalised before they are narrowed to
    ``dtype`` (float64 rows beyond float32's range stay finite)."""
    block = source[start:stop]
    block = block.detach() if isinstance(block, torch.Tensor) else torch.from_numpy(
        np.array(block, dtype=np.float64 if block.dtype.itemsize > 4 or dtype == torch.float64
                 else np.float32))
    if block.dtype.itemsize <= torch.finfo(dtype).bits // 8:
        block = block.to(dtype=dtype)  # widened first: half-precision rows as well
    return unit_rows(block.to(device=device)).to(dtype=dtype)


def _blocks(source: Rows, dtype: torch.dtype, device: torch.device,
            size: int = _ROW_BLOCK) -> Iterator[torch.Tensor]:
    """Unit rows of ``source`` in blocks of ``size``."""
    for start in range(0, int(source.shape[0]), size):
        yield _read(source, start, start + size, dtype, device)


class SideGeometry:
    """Running sums over one side's unit rows: their sum and their Gram matrix (float64)."""

    def __init__(self, dim: int, device: torch.device) -> None:
        self.n = 0
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.gram = torch.zeros((dim, dim), dtype=torch.float64, device=device)

    def add(self, units: torch.Tensor) -> None:
        self.n += units.shape[0]
        self.total += units.sum(dim=0)
        self.gram += units.T @ units

    def anisotropy(self) -> float:
        """The mean cosine over ordered pairs of distinct rows."""
        n = self.n
        # At most 1 (every row the same), whatever the rounding.
        return min(1.0, float((self.total.square().sum() - n) / (n * (n - 1))))

    def effective_rank(self) -> float:
        """RankMe of the unit rows: the min(N, d) singular values are the square roots of
        the Gram matrix's largest eigenvalues."""
        eigenvalues = torch.linalg.eigvalsh(self.gram)[-min(self.n, len(self.gram)):]
        eigenvalues = eigenvalues.clamp_min(0)
        singular = eigenvalues.sqrt()
        p = singular / singular.sum() + RANKME_EPSILON
        return float(torch.exp(-(p * p.log()).sum()))


def uniformity(source: Rows, dtype: torch.dtype, device: torch.device,
               max_memory: int) -> float:
    """log mean_{i<j} exp(−2‖x̂_i − x̂_j‖²) over every distinct pair of rows: blocks of the
    upper triangle of the Gram matrix, never more than one block at a time. The unit rows
    are kept whole when they fit ``max_memory``, else read again for each row block."""
    n, dim = int(source.shape[0]), int(source.shape[-1])
    kept = None
    if n * dim * torch.finfo(dtype).bits // 8 <= max_memory:
        kept = torch.cat(list(_blocks(source, dtype, device)))

    def units(start: int, stop: int) -> torch.Tensor:
        return kept[start:stop] if kept is not None else _read(source, start, stop, dtype,
                                                               device)

    total = torch.zeros((), dtype=torch.float64, device=device)
    work = torch.empty((min(n, _PAIR_ROWS), min(n, _PAIR_COLUMNS)), dtype=dtype, device=device)
    for start in range(0, n, _PAIR_ROWS):
        rows = units(start, start + _PAIR_ROWS) * 4.0
        for first in range(start, n, _PAIR_COLUMNS):
            candidates = units(first, first + _PAIR_COLUMNS)
            terms = work[:rows.shape[0], :candidates.shape[0]]
            torch.mm(rows, candidates.T, out=terms).exp_()  # exp(4·x̂_i·x̂_j) ≤ e⁴
            if first < start + rows.shape[0]:  # the block holds the diagonal: i < j only
                terms.triu_(diagonal=start - first + 1)
            # Each row's terms summed in the work dtype, the rows' sums in float64.
            total += terms.sum(dim=1).sum(dtype=torch.float64)
    # exp(−2‖x̂_i − x̂_j‖²) = exp(4·x̂_i·x̂_j − 4). At most 0 (every row the same), whatever
    # the rounding.
    return min(0.0, math.log(float(total)) - 4.0 - math.log(n * (n - 1) / 2))


def geometry(query: Rows, positive: Rows, device: torch.device
             ) -> tuple[float, SideGeometry, SideGeometry]:
    """The alignment of the pairs and each side's running sums, in one pass over both."""
    dim = int(query.shape[-1])
    sides = SideGeometry(dim, device), SideGeometry(dim, device)
    squared = 0.0
    for q, p in zip(_blocks(query, torch.float64, device),
                    _blocks(positive, torch.float64, device), strict=True):
        squared += float((q - p).square().sum())
        sides[0].add(q)
        sides[1].add(p)
    return squared / sides[0].n, *sides


def side_geometry(source: Rows, device: torch.device) -> SideGeometry:
    """One side's running sums, in one pass over its rows."""
    side = SideGeometry(int(source.shape[-1]), device)
    for units in _blocks(source, torch.float64, device):
        side.add(units)
    return side


_PAIR_BLOCK = 8192


def pair_alignment(query: Rows, corpus: Rows, query_row: Array, doc_row: Array,
                   device: torch.device) -> float:
    """The mean ‖q̂ − d̂‖² over (query row, corpus row) pairs, read a block of pairs at a
    time."""
    squared = 0.0
    for start in range(0, len(query_row), _PAIR_BLOCK):
        rows = slice(start, start + _PAIR_BLOCK)
        q = unit_rows(torch.from_numpy(np.asarray(gather_rows(query, query_row[rows]),
                                                  dtype=np.float64)).to(device))
        d = unit_rows(torch.from_numpy(np.asarray(gather_rows(corpus, doc_row[rows]),
                                                  dtype=np.float64)).to(device))
        squared += float((q - d).square().sum())
    return squared / len(query_row)


def occurrence_hubness(chosen: torch.Tensor, universe: int, k: int) -> Hubness:
    """k-occurrence skewness and antihub share over ``universe`` candidates, given every
    (query, candidate) pair of the queries' top-k lists as candidate ids."""
    chosen = chosen[chosen < universe].cpu()
    occurrence = torch.bincount(chosen, minlength=universe).double()
    spread = occurrence.std(correction=0)
    skewness = (float(((occurrence - occurrence.mean()) ** 3).mean() / spread ** 3)
                if spread > 0 else 0.0)
    return Hubness(k=k, skewness=skewness,
                   antihub_share=float((occurrence == 0).double().mean()),
                   max_occurrence=int(occurrence.max()), candidates=universe)


def hubness(scores: PerSampleScores, universe: int, positive_ids: torch.Tensor,
            k: int = HUBNESS_K) -> Hubness:
    """Hubness over ``universe`` candidates, from each query's top-k negatives
    (``scores.top_*``, numbered so that they index the universe) merged with its positive
    (``positive_ids``)."""
    assert scores.top_scores is not None
    assert scores.top_index is not None
    best = torch.cat([scores.positive_score.detach()[:, None].to(scores.top_scores.dtype),
                      scores.top_scores], dim=1)
    ids = torch.cat([positive_ids[:, None], scores.top_index], dim=1)
    value, picked = best.topk(min(k, best.shape[1]), dim=1)
    return occurrence_hubness(ids.gather(1, picked)[torch.isfinite(value)], universe, k)


def _calibration(scores: PerSampleScores, temperature: float, keep: Array,
                 options: EngineOptions) -> Calibration:
    """The calibration of the softmax of the ``keep`` rows of a run at ``temperature``."""
    confidence = top_probability(
        scores.loss[:, 0].detach().double().cpu().numpy()[keep],
        scores.positive_score.detach().double().cpu().numpy()[keep],
        scores.hardest_negative_score.detach().double().cpu().numpy()[keep],
        1.0 / temperature, dtype_name(reduction_dtype(options.dtype)))
    return calibration(confidence, (scores.rank.cpu().numpy() == 1)[keep])


def shares_candidates(mode: NegativeMode) -> bool:
    """Whether the queries of a mode share candidates, so that hubness means something:
    not with paired negatives alone, which no two queries share."""
    return mode is not NegativeMode.PAIRED


def hubness_universe(mode: NegativeMode, n: int, negatives: Rows | None
                     ) -> tuple[int, torch.Tensor]:
    """The candidates whose k-occurrence is counted, and each query's positive in the
    engine's numbering of negatives. In-batch, the N positives (rows 0..N−1) and the
    negatives that follow them; with shared negatives alone, the K shared rows: each
    query's positive, which no other query sees, still takes its place in the query's
    top k (numbered K + i) but is not counted."""
    rows = torch.arange(n)
    if mode is NegativeMode.IN_BATCH:
        return n, rows
    assert negatives is not None
    extra = int(np.prod(negatives.shape[:-1]))
    if mode is NegativeMode.SHARED:
        return extra, rows + extra
    return n + extra, rows


def _check_rows(*sides: tuple[str, Rows]) -> None:
    """Uniformity and anisotropy are over pairs of distinct rows: refuse fewer than two; and
    every row is normalised, whatever the similarity: refuse rows of zeros (which ``dot``
    and ``l2`` scores allow)."""
    for name, rows in sides:
        if int(rows.shape[0]) < 2:
            raise InputError(f"the diagnostics need at least 2 {name}: uniformity and "
                             f"anisotropy compare distinct rows (got {int(rows.shape[0])})")
        for start in range(0, int(rows.shape[0]), _ROW_BLOCK):
            block = rows[start:start + _ROW_BLOCK]
            nonzero = (block.detach().ne(0).any(dim=-1).cpu().numpy()
                       if isinstance(block, torch.Tensor) else np.asarray(block).any(axis=-1))
            zero = np.flatnonzero(~nonzero)
            if zero.size:
                raise InputError("the diagnostics normalise every row, and row "
                                 f"{start + int(zero[0])} of the {name} is all zeros")


def diagnose(query: Rows, positive: Rows, negatives: Rows | None, scores: PerSampleScores,
             temperature: float, keep: Array, options: EngineOptions,
             k: int = HUBNESS_K) -> Diagnostics:
    """Every diagnostic of a run scored with ``options``: ``scores`` at ``temperature``
    (with the top-k lists when the mode shares candidates), ``keep`` the queries that
    count. Uniformity's products run in float32 (float64 for float64 runs)."""
    _check_rows(("queries", query), ("positives", positive))
    device, max_memory, work = options.device, options.max_memory, reduction_dtype(options.dtype)
    alignment, queries, positives = geometry(query, positive, device)
    return Diagnostics(
        alignment=alignment,
        uniformity=SidePair(uniformity(query, work, device, max_memory),
                            uniformity(positive, work, device, max_memory)),
        effective_rank=SidePair(queries.effective_rank(), positives.effective_rank()),
        anisotropy=SidePair(queries.anisotropy(), positives.anisotropy()),
        hubness=hubness(scores, *hubness_universe(scores.mode, int(query.shape[0]), negatives),
                        k=k) if shares_candidates(scores.mode) else None,
        calibration=_calibration(scores, temperature, keep, options),
    )


def diagnose_retrieval(query: Rows, corpus: Rows, pairs: tuple[Array, Array], kept: Array,
                       scores: PerSampleScores, top_rows: Array, temperature: float,
                       options: EngineOptions, k: int = HUBNESS_K) -> Diagnostics:
    """The diagnostics of a retrieval run: alignment and calibration over the (query row,
    corpus row) ``pairs`` that are ``kept`` (the positives), whose engine results are
    ``scores``; the geometry of the queries and the corpus; hubness over the corpus from
    every query's ``top_rows`` (Q, ≥ k corpus rows, −1 where a query has fewer)."""
    _check_rows(("queries", query), ("documents", corpus))
    device, max_memory, work = options.device, options.max_memory, reduction_dtype(options.dtype)
    queries, documents = side_geometry(query, device), side_geometry(corpus, device)
    chosen = torch.from_numpy(np.asarray(top_rows)[:, :k])
    query_row, doc_row = pairs
    return Diagnostics(
        alignment=pair_alignment(query, corpus, query_row[kept], doc_row[kept], device),
        uniformity=SidePair(uniformity(query, work, device, max_memory),
                            uniformity(corpus, work, device, max_memory), "corpus"),
        effective_rank=SidePair(queries.effective_rank(), documents.effective_rank(),
                                "corpus"),
        anisotropy=SidePair(queries.anisotropy(), documents.anisotropy(), "corpus"),
        hubness=occurrence_hubness(chosen[chosen >= 0], int(corpus.shape[0]), k),
        calibration=_calibration(scores, temperature, kept, options),
    )
