"""Side-by-side benchmarks: infonce against info-nce-pytorch, pytorch-metric-learning and a
plain torch floor, each in its own process on the same files, in one run.

    python benchmarks/run.py                 # every suite
    python benchmarks/run.py sweep scale     # chosen suites
    python benchmarks/run.py --list

Prints a Markdown table per suite: wall time of the whole process (start-up, loading and
compute), peak RSS (the kernel's figure for the process, which counts the mapped file
pages it touched) and our ratio to each peer. Data is generated under benchmarks/data/
(seeded) and reused. Needs the test extras (pip install -e '.[test]').
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PEER_MEMORY_LIMIT = 20 * 2**30
"""Address-space cap for peers, so one that asks for terabytes fails instead of swapping."""
GRID = 64


@dataclass
class Measurement:
    name: str
    wall: float
    peak_rss: int  # bytes
    ok: bool
    loss: float | None = None
    note: str = ""
    baseline: str | None = None
    """Another of our runs this one is compared with (sweep / score, bfloat16 / float32)."""
    gpu_peak: int | None = None  # bytes the CUDA allocator reserved at its peak
    output: dict[str, Any] | None = None  # the JSON the process printed


def measure(name: str, command: list[str], limit: int | None = None) -> Measurement:
    """Run a Python command line (``-m module …`` or ``script.py …``) in its own process:
    wall time, and the peak RSS that process records itself (see peak.py)."""
    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory() as scratch:
        record = Path(scratch) / "peak"
        full = [sys.executable, str(HERE / "peak.py"), str(record), *command]
        started = time.perf_counter()
        result = subprocess.run(full, capture_output=True, text=True, preexec_fn=cap)
        wall = time.perf_counter() - started
        peaks = [int(v) for v in record.read_text().split()] if record.exists() else [0]
    output = _json_from(result.stdout) if result.returncode == 0 else None
    lines = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
    note = "" if result.returncode == 0 else lines[-1][:90]
    gpu_peak = peaks[1] if len(peaks) > 1 else None
    if gpu_peak is not None and not note:
        note = f"GPU peak {gpu_peak / 2**30:.2f} GiB"
    return Measurement(name, wall, peaks[0], result.returncode == 0,
                       _loss_from(output) if output else None, note, gpu_peak=gpu_peak,
                       output=output)


def _json_from(stdout: str) -> dict[str, Any] | None:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _loss_from(data: dict[str, Any]) -> float | None:
    if "loss" in data and isinstance(data["loss"], dict):
        return float(data["loss"]["mean"])
    if "rows" in data:
        return float(data["rows"][0]["loss_mean"])
    return data.get("loss")


# ---------------------------------------------------------------- data


def pairs(n: int, d: int, noise: float, seed: int = 0) -> tuple[Path, Path]:
    """Queries and positives = queries + noise (the task stays non-trivial: several nats)."""
    query, positive = DATA / f"q_{n}_{d}.npy", DATA / f"p_{n}_{d}_{noise:g}.npy"
    if not query.exists() or not positive.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        q = rng.standard_normal((n, d), dtype=np.float32)
        np.save(query, q)
        np.save(positive, q + np.float32(noise) * rng.standard_normal((n, d), dtype=np.float32))
    return query, positive


def paired_negatives(n: int, m: int, d: int, seed: int = 1) -> Path:
    path = DATA / f"neg_{n}_{m}_{d}.npy"
    if not path.exists():
        rng = np.random.default_rng(seed)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, m, d))
        for start in range(0, n, 4096):
            out[start:start + 4096] = rng.standard_normal((min(4096, n - start), m, d),
                                                          dtype=np.float32)
        out.flush()
        del out
    return path


def as_parquet(query: Path, positive: Path) -> Path:
    """The same vectors as one Parquet file with two fixed_size_list<float32> columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = DATA / f"{query.stem}_{positive.stem}.parquet"
    if not path.exists():
        columns = {}
        for name, source in (("query", query), ("positive", positive)):
            values = np.load(source)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)),
                                                              values.shape[1])
        pq.write_table(pa.table(columns), path)
    return path


def size_of(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths)


