"""Rebuild sample_data/ and sample_data/retrieval/ from the debian-minilm embeddings (see
README.md here).

Usage: python sample_data/make_sample_data.py [path/to/debian-minilm]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PAIRS = 400
DISTRACTORS = slice(2000, 3000)
HERE = Path(__file__).parent
RETRIEVAL = HERE / "retrieval"
SEED = 20240517
PARTLY_RELEVANT_EVERY = 3
"""Every third query (0, 3, 6, …) has its first hard negative judged relevant at 1."""
NOT_RELEVANT_EVERY = 20
"""Every twentieth query (10, 30, …) has its last hard negative judged not relevant (0)."""
DEFAULT_SOURCE = HERE.parent.parent / "shared/data/debian-minilm"
SOURCE = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE


def main() -> None:
    queries = np.load(SOURCE / "queries.npy")[:PAIRS]
    docs = np.load(SOURCE / "docs.npy")
    hard = np.load(SOURCE / "hardneg_idx.npy")[:PAIRS]
    positives = docs[:PAIRS]
    np.save(HERE / "queries.npy", queries)
    np.save(HERE / "positives.npy", positives)
    np.save(HERE / "hard_negatives.npy", docs[hard])
    np.save(HERE / "distractors.npy", docs[2000:3000])
    table = pq.read_table(SOURCE / "pairs.parquet", columns=["id", "query", "positive"])
    pq.write_table(table.slice(0, PAIRS).combine_chunks(), HERE / "pairs.parquet",
                   compression="zstd")
    check = pq.read_table(HERE / "pairs.parquet")
    vectors = check.column("query").combine_chunks().flatten().to_numpy().reshape(PAIRS, -1)
    if not np.array_equal(vectors, queries) or check.column("id").null_count:
        raise SystemExit("the Parquet copy does not match the .npy rows")
    print(f"wrote {PAIRS} pairs to {HERE}")
    make_retrieval(queries, docs, hard, table.column("id").to_pylist()[:PAIRS])


def make_retrieval(queries: np.ndarray, docs: np.ndarray, hard: np.ndarray,
                   names: list[str]) -> None:
    """queries.parquet, corpus.parquet (shuffled, random ids), qrels.tsv and qrels.trec."""
    rng = np.random.default_rng(SEED)
    wanted = np.unique(np.concatenate([np.arange(PAIRS), hard.ravel(),
                                       np.arange(DISTRACTORS.start, DISTRACTORS.stop)]))
    # One copy of each distinct vector: rows are compared by their bytes (docs.npy holds
    # no two bit-identical rows today, so this keeps every row).
    content = np.ascontiguousarray(docs[wanted]).view(f"V{docs.shape[1] * docs.itemsize}")
    _, first = np.unique(content.ravel(), return_index=True)
    wanted = wanted[np.sort(first)]
    rows = wanted[rng.permutation(len(wanted))]  # corpus row k is docs.npy row rows[k]
    doc_ids = [f"doc-{value:08x}" for value in rng.choice(2**32, size=len(rows),
                                                          replace=False)]
    doc_id = dict(zip(rows.tolist(), doc_ids, strict=True))
    judgements = []
    for query in range(PAIRS):
        judgements.append((names[query], doc_id[query], 2))
        if query % PARTLY_RELEVANT_EVERY == 0:
            judgements.append((names[query], doc_id[int(hard[query, 0])], 1))
        if query % NOT_RELEVANT_EVERY == NOT_RELEVANT_EVERY // 2:
            judgements.append((names[query], doc_id[int(hard[query, -1])], 0))
    if any(" " in name or "\t" in name for name in names):
        raise SystemExit("a query id holds whitespace, which TREC qrels cannot")
    RETRIEVAL.mkdir(exist_ok=True)
    _write_vectors(RETRIEVAL / "queries.parquet", names, queries)
    _write_vectors(RETRIEVAL / "corpus.parquet", doc_ids, docs[rows])
    lines = [f"{query}\t{doc}\t{relevance}\n" for query, doc, relevance in judgements]
    (RETRIEVAL / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    lines = [f"{query} 0 {doc} {relevance}\n" for query, doc, relevance in judgements]
    (RETRIEVAL / "qrels.trec").write_text("".join(lines))
    check = pq.read_table(RETRIEVAL / "corpus.parquet")
    vectors = check.column("embedding").combine_chunks().flatten().to_numpy()
    if not np.array_equal(vectors.reshape(len(rows), -1), docs[rows]):
        raise SystemExit("the corpus does not match the docs.npy rows")
    print(f"wrote {PAIRS} queries, {len(rows)} documents and {len(judgements)} judgements "
          f"to {RETRIEVAL}")


def _write_vectors(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    """``_id`` and ``embedding`` (fixed_size_list<float32>), zstd-compressed; the floats
    byte-stream-split, which lets zstd compress their exponent bytes (a fifth smaller)."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"_id": pa.array(ids, type=pa.string()), "embedding": column})
    pq.write_table(table, path, compression="zstd", use_dictionary=False,
                   use_byte_stream_split=["embedding.list.element"])


if __name__ == "__main__":
    main()
