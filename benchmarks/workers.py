"""Peer and floor workloads, one per process, for benchmarks/run.py.

Usage: python benchmarks/workers.py TOOL MODE TEMPERATURES QUERY POS [NEG]
Prints one JSON line: {"loss": mean loss at the first temperature, "compute_seconds": …}.

    python benchmarks/workers.py matmul-rate DEVICE ROWS COLUMNS QUERY POS

times the float32 products of every QUERY block of ROWS rows with every POS block of
COLUMNS rows on DEVICE (the shapes of infonce's blocks) and prints
{"tflops": …, "compute_seconds": …}.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def main() -> None:
    if sys.argv[1] == "matmul-rate":
        matmul_rate(*sys.argv[2:])
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


if __name__ == "__main__":
    main()
