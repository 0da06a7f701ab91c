"""Rebuild sample_data/ from the debian-minilm embeddings (see README.md here).

Usage: python sample_data/make_sample_data.py [path/to/debian-minilm]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

PAIRS = 400
HERE = Path(__file__).parent
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


if __name__ == "__main__":
    main()