# ---------------------------------------------------------------- commands


def ours(*args: str | Path, device: str = "cpu") -> list[str]:
    return ["-m", "infonce_cli", *map(str, args), "--format", "json", "--quiet",
            "--device", device]


def peer(tool: str, mode: str, temperatures: str, *paths: Path) -> list[str]:
    return [str(HERE / "workers.py"), tool, mode, temperatures, *map(str, paths)]


# ---------------------------------------------------------------- suites


def suite_sweep() -> list[Measurement]:
    """Issue: a 64-temperature sweep against one score, and the naive loop of the peer."""
    q, p = pairs(16384, 384, 3.0)
    grid = np.geomspace(0.01, 1.0, GRID)
    timed = ",".join(f"{t:.6g}" for t in grid[::8])  # 8 of the 64, scaled up below
    results = [
        measure("infonce score (τ = 0.05)", ours("score", "-q", q, "-p", p)),
        replace(measure(f"infonce sweep-temperature ({GRID} τ + optimum)",
                        ours("sweep-temperature", "-q", q, "-p", p, "--steps", str(GRID))),
                baseline="infonce score (τ = 0.05)"),
        measure("info-nce-pytorch (τ = 0.05)", peer("info-nce-pytorch", "in-batch", "0.05", q, p),
                PEER_MEMORY_LIMIT),
    ]
    loop = measure("info-nce-pytorch loop", peer("info-nce-pytorch", "in-batch", timed, q, p),
                   PEER_MEMORY_LIMIT)
    loop.name = f"info-nce-pytorch loop, {GRID} τ (8 timed, ×8)"
    loop.wall *= GRID / 8
    results.append(loop)
    return results


def suite_scale() -> list[Measurement]:
    """Issue: in-batch and paired workloads against the peers and the floor."""
    results = []
    for n, d in ((16384, 384), (32768, 768)):
        q, p = pairs(n, d, 3.0)
        tag = f"in-batch N={n} d={d}"
        results += [
            measure(f"{tag} · infonce", ours("score", "-q", q, "-p", p)),
            measure(f"{tag} · info-nce-pytorch",
                    peer("info-nce-pytorch", "in-batch", "0.05", q, p), PEER_MEMORY_LIMIT),
            measure(f"{tag} · torch floor", peer("torch-floor", "in-batch", "0.05", q, p)),
        ]
    q, p = pairs(32768, 768, 3.0)
    results.append(replace(measure("in-batch N=32768 d=768 · infonce bfloat16",
                                   ours("score", "-q", q, "-p", p, "--dtype", "bfloat16")),
                           baseline="in-batch N=32768 d=768 · infonce"))
    q, p = pairs(16384, 384, 3.0)
    table = as_parquet(q, p)
    results.append(replace(measure("in-batch N=16384 d=384 · infonce from Parquet",
                                   ours("score", "-q", table, "--query-col", "query", "-p",
                                        table, "--pos-col", "positive")),
                           baseline="in-batch N=16384 d=384 · infonce"))
    n, m, d = 65536, 15, 384
    q, p = pairs(n, d, 10.0)
    neg = paired_negatives(n, m, d)
    tag = f"paired N={n} M={m} d={d}"
    results += [
        measure(f"{tag} · infonce", ours("score", "-q", q, "-p", p, "--neg", neg)),
        measure(f"{tag} · info-nce-pytorch",
                peer("info-nce-pytorch", "paired", "0.05", q, p, neg), PEER_MEMORY_LIMIT),
        measure(f"{tag} · pytorch-metric-learning",
                peer("pytorch-metric-learning", "paired", "0.05", q, p, neg), PEER_MEMORY_LIMIT),
        measure(f"{tag} · torch floor", peer("torch-floor", "paired", "0.05", q, p, neg)),
    ]
    return results


def suite_growth() -> list[Measurement]:
    """Issue: in-batch time from N = 8k to 64k at d = 768 (should follow N²·d)."""
    results = []
    for n in (8192, 16384, 32768, 65536):
        q, p = pairs(n, 768, 3.0)
        results.append(measure(f"in-batch N={n} d=768 · infonce", ours("score", "-q", q, "-p", p)))
    return results


