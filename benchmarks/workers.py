"""Peer and floor workloads, one per process, for benchmarks/run.py.

Usage: python benchmarks/workers.py TOOL MODE TEMPERATURES QUERY POS [NEG]
Prints one JSON line: {"loss": mean loss at the first temperature, "compute_seconds": …}.

    python benchmarks/workers.py matmul-rate DEVICE ROWS COLUMNS QUERY POS

times the float32 products of every QUERY block of ROWS rows with every POS block of
COLUMNS rows on DEVICE (the shapes of infonce's blocks) and prints
{"tflops": …, "compute_seconds": …}.

    python benchmarks/workers.py sweep-floor T QUERY POS

the bare work of an in-batch sweep of T temperatures on preloaded tensors: the products of
blocks of 256 normalised queries with every positive, and for each block, a cache-sized
chunk of 16 rows at a time, T exponentials of the scaled scores summed per row (torch's
multiply, exp and sum, the fewest passes torch ops allow); prints
{"products_seconds": …, "exp_seconds": …, "compute_seconds": …}.

    python benchmarks/workers.py uniformity-floor QUERY POS

the bare work of the exact uniformity of both sides on preloaded tensors: for each side,
the products of its normalised rows over the upper triangle of blocks (1,024 × 2,048, the
fastest shape here) and Σ exp(4·x̂_i·x̂_j) per block, the least any exact computation of it
does; prints {"compute_seconds": …, "uniformity": {"query": …, "pos": …}}.

    python benchmarks/workers.py retrieval-matmul ROWS COLUMNS pairs|queries QUERY CORPUS QRELS

times the bare float32 products of a retrieval run's shapes: blocks of ROWS relevant
(query, document) pairs of the BEIR qrels (ids are row numbers), each as a normalised query
row per pair (``pairs``) or per distinct query of the block (``queries``), times the
normalised corpus, read once from its .npy file in blocks of COLUMNS rows, and prints
{"compute_seconds": …, "mm_seconds": …, "tflops": …}.

    python benchmarks/workers.py retrieval-phases ROWS QUERY CORPUS QRELS

times the phases of ``infonce retrieval`` from Python: loading and checking the inputs,
matching the qrels, then ``relevant_positions`` on the first ROWS relevant pairs against
the whole corpus, without and with top-100 lists, each under cProfile (its costliest
functions are printed), and the bare products of those rows.

    python benchmarks/workers.py faiss-flat K QUERY CORPUS QRELS

the usual alternative: faiss IndexFlatIP on the normalised corpus, the top K of every
query, evaluated by ranx (nDCG@10, MAP@100, recall@100); the best neighbour of the first
256 queries is checked against brute force (faiss has returned wrong ones in some runs).
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch


def main() -> None:
    if sys.argv[1] == "matmul-rate":
        matmul_rate(*sys.argv[2:])
        return
    if sys.argv[1] == "sweep-floor":
        sweep_floor(*sys.argv[2:])
        return
    if sys.argv[1] == "uniformity-floor":
        uniformity_floor(*sys.argv[2:])
        return
    if sys.argv[1] in RETRIEVAL_WORKERS:
        RETRIEVAL_WORKERS[sys.argv[1]](*sys.argv[2:])
        return
    tool, mode, temperatures_text, query_path, pos_path, *rest = sys.argv[1:]
    temperatures = [float(t) for t in temperatures_text.split(",")]
    query = torch.from_numpy(np.load(query_path))
    positive = torch.from_numpy(np.load(pos_path))
    negatives = torch.from_numpy(np.load(rest[0])) if rest else None
    started = time.perf_counter()
    losses = [run(tool, mode, t, query, positive, negatives) for t in temperatures]
    print(json.dumps({"loss": losses[0], "compute_seconds": time.perf_counter() - started}))


def run(tool: str, mode: str, temperature: float, query, positive, negatives) -> float:
    if tool == "info-nce-pytorch":
        from info_nce import info_nce

        return float(info_nce(query, positive, negatives, temperature=temperature,
                              negative_mode="paired" if mode == "paired" else "unpaired"))
    if tool == "pytorch-metric-learning":
        from pytorch_metric_learning.losses import NTXentLoss

        n = len(query)
        m = negatives.shape[1]
        anchors = torch.arange(n)
        indices = (anchors, anchors, anchors.repeat_interleave(m), n + torch.arange(n * m))
        reference = torch.cat([positive, negatives.reshape(-1, query.shape[1])])
        return float(NTXentLoss(temperature=temperature)(query, indices_tuple=indices,
                                                         ref_emb=reference))
    if tool == "torch-floor":
        return floor(mode, temperature, query, positive, negatives)
    raise SystemExit(f"unknown tool {tool}")


def floor(mode, temperature, query, positive, negatives) -> float:
    """The least work the loss needs: normalise, one matrix product, one log-sum-exp,
    in row blocks so the full matrix is never held."""
    query = torch.nn.functional.normalize(query, dim=-1)
    positive = torch.nn.functional.normalize(positive, dim=-1)
    positive_logit = (query * positive).sum(-1) / temperature
    if mode == "paired":
        negatives = torch.nn.functional.normalize(negatives, dim=-1)
        logits = torch.einsum("nd,nmd->nm", query, negatives) / temperature
        lse = torch.logsumexp(torch.cat([positive_logit[:, None], logits], 1), 1)
        return float((lse - positive_logit).mean())
    total = 0.0
    for start in range(0, len(query), 4096):
        logits = query[start:start + 4096] @ positive.T / temperature
        total += float((torch.logsumexp(logits, 1) - positive_logit[start:start + 4096]).sum())
    return total / len(query)


def matmul_rate(device_name: str, rows_text: str, columns_text: str, query_path: str,
                pos_path: str) -> None:
    """The rate of the bare matrix products a score needs, on preloaded device tensors."""
    device = torch.device(device_name)
    query = torch.from_numpy(np.load(query_path)).to(device)
    positive = torch.from_numpy(np.load(pos_path)).to(device)
    rows, columns = int(rows_text), int(columns_text)
    torch.backends.cuda.matmul.allow_tf32 = False

    def sweep() -> None:
        for start in range(0, len(query), rows):
            for first in range(0, len(positive), columns):
                torch.mm(query[start:start + rows], positive[first:first + columns].T)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.mm(query[:rows], positive[:columns].T)  # warm-up
    synchronize()
    started = time.perf_counter()
    sweep()
    synchronize()
    seconds = time.perf_counter() - started
    flops = 2 * len(query) * len(positive) * query.shape[1]
    print(json.dumps({"tflops": flops / seconds / 1e12, "compute_seconds": seconds}))


def sweep_floor(steps_text: str, query_path: str, pos_path: str) -> None:
    """Products and exps of an in-batch sweep, timed apart (see the module's docstring)."""
    query = torch.nn.functional.normalize(torch.from_numpy(np.load(query_path)), dim=1)
    positive = torch.nn.functional.normalize(torch.from_numpy(np.load(pos_path)), dim=1)
    scales = (1 / np.geomspace(0.01, 1.0, int(steps_text))).tolist()
    products = exps = 0.0
    work = torch.empty(16, len(positive))
    sums = torch.empty(16)
    for start in range(0, len(query), 256):
        began = time.perf_counter()
        scores = query[start:start + 256] @ positive.T
        products += time.perf_counter() - began
        began = time.perf_counter()
        for row in range(0, len(scores), 16):
            shifted = scores[row:row + 16] - scores[row:row + 16].amax(dim=1, keepdim=True)
            for scale in scales:
                torch.mul(shifted, scale, out=work[:len(shifted)]).exp_()
                torch.sum(work[:len(shifted)], dim=1, out=sums[:len(shifted)])
        exps += time.perf_counter() - began
    print(json.dumps({"products_seconds": products, "exp_seconds": exps,
                      "compute_seconds": products + exps}))


def uniformity_floor(query_path: str, pos_path: str) -> None:
    """The exact uniformity of both sides, bare (see the module's docstring)."""
    sides = {name: torch.nn.functional.normalize(torch.from_numpy(np.load(path)), dim=1)
             for name, path in (("query", query_path), ("pos", pos_path))}
    began = time.perf_counter()
    uniformity = {}
    for name, units in sides.items():
        n = len(units)
        total = 0.0
        for start in range(0, n, 1024):
            rows = units[start:start + 1024] * 4.0
            for first in range(start, n, 2048):
                terms = (rows @ units[first:first + 2048].T).exp_()
                if first < start + len(rows):
                    terms.triu_(diagonal=start - first + 1)
                total += float(terms.sum(dim=1).sum(dtype=torch.float64))
        uniformity[name] = math.log(total) - 4.0 - math.log(n * (n - 1) / 2)
    print(json.dumps({"compute_seconds": time.perf_counter() - began,
                      "uniformity": uniformity}))


# ---------------------------------------------------------------- retrieval


def _pair_rows(qrels_path: str) -> np.ndarray:
    """The query row of every relevant pair of a BEIR qrels file whose ids are row numbers,
    in the engine's order (by query, then document)."""
    table = np.loadtxt(qrels_path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)
    table = table[table[:, 2] >= 1]
    return table[np.lexsort((table[:, 1], table[:, 0])), 0]


def _npy_blocks(path: str, rows: int):
    """Blocks of ``rows`` rows of a C-ordered .npy file, read in order with plain reads
    (no memory map, so only the block in use is resident)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(handle))
        for first in range(0, shape[0], rows):
            count = min(rows, shape[0] - first)
            yield np.fromfile(handle, dtype=dtype, count=count * shape[1]).reshape(count,
                                                                                   shape[1])


def _query_blocks(query_path: str, pair_rows: np.ndarray, rows: int,
                  distinct: bool) -> list[torch.Tensor]:
    """The normalised query rows of each block of ``rows`` pairs: one per pair, or with
    ``distinct`` one per distinct query of the block (what the engine multiplies when a
    query has several relevant documents)."""
    queries = np.load(query_path, mmap_mode="r")
    blocks = []
    for start in range(0, len(pair_rows), rows):
        chosen = pair_rows[start:start + rows]
        chosen = np.unique(chosen) if distinct else chosen
        blocks.append(torch.nn.functional.normalize(torch.from_numpy(
            np.ascontiguousarray(queries[chosen])), dim=-1))
    return blocks


def _bare_products(blocks: list[torch.Tensor], corpus_path: str,
                   columns: int) -> tuple[float, int]:
    """Every query block times every normalised corpus block (the corpus read once);
    the seconds in torch.mm and the number of documents."""
    mm_seconds, total = 0.0, 0
    for block in _npy_blocks(corpus_path, columns):
        corpus = torch.nn.functional.normalize(torch.from_numpy(block), dim=-1)
        total += len(corpus)
        before = time.perf_counter()
        for queries in blocks:
            torch.mm(queries, corpus.T)
        mm_seconds += time.perf_counter() - before
    return mm_seconds, total


def retrieval_matmul(rows_text: str, columns_text: str, mode: str, query_path: str,
                     corpus_path: str, qrels_path: str) -> None:
    """The bare products of a retrieval run: normalised query blocks (``pairs``: a row per
    relevant pair; ``queries``: a row per distinct query of each block of pairs) × the
    normalised corpus blocks, the corpus read once."""
    started = time.perf_counter()
    blocks = _query_blocks(query_path, _pair_rows(qrels_path), int(rows_text),
                           distinct=mode == "queries")
    mm_seconds, total = _bare_products(blocks, corpus_path, int(columns_text))
    products = sum(len(block) for block in blocks)
    flops = 2 * products * total * blocks[0].shape[1]
    print(json.dumps({"compute_seconds": time.perf_counter() - started,
                      "mm_seconds": mm_seconds, "tflops": flops / mm_seconds / 1e12,
                      "query_rows": products, "corpus": total}))


def retrieval_phases(rows_text: str, query_path: str, corpus_path: str,
                     qrels_path: str) -> None:
    """Where a retrieval run's time goes: its phases timed from Python, the scoring pass
    (without and with top-100 lists) on the first ROWS pairs against the whole corpus
    under cProfile, and the bare products of those rows."""
    import cProfile
    import pstats

    from infonce_cli import io
    from infonce_cli.engine import EngineOptions
    from infonce_cli.ranking import Judged, match_qrels, relevant_positions

    rows = int(rows_text)
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    query = io.load_embeddings(query_path)
    corpus = io.load_embeddings(corpus_path)
    lap("open inputs")
    for embeddings in (query, corpus):
        io.check_values(embeddings, nonzero=True)
    lap("check values (NaN, zero rows)")
    names = (np.arange(query.shape[0]).astype(str), np.arange(corpus.shape[0]).astype(str))
    qrels = match_qrels(io.load_qrels(qrels_path), *names)
    lap("read and match qrels")
    judged = qrels.judged
    subset = Judged(judged.query_row[:rows], judged.doc_row[:rows], judged.relevance[:rows])
    options = EngineOptions()
    profiles: dict[str, list[str]] = {}

    def profiled(name: str, call) -> None:
        profile = cProfile.Profile()
        profile.enable()
        call()
        profile.disable()
        lap(name)
        stats = pstats.Stats(profile).sort_stats("tottime")
        top = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:8]
        profiles[name] = [f"{entry[2]:.2f} s {pstats.func_std_string(func)}"
                          for func, entry in top]

    # Only the queries these pairs belong to (rows 0…, as the qrels are sorted by query):
    # a query left without a relevant pair would get a top-k pass of its own.
    queries = query.values[0:int(subset.query_row.max()) + 1]
    profiled(f"relevant_positions, {rows} pairs", lambda: relevant_positions(
        queries, corpus.values, subset, options))
    profiled(f"relevant_positions top_k=100, {rows} pairs", lambda: relevant_positions(
        queries, corpus.values, subset, options, top_k=100))
    for mode in ("pair", "query"):
        blocks = _query_blocks(query_path, subset.query_row, 512, distinct=mode == "query")
        seconds, _ = _bare_products(blocks, corpus_path, 2560)
        lap(f"bare products, {rows} pairs, a row per {mode} "
            f"({sum(len(b) for b in blocks)} rows; torch.mm {seconds:.2f} s)")
    print(json.dumps({"phases": phases, "pairs": len(judged.query_row),
                      "queries": int(query.shape[0]), "profiled_rows": rows,
                      "profiles": profiles}))


def faiss_flat(k_text: str, query_path: str, corpus_path: str, qrels_path: str) -> None:
    """faiss IndexFlatIP on the normalised corpus, its top K per query evaluated by ranx."""
    import faiss
    from ranx import Qrels, Run, evaluate

    k = int(k_text)
    started = time.perf_counter()
    corpus = np.load(corpus_path)
    faiss.normalize_L2(corpus)
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    del corpus
    queries = np.load(query_path)
    faiss.normalize_L2(queries)
    scores, found = index.search(queries, k)
    searched = time.perf_counter() - started
    # faiss has returned wrong neighbours in some runs: check the best of a few queries by
    # brute force (the corpus is read again, outside the timing).
    checking = time.perf_counter()
    corpus = np.load(corpus_path)
    faiss.normalize_L2(corpus)
    checked = min(256, len(queries))
    best = (queries[:checked] @ corpus.T).argmax(axis=1)
    agreement = float((found[:checked, 0] == best).mean())
    del corpus
    started += time.perf_counter() - checking
    table = np.loadtxt(qrels_path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)
    judged: dict[str, dict[str, int]] = {}
    for query, doc, grade in table.tolist():
        judged.setdefault(str(query), {})[str(doc)] = grade
    run = {str(query): {str(doc): float(score) for doc, score in zip(found[query],
                                                                    scores[query], strict=True)}
           for query in map(int, judged)}
    metrics = evaluate(Qrels(judged), Run(run), ["ndcg@10", "map@100", "recall@100"])
    print(json.dumps({"compute_seconds": time.perf_counter() - started,
                      "search_seconds": searched,
                      "top1_agreement": agreement, "top1_checked": checked, **metrics}))


RETRIEVAL_WORKERS = {"retrieval-matmul": retrieval_matmul,
                     "retrieval-phases": retrieval_phases, "faiss-flat": faiss_flat}


if __name__ == "__main__":
    main()