def suite_startup() -> list[Measurement]:
    sample = HERE.parent / "sample_data"
    return [
        measure("infonce --help", ["-m", "infonce_cli", "--help"]),
        measure("infonce score on sample_data (paired)",
                ours("score", "-q", sample / "queries.npy", "-p", sample / "positives.npy",
                     "--neg", sample / "hard_negatives.npy")),
    ]


REAL = HERE.parent.parent / "shared" / "data" / "debian-minilm"
"""Real embeddings (Debian package descriptions, all-MiniLM-L6-v2), beside the repository."""


def real_files() -> dict[str, Path] | None:
    """The debian-minilm set as .npy files: 2,000 queries, their positives, the other 6,000
    documents as a shared pool, and each query's hard negatives (paired)."""
    if not (REAL / "queries.npy").exists():
        return None
    files = {name: DATA / f"real_{name}.npy" for name in ("query", "positive", "shared",
                                                            "paired")}
    if not all(path.exists() for path in files.values()):
        DATA.mkdir(parents=True, exist_ok=True)
        query, docs = np.load(REAL / "queries.npy"), np.load(REAL / "docs.npy")
        np.save(files["query"], query)
        np.save(files["positive"], docs[:len(query)])
        np.save(files["shared"], docs[len(query):])
        np.save(files["paired"], docs[np.load(REAL / "hardneg_idx.npy")])
    return files


def suite_real() -> list[Measurement]:
    """Issue: the real debian-minilm embeddings in three negative modes, in float32,
    bfloat16 and float16 (the mean-loss error of low precision), against info-nce-pytorch."""
    files = real_files()
    if files is None:
        return []
    q, p = files["query"], files["positive"]
    results = []
    for mode, negatives in (("in-batch", None), ("shared", files["shared"]),
                            ("paired", files["paired"])):
        tag = f"debian-minilm {mode}"
        extra: list[str | Path] = [] if negatives is None else ["--neg", negatives]
        base = measure(f"{tag} · infonce", ours("score", "-q", q, "-p", p, *extra))
        results.append(base)
        for dtype in ("bfloat16", "float16"):
            results.append(replace(
                measure(f"{tag} · infonce {dtype}",
                        ours("score", "-q", q, "-p", p, *extra, "--dtype", dtype)),
                baseline=base.name))
        peer_files = [q, p] if negatives is None else [q, p, negatives]
        results.append(measure(f"{tag} · info-nce-pytorch",
                               peer("info-nce-pytorch", mode, "0.05", *peer_files),
                               PEER_MEMORY_LIMIT))
    return results


def real_summary(results: list[Measurement]) -> list[str]:
    """How far the low-precision mean losses are from float32's, relative."""
    lines = []
    for run in results:
        base = next((r for r in results if r.name == run.baseline), None)
        if base is not None and base.loss and run.loss is not None:
            lines.append(f"- {run.name}: mean loss {abs(run.loss / base.loss - 1):.1e} from "
                         "float32, relative")
    return lines


GPU_N = 262144
GPU_BLOCKS = (4096, 16384)
"""infonce's block shape on a GPU under --max-memory 4GiB (4 GiB / 24 bytes per score)."""


def suite_gpu() -> list[Measurement]:
    """Issue (needs an NVIDIA GPU): in-batch N = 262,144, d = 768, float32 on CUDA, against
    the bare matrix products of the same block shapes; GPU memory; CPU/GPU agreement."""
    found = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    if found.stdout.strip() != "True":
        return []
    return device_suite("cuda", GPU_N, 32768)


def device_suite(device: str, n: int, agreement_n: int) -> list[Measurement]:
    q, p = pairs(n, 768, 3.0)
    rows, columns = GPU_BLOCKS
    tag = f"in-batch N={n} d=768"
    results = [
        measure(f"{tag} · infonce on {device}",
                ours("score", "-q", q, "-p", p, "--max-memory", "4GiB", device=device)),
        measure(f"{tag} · torch.mm of the same blocks on {device}",
                [str(HERE / "workers.py"), "matmul-rate", device, str(rows), str(columns),
                 str(q), str(p)]),
    ]
    q, p = pairs(agreement_n, 768, 3.0)
    tag = f"in-batch N={agreement_n} d=768"
    for where in ("cpu", device):
        results.append(measure(f"{tag} · infonce on {where}",
                               ours("score", "-q", q, "-p", p, device=where)))
    return results


def gpu_summary(results: list[Measurement]) -> list[str]:
    """Our compute rate against the bare products', memory against the inputs, and the
    CPU/GPU agreement."""
    if len(results) < 4 or not all(r.ok and r.output for r in results):
        return []
    ours_run, rate, cpu, gpu = results
    mine, products = ours_run.output or {}, rate.output or {}
    n = int(mine["n"])
    ours_tflops = 2 * n * n * 768 / float(mine["seconds"]) / 1e12
    mm_tflops = float(products["tflops"])
    inputs = 2 * n * 768 * 4 / 2**30
    lines = [f"- infonce's compute: {ours_tflops:.1f} TFLOPS, {ours_tflops / mm_tflops:.0%} of "
             f"torch.mm's {mm_tflops:.1f} TFLOPS on the same blocks"]
    if ours_run.gpu_peak is not None:
        lines.append(f"- GPU memory: {ours_run.gpu_peak / 2**30:.2f} GiB reserved at the peak "
                     f"(inputs {inputs:.2f} GiB)")
    if cpu.loss is not None and gpu.loss is not None:
        lines.append(f"- CPU and GPU mean loss differ by {abs(gpu.loss / cpu.loss - 1):.1e} "
                     "relative")
    return lines


SUITES: dict[str, Callable[[], list[Measurement]]] = {
    "sweep": suite_sweep,
    "scale": suite_scale,
    "growth": suite_growth,
    "startup": suite_startup,
    "real": suite_real,
    "gpu": suite_gpu,
}
SUMMARIES: dict[str, Callable[[list[Measurement]], list[str]]] = {
    "real": real_summary, "gpu": gpu_summary}
SKIPPED = {"real": f"no debian-minilm set at {REAL}", "gpu": "no CUDA device"}


def table(title: str, results: list[Measurement]) -> str:
    lines = [f"### {title}", "", "| run | wall (s) | peak RSS (GiB) | mean loss | note |",
             "|---|---:|---:|---:|---|"]
    for r in results:
        loss = f"{r.loss:.5f}" if r.loss is not None else "—"
        wall = f"{r.wall:.2f}" if r.ok else "failed"
        lines.append(f"| {r.name} | {wall} | {r.peak_rss / 2**30:.2f} | {loss} | {r.note} |")
    ours_runs = [r for r in results if "infonce" in r.name and "info-nce" not in r.name]
    ratios = []
    for mine in ours_runs:
        prefix = mine.name.split(" · ")[0] if " · " in mine.name else None
        for other in results:
            same_workload = prefix is None or other.name.startswith(prefix)
            if other is mine or not other.ok or not same_workload or other in ours_runs:
                continue
            ratios.append(f"- {mine.name} / {other.name}: {mine.wall / other.wall:.2f}×")
        base = next((r for r in results if r.name == mine.baseline), None)
        if base is not None and base.ok and mine.ok:
            ratios.append(f"- {mine.name} / {base.name}: {mine.wall / base.wall:.2f}×")
    if ratios:
        lines += ["", "Ratios (ours / theirs, wall time):", *ratios]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args()
    if args.list:
        for name, suite in SUITES.items():
            print(f"{name}: {(suite.__doc__ or '').strip()}")
        return
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    machine = f"{os.cpu_count()} CPUs, {memory:.0f} GiB"
    print(f"# infonce benchmarks · {machine} · {time.strftime('%Y-%m-%d')}\n")
    for name in args.suites or list(SUITES):
        results = SUITES[name]()
        if not results:
            print(f"### {name}\n\nskipped: {SKIPPED[name]}\n", flush=True)
            continue
        summary = SUMMARIES[name](results) if name in SUMMARIES else []
        print(table(name, results) + "".join(f"{line}\n" for line in summary), flush=True)


if __name__ == "__main__":
    main()
