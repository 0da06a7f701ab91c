"""Side-by-side benchmarks: infonce against info-nce-pytorch, pytorch-metric-learning and a
plain torch floor, each in its own process on the same files, in one run.

    python benchmarks/run.py                 # every suite: the figures of the README
    python benchmarks/run.py sweep startup   # chosen suites
    python benchmarks/run.py --repeat 5      # rounds per comparison (default 3)
    python benchmarks/run.py --list

Prints the date, the machine (CPU model, cores, memory) and the code revision, then a
Markdown table per suite: for each run the median wall time of the whole process (start-up,
loading and compute) over the rounds and their spread, peak RSS (the kernel's figure for the
process, which counts the mapped file pages it touched), and our ratios to the peers and to
our own baselines, each with its range over the rounds. The runs compared with each other go
round-robin, one round after another, so that the machine's drift spreads over all of them.
Data is generated under benchmarks/data/ (seeded) and reused. Needs the test extras
(pip install -e '.[test]').
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PEER_MEMORY_LIMIT = 20 * 2**30
"""Address-space cap for peers, so one that asks for terabytes fails instead of swapping."""
GRID = 64
ROUNDS = 3
"""Rounds of each comparison (``--repeat``)."""


@dataclass
class Measurement:
    name: str
    wall: float  # seconds: the median over the rounds
    peak_rss: int  # bytes, the largest over the rounds
    ok: bool
    loss: float | None = None
    note: str = ""
    baseline: str | None = None
    """Another of our runs this one is compared with (sweep / score, bfloat16 / float32)."""
    gpu_peak: int | None = None  # bytes the CUDA allocator reserved at its peak
    output: dict[str, Any] | None = None  # the JSON the process printed (first round)
    walls: list[float] = field(default_factory=list)  # every round's, in round order
    group: int | None = None  # the ``alternate`` call it ran in: rounds pair within one


@dataclass(frozen=True)
class Job:
    """One command to measure, by the name the tables print."""

    name: str
    command: list[str]
    limit: int | None = None
    baseline: str | None = None


def measure(name: str, command: list[str], limit: int | None = None) -> Measurement:
    """Run a Python command line (``-m module …`` or ``script.py …``) once, in its own
    process: wall time, the peak RSS that process records itself (see peak.py), and the
    share of the CPUs other processes used meanwhile when it is large enough to matter."""
    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _busy_seconds()
    with tempfile.TemporaryDirectory() as scratch:
        record = Path(scratch) / "peak"
        full = [sys.executable, str(HERE / "peak.py"), str(record), *command]
        started = time.perf_counter()
        result = subprocess.run(full, capture_output=True, text=True, preexec_fn=cap)
        wall = time.perf_counter() - started
        peaks = [int(v) for v in record.read_text().split()] if record.exists() else [0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    others = max(0.0, _busy_seconds() - busy - own) / (wall * (os.cpu_count() or 1))
    output = _json_from(result.stdout) if result.returncode == 0 else None
    lines = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
    note = "" if result.returncode == 0 else lines[-1][:90]
    gpu_peak = peaks[1] if len(peaks) > 1 else None
    if gpu_peak is not None and not note:
        note = f"GPU peak {gpu_peak / 2**30:.2f} GiB"
    if others >= 0.05:
        note = "; ".join(filter(None, [note, f"others used {others:.0%} of the CPUs"]))
    return Measurement(name, wall, peaks[0], result.returncode == 0,
                       _loss_from(output) if output else None, note, gpu_peak=gpu_peak,
                       output=output, walls=[wall])


def _busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _, _, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def alternate(jobs: list[Job], rounds: int | None = None) -> list[Measurement]:
    """Every job once per round, round-robin, for ``rounds`` rounds (``--repeat`` by
    default): each job's median wall time, with every round's kept for the spread."""
    global _GROUPS
    _GROUPS += 1
    runs: dict[str, list[Measurement]] = {job.name: [] for job in jobs}
    for _ in range(rounds or ROUNDS):
        for job in jobs:
            runs[job.name].append(measure(job.name, job.command, job.limit))
    return [replace(_combined(job, runs[job.name]), group=_GROUPS) for job in jobs]


_GROUPS = 0
"""``alternate`` calls made so far."""


def _combined(job: Job, runs: list[Measurement]) -> Measurement:
    walls = [run.wall for run in runs]
    notes = list(dict.fromkeys(run.note for run in runs if run.note))
    first = next((run for run in runs if run.ok), runs[0])
    return replace(first, wall=statistics.median(walls), walls=walls,
                   peak_rss=max(run.peak_rss for run in runs), ok=all(run.ok for run in runs),
                   note="; ".join(notes), baseline=job.baseline)


def once(name: str, command: list[str], limit: int | None = None,
         baseline: str | None = None) -> Measurement:
    """A run measured a single time (long runs the suites do not repeat)."""
    return replace(measure(name, command, limit), baseline=baseline)


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


# ---------------------------------------------------------------- commands


def ours(*args: str | Path, device: str = "cpu") -> list[str]:
    return ["-m", "infonce_cli", *map(str, args), "--format", "json", "--quiet",
            "--device", device]


def peer(tool: str, mode: str, temperatures: str, *paths: Path) -> list[str]:
    return [str(HERE / "workers.py"), tool, mode, temperatures, *map(str, paths)]


# ---------------------------------------------------------------- suites


SWEEP_NOISE = {"below the grid": 3.0, "inside the grid": 20.0, "above the grid": 1500.0}
"""Positives = queries + this much noise put the optimum τ below 0.01 (0.0077), inside the
default grid (0.051) and above 1 (1.9)."""


def suite_sweep() -> list[Measurement]:
    """Issue: a 64-τ sweep with the default bounds (0.01 to 1, optimum fitted) against one
    score as users run them, in-batch N = 16,384, d = 384, with the optimum below, inside
    and above the grid; the bare products and exps of such a sweep; the peer's loop."""
    results = []
    for where, noise in SWEEP_NOISE.items():
        q, p = pairs(16384, 384, noise)
        tag = f"optimum {where}"
        peers = [] if noise != SWEEP_NOISE["below the grid"] else [
            Job(f"{tag} · info-nce-pytorch (τ = 0.05)",
                peer("info-nce-pytorch", "in-batch", "0.05", q, p), PEER_MEMORY_LIMIT)]
        results += alternate([
            Job(f"{tag} · infonce score", ours("score", "-q", q, "-p", p)),
            Job(f"{tag} · infonce sweep-temperature --steps {GRID}",
                ours("sweep-temperature", "-q", q, "-p", p, "--steps", str(GRID)),
                baseline=f"{tag} · infonce score"),
            *peers,
        ])
    q, p = pairs(16384, 384, SWEEP_NOISE["below the grid"])
    grid = np.geomspace(0.01, 1.0, GRID)
    timed = ",".join(f"{t:.6g}" for t in grid[::8])  # 8 of the 64, scaled up below
    tag = "optimum below the grid"
    results.append(once(f"{tag} · bare products + {GRID} exps per score (torch, preloaded)",
                        [str(HERE / "workers.py"), "sweep-floor", str(GRID), str(q), str(p)]))
    loop = once("info-nce-pytorch loop", peer("info-nce-pytorch", "in-batch", timed, q, p),
                PEER_MEMORY_LIMIT)
    loop.name = f"{tag} · info-nce-pytorch loop, {GRID} τ (8 timed, ×8)"
    loop.wall *= GRID / 8
    loop.walls = [loop.wall]
    results.append(loop)
    files = real_files()
    for mode, negatives in (("in-batch", None), ("shared", "shared"), ("paired", "paired")):
        if files is None:
            break
        extra: list[str | Path] = [] if negatives is None else ["--neg", files[negatives]]
        args = ["-q", files["query"], "-p", files["positive"], *extra]
        tag = f"debian-minilm {mode}"
        results += alternate([
            Job(f"{tag} · infonce score", ours("score", *args)),
            Job(f"{tag} · infonce sweep-temperature --steps {GRID}",
                ours("sweep-temperature", *args, "--steps", str(GRID)),
                baseline=f"{tag} · infonce score"),
        ])
    return results


def sweep_summary(results: list[Measurement]) -> list[str]:
    """Each sweep against its score (target ≤ 2×, ≤ 2.5× on the real data), where the
    optimum fell and the passes it took after the grid; what an exponential per score and
    temperature would cost."""
    named = {run.name: run for run in results}
    lines = []
    for run in results:
        base = named.get(run.baseline or "")
        if not (base and run.ok and base.ok and run.output):
            continue
        target = 2.5 if run.name.startswith("debian") else 2.0
        ratio = run.wall / base.wall
        optimum = run.output.get("optimum") or {}
        passes = optimum.get("passes")
        where = (f"optimum τ = {optimum['temperature']:.4g}, {passes} "
                 f"pass{'' if passes == 1 else 'es'} after the grid"
                 if optimum.get("temperature") else "no finite optimum")
        lines.append(f"- {run.name.split(' · ')[0]}: sweep / score {ratio:.2f}× "
                     f"{_round_ratios(run, base)} (target ≤ {target:g}×: "
                     f"{'met' if ratio <= target else 'NOT met'}); {where}")
    floor = next((r for r in results if "bare products" in r.name), None)
    score = named.get("optimum below the grid · infonce score")
    if floor and floor.ok and floor.output and score and score.ok and score.output:
        data = floor.output
        lines.append(f"- an exponential per score and τ, the bare work on preloaded tensors: "
                     f"products {data['products_seconds']:.2f} s, one temperature's exps "
                     f"{data['exp_seconds'] / GRID:.3f} s, all {GRID}: "
                     f"{data['exp_seconds']:.2f} s; with our whole score process at "
                     f"{score.wall:.2f} s, a sweep that way could not take less than "
                     f"{(score.wall + data['exp_seconds'] * (GRID - 1) / GRID) / score.wall:.2f}× "
                     "one score here (ours takes its sums from histograms of the scores)")
    return lines


def _round_ratios(run: Measurement, base: Measurement) -> str:
    """The ratio's range over the rounds, each round's run against the same round's base
    (only for runs that went round-robin together)."""
    if len(run.walls) < 2 or run.group is None or run.group != base.group:
        return ""
    ratios = [a / b for a, b in zip(run.walls, base.walls, strict=True)]
    return f"({min(ratios):.2f}–{max(ratios):.2f}× over {len(ratios)} rounds)"


def suite_scale() -> list[Measurement]:
    """Issue: in-batch and paired workloads against the peers and the floor."""
    results = []
    for n, d in ((16384, 384), (32768, 768)):
        q, p = pairs(n, d, 3.0)
        tag = f"in-batch N={n} d={d}"
        jobs = [
            Job(f"{tag} · infonce", ours("score", "-q", q, "-p", p)),
            Job(f"{tag} · info-nce-pytorch", peer("info-nce-pytorch", "in-batch", "0.05", q, p),
                PEER_MEMORY_LIMIT),
            Job(f"{tag} · torch floor", peer("torch-floor", "in-batch", "0.05", q, p)),
        ]
        if n == 32768:
            jobs.append(Job(f"{tag} · infonce bfloat16",
                            ours("score", "-q", q, "-p", p, "--dtype", "bfloat16"),
                            baseline=f"{tag} · infonce"))
        else:
            table = as_parquet(q, p)
            jobs.append(Job(f"{tag} · infonce from Parquet",
                            ours("score", "-q", table, "--query-col", "query", "-p", table,
                                 "--pos-col", "positive"),
                            baseline=f"{tag} · infonce"))
        results += alternate(jobs)
    n, m, d = 65536, 15, 384
    q, p = pairs(n, d, 10.0)
    neg = paired_negatives(n, m, d)
    tag = f"paired N={n} M={m} d={d}"
    results += alternate([
        Job(f"{tag} · infonce", ours("score", "-q", q, "-p", p, "--neg", neg)),
        Job(f"{tag} · info-nce-pytorch", peer("info-nce-pytorch", "paired", "0.05", q, p, neg),
            PEER_MEMORY_LIMIT),
        Job(f"{tag} · torch floor", peer("torch-floor", "paired", "0.05", q, p, neg)),
    ])
    results.append(once(f"{tag} · pytorch-metric-learning",
                        peer("pytorch-metric-learning", "paired", "0.05", q, p, neg),
                        PEER_MEMORY_LIMIT))
    return results


def suite_growth() -> list[Measurement]:
    """Issue: in-batch time from N = 8k to 64k at d = 768 (should follow N²·d)."""
    jobs = [Job(f"in-batch N={n} d=768 · infonce", ours("score", "-q", q, "-p", p))
            for n in (8192, 16384, 32768, 65536) for q, p in [pairs(n, 768, 3.0)]]
    return alternate(jobs)


STARTUP_ROUNDS = 7


def suite_startup() -> list[Measurement]:
    """Issue: `infonce --help`, and `infonce score` on 2,000 pairs against a bare script
    (import torch, load the files, info-nce-pytorch), alternating, seven rounds."""
    jobs = [Job("infonce --help", ["-m", "infonce_cli", "--help"])]
    files = real_files()
    if files is not None:
        q, p = files["query"], files["positive"]
        jobs += [Job("2,000 pairs · infonce score", ours("score", "-q", q, "-p", p)),
                 Job("2,000 pairs · bare script: import torch, load, info-nce-pytorch",
                     peer("info-nce-pytorch", "in-batch", "0.05", q, p))]
    return alternate(jobs, max(STARTUP_ROUNDS, ROUNDS))


def startup_summary(results: list[Measurement]) -> list[str]:
    """--help against 0.2 s, and our score against the bare script (target ≤ 1.1×)."""
    helped, *compared = results
    lines = [f"- `infonce --help`: {helped.wall:.3f} s (target ≤ 0.2 s: "
             f"{'met' if helped.ok and helped.wall <= 0.2 else 'NOT met'})"]
    if len(compared) == 2 and all(run.ok for run in compared):
        mine, bare = compared
        ratio = mine.wall / bare.wall
        lines.append(f"- `infonce score` / the bare script: {ratio:.2f}× "
                     f"{_round_ratios(mine, bare)} (target ≤ 1.1×: "
                     f"{'met' if ratio <= 1.1 else 'NOT met'})")
    else:
        lines.append(f"- `infonce score` against a bare script: skipped (no debian-minilm set "
                     f"at {REAL})")
    return lines


def suite_diagnostics() -> list[Measurement]:
    """Issue: score --diagnostics against plain score, in-batch N = 16,384, d = 384; the
    bare work of the exact uniformity alone."""
    q, p = pairs(16384, 384, 3.0)
    return [*alternate([
        Job("infonce score", ours("score", "-q", q, "-p", p)),
        Job("infonce score --diagnostics", ours("score", "-q", q, "-p", p, "--diagnostics"),
            baseline="infonce score"),
    ]), once("bare exact uniformity of both sides (torch, preloaded)",
             [str(HERE / "workers.py"), "uniformity-floor", str(q), str(p)])]


def diagnostics_summary(results: list[Measurement]) -> list[str]:
    """--diagnostics against score (target ≤ 1.3×), and the least the exact uniformity
    alone would add."""
    named = {run.name: run for run in results}
    score, diagnosed = named.get("infonce score"), named.get("infonce score --diagnostics")
    floor = next((r for r in results if r.name.startswith("bare exact uniformity")), None)
    lines = []
    if score and diagnosed and score.ok and diagnosed.ok:
        ratio = diagnosed.wall / score.wall
        lines.append(f"- score --diagnostics / score: {ratio:.2f}× "
                     f"{_round_ratios(diagnosed, score)} (target ≤ 1.3×: "
                     f"{'met' if ratio <= 1.3 else 'NOT met'})")
        if floor and floor.ok and floor.output:
            seconds = floor.output["compute_seconds"]
            lines.append(f"- the exact uniformity of both sides alone, bare on preloaded "
                         f"tensors: {seconds:.2f} s, so with our whole score process at "
                         f"{score.wall:.2f} s, --diagnostics could not take less than "
                         f"{(score.wall + seconds) / score.wall:.2f}× one score here")
    return lines


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
        peer_files = [q, p] if negatives is None else [q, p, negatives]
        results += alternate([
            Job(f"{tag} · infonce", ours("score", "-q", q, "-p", p, *extra)),
            *(Job(f"{tag} · infonce {dtype}",
                  ours("score", "-q", q, "-p", p, *extra, "--dtype", dtype),
                  baseline=f"{tag} · infonce") for dtype in ("bfloat16", "float16")),
            Job(f"{tag} · info-nce-pytorch", peer("info-nce-pytorch", mode, "0.05", *peer_files),
                PEER_MEMORY_LIMIT),
        ])
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
        once(f"{tag} · infonce on {device}",
             ours("score", "-q", q, "-p", p, "--max-memory", "4GiB", device=device)),
        once(f"{tag} · torch.mm of the same blocks on {device}",
             [str(HERE / "workers.py"), "matmul-rate", device, str(rows), str(columns),
              str(q), str(p)]),
    ]
    q, p = pairs(agreement_n, 768, 3.0)
    tag = f"in-batch N={agreement_n} d=768"
    for where in ("cpu", device):
        results.append(once(f"{tag} · infonce on {where}",
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


RETRIEVAL_QUERIES, RETRIEVAL_CORPUS, RETRIEVAL_DIM = 10_000, 1_000_000, 384
RETRIEVAL_PREFIX = 100_000
RETRIEVAL_NOISE = {2: 3.0, 1: 4.0}
"""Relevant document = its query + this much Gaussian noise per grade: cosine about 0.32
(grade 2) and 0.24 (grade 1), against a best random document near 0.27 in a million."""
RETRIEVAL_CHUNK = 50_000
RETRIEVAL_BLOCKS = (512, 2560)
"""infonce's block shape on the CPU (engine.plan_blocks: 16 MiB of working scores)."""
PHASE_ROWS = 2048
"""Pairs the phase profile scores against the whole corpus (4 query blocks of 512)."""
SAMPLE_RETRIEVAL = HERE.parent / "sample_data" / "retrieval"


def retrieval_set(queries: int = RETRIEVAL_QUERIES, documents: int = RETRIEVAL_CORPUS,
                  prefix: int = RETRIEVAL_PREFIX, dim: int = RETRIEVAL_DIM,
                  seed: int = 7) -> dict[str, Path]:
    """Queries, a corpus and BEIR qrels (ids = row numbers, as infonce names rows without
    id files), and the corpus's first ``prefix`` rows as a corpus of their own with the
    qrels restricted to them. Each query has 1–3 relevant documents (grade 1 or 2), each
    its query plus noise; every relevant document lies in the prefix, so both corpora are
    scored on the same pairs and the other documents are distractors. The corpus is written
    a chunk at a time (never whole in memory), each file under a temporary name first."""
    tag = f"{queries}_{documents}_{dim}"
    files = {"query": DATA / f"ret_q_{tag}.npy", "corpus": DATA / f"ret_c_{tag}.npy",
             "qrels": DATA / f"ret_qrels_{tag}.tsv",
             "prefix": DATA / f"ret_c_{tag}_first{prefix}.npy",
             "prefix_qrels": DATA / f"ret_qrels_{tag}_first{prefix}.tsv"}
    if all(path.exists() for path in files.values()):
        return files
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((queries, dim), dtype=np.float32)
    counts = rng.integers(1, 4, queries)
    owner = np.repeat(np.arange(queries), counts)
    doc = rng.choice(prefix, len(owner), replace=False)
    grade = rng.integers(1, 3, len(owner))
    by_doc = np.argsort(doc)
    partial = {name: path.with_name(path.name + ".partial") for name, path in files.items()}
    with open(partial["query"], "wb") as out:
        np.save(out, query)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False}
    with open(partial["corpus"], "wb") as whole, open(partial["prefix"], "wb") as first:
        np.lib.format.write_array_header_1_0(whole, {**header, "shape": (documents, dim)})
        np.lib.format.write_array_header_1_0(first, {**header, "shape": (prefix, dim)})
        for start in range(0, documents, RETRIEVAL_CHUNK):
            stop = min(start + RETRIEVAL_CHUNK, documents)
            chunk = rng.standard_normal((stop - start, dim), dtype=np.float32)
            low, high = np.searchsorted(doc[by_doc], [start, stop])
            for i in by_doc[low:high]:
                noise = np.float32(RETRIEVAL_NOISE[int(grade[i])])
                chunk[doc[i] - start] = query[owner[i]] + noise * rng.standard_normal(
                    dim, dtype=np.float32)
            chunk.tofile(whole)
            if start < prefix:
                chunk[:prefix - start].tofile(first)
    order = np.lexsort((doc, owner))
    for name, kept in (("qrels", order), ("prefix_qrels", order[doc[order] < prefix])):
        lines = [f"{owner[i]}\t{doc[i]}\t{grade[i]}\n" for i in kept]
        partial[name].write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    for name, path in partial.items():
        path.replace(files[name])
    return files


def _size(documents: int) -> str:
    return (f"D={documents // 1_000_000}M" if documents % 1_000_000 == 0
            else f"D={documents // 1000}k")


def retrieval(query: Path, corpus: Path, qrels: Path, *extra: str | Path) -> list[str]:
    return ours("retrieval", "--query", query, "--corpus", corpus, "--qrels", qrels, *extra)


def _with_metrics(run: Measurement) -> Measurement:
    """The nDCG@10 the run printed, as its note."""
    data = run.output or {}
    ndcg = data.get("ndcg_at", {}).get("10", data.get("ndcg@10"))
    if run.ok and ndcg is not None:
        run.note = "; ".join(filter(None, [f"nDCG@10 {float(ndcg):.4f}", run.note]))
    if data.get("top1_agreement", 1.0) < 1.0:
        wrong = round((1 - data["top1_agreement"]) * data["top1_checked"])
        run.note += (f"; WRONG: its best neighbour differs from brute force for {wrong} of "
                     f"{data['top1_checked']} queries checked")
    return run


def suite_retrieval() -> list[Measurement]:
    """Issue: infonce retrieval, 10k queries × 1M documents × 384 (and the 100k prefix):
    time and peak RSS against the corpus file, the bare matrix products of the same blocks,
    bfloat16, the top-100 run, faiss + ranx at 100k, and top-10 agreement on the sample data."""
    files = retrieval_set()
    q, full, prefix = files["query"], files["corpus"], files["prefix"]
    qrels, prefix_qrels = files["qrels"], files["prefix_qrels"]
    big, small = _size(RETRIEVAL_CORPUS), _size(RETRIEVAL_PREFIX)
    rows, columns = RETRIEVAL_BLOCKS
    worker = str(HERE / "workers.py")
    results = [
        once(f"{small} · infonce", retrieval(q, prefix, prefix_qrels)),
        once(f"{small} · infonce --run top-100",
             retrieval(q, prefix, prefix_qrels, "--run", DATA / "ret_run_100k.trec",
                       "--top-k", "100")),
    ]
    found = subprocess.run([sys.executable, "-c", "import faiss"], capture_output=True)
    if found.returncode == 0:
        results.append(once(f"{small} · faiss IndexFlatIP top-100 + ranx",
                            [worker, "faiss-flat", "100", str(q), str(prefix),
                             str(prefix_qrels)]))
    # The float32 run, the least products any exact method needs and bfloat16 go in rounds.
    results += alternate([
        Job(f"{big} · infonce", retrieval(q, full, qrels), baseline=f"{small} · infonce"),
        Job(f"{big} · bare matrix products, a row per query",
            [worker, "retrieval-matmul", str(rows), str(columns), "queries", str(q), str(full),
             str(qrels)]),
        Job(f"{big} · infonce bfloat16", retrieval(q, full, qrels, "--dtype", "bfloat16"),
            baseline=f"{big} · infonce"),
    ])
    results += [
        once(f"{big} · bare matrix products, a row per pair",
             [worker, "retrieval-matmul", str(rows), str(columns), "pairs", str(q), str(full),
              str(qrels)]),
        once(f"{big} · infonce --run top-100",
             retrieval(q, full, qrels, "--run", DATA / "ret_run_1m.trec", "--top-k", "100"),
             baseline=f"{big} · infonce"),
        once(f"phase profile ({big}, {PHASE_ROWS} pairs)",
             [worker, "retrieval-phases", str(PHASE_ROWS), str(q), str(full), str(qrels)]),
    ]
    sample = SAMPLE_RETRIEVAL
    base = "sample retrieval (400 × 3,141) · infonce --run top-10"
    for dtype in ("float32", "bfloat16"):
        results.append(once(f"{base}{'' if dtype == 'float32' else ' bfloat16'}",
                            retrieval(sample / "queries.parquet", sample / "corpus.parquet",
                                      sample / "qrels.tsv", "--run",
                                      DATA / f"ret_sample_{dtype}.trec", "--top-k", "10",
                                      "--dtype", dtype),
                            baseline=None if dtype == "float32" else base))
    return [_with_metrics(run) for run in results]


def _top_lists(path: Path) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        query, _, doc, *_ = line.split()
        lists.setdefault(query, []).append(doc)
    return lists


def retrieval_summary(results: list[Measurement]) -> list[str]:
    """Peak RSS against the corpus file + 1 GiB, our wall against the bare products, the
    growth from 100k to 1M documents, bfloat16, and top-10 agreement on the sample data."""
    files = retrieval_set()
    named = {run.name: run for run in results}
    big, small = _size(RETRIEVAL_CORPUS), _size(RETRIEVAL_PREFIX)
    lines = []
    for run in results:
        if not run.ok or " · infonce" not in run.name or run.name.startswith("sample"):
            continue
        corpus = files["prefix" if run.name.startswith(small) else "corpus"].stat().st_size
        limit = corpus + 2**30
        lines.append(f"- {run.name}: peak RSS {run.peak_rss / 2**30:.2f} GiB against corpus "
                     f"file {corpus / 2**30:.2f} GiB + 1 GiB = {limit / 2**30:.2f} GiB: "
                     f"{'met' if run.peak_rss <= limit else 'NOT met'}")
    mine = named.get(f"{big} · infonce")
    for bare in (r for r in results if r.name.startswith(f"{big} · bare")):
        if not (mine and mine.ok and bare.ok and mine.output and bare.output):
            continue
        ratio = mine.wall / bare.wall
        floor = bare.output
        lines.append(f"- {big} float32 wall / {bare.name.split(' · ')[1]} "
                     f"({floor['query_rows']} × {floor['corpus']}): {ratio:.2f}× (target ≤ 1.3×: "
                     f"{'met' if ratio <= 1.3 else 'NOT met'}); our scoring "
                     f"{mine.output['seconds']:.1f} s / the products' loop "
                     f"{floor['compute_seconds']:.1f} s (torch.mm {floor['mm_seconds']:.1f} s, "
                     f"{floor['tflops']:.3f} TFLOPS): "
                     f"{mine.output['seconds'] / floor['compute_seconds']:.2f}×")
    low = named.get(f"{small} · infonce")
    if mine and low and mine.ok and low.ok and mine.output and low.output:
        grown = RETRIEVAL_CORPUS / RETRIEVAL_PREFIX
        lines.append(f"- growth {small} → {big} (same {_pairs_in(files['qrels'])} pairs, "
                     f"{grown:g}× the documents): wall {mine.wall / low.wall:.2f}×, scoring "
                     f"{mine.output['seconds'] / low.output['seconds']:.2f}×, peak RSS "
                     f"{mine.peak_rss / low.peak_rss:.2f}×")
    for name in (f"{big} · infonce bfloat16", f"{big} · infonce --run top-100"):
        run = named.get(name)
        if run and mine and run.ok and mine.ok and run.output and mine.output:
            lines.append(f"- {name} / float32 without a run: wall {run.wall / mine.wall:.2f}×, "
                         f"scoring {run.output['seconds'] / mine.output['seconds']:.2f}×")
    sample = {dtype: DATA / f"ret_sample_{dtype}.trec" for dtype in ("float32", "bfloat16")}
    if all(path.exists() for path in sample.values()):
        f32, b16 = (_top_lists(sample[dtype]) for dtype in ("float32", "bfloat16"))
        ordered = sum(f32[q] != b16.get(q) for q in f32)
        as_sets = sum(set(f32[q]) != set(b16.get(q, [])) for q in f32)
        lines.append(f"- sample data, top-10 lists bfloat16 vs float32: {ordered} of {len(f32)} "
                     f"queries differ in order or membership, {as_sets} in membership")
    profile = next((r for r in results if "phase profile" in r.name), None)
    if profile and profile.ok and profile.output:
        data = profile.output
        lines.append(f"- phases (Python; {data['profiled_rows']} of the {data['pairs']} pairs "
                     f"against the whole corpus, ×{data['pairs'] / data['profiled_rows']:.1f} "
                     "for a full run):")
        lines += [f"  - {name}: {seconds:.2f} s" for name, seconds in data["phases"].items()]
        for name, top in data["profiles"].items():
            lines.append(f"  - costliest in {name}: " + "; ".join(top[:6]))
    return lines


def _pairs_in(qrels: Path) -> int:
    return len(qrels.read_text().splitlines()) - 1


SUITES: dict[str, Callable[[], list[Measurement]]] = {
    "startup": suite_startup,
    "sweep": suite_sweep,
    "scale": suite_scale,
    "growth": suite_growth,
    "real": suite_real,
    "diagnostics": suite_diagnostics,
    "retrieval": suite_retrieval,
    "gpu": suite_gpu,
}
SUMMARIES: dict[str, Callable[[list[Measurement]], list[str]]] = {
    "startup": startup_summary, "sweep": sweep_summary, "real": real_summary,
    "diagnostics": diagnostics_summary, "gpu": gpu_summary, "retrieval": retrieval_summary}
SKIPPED = {"real": f"no debian-minilm set at {REAL}", "gpu": "no CUDA device"}


def table(title: str, results: list[Measurement]) -> str:
    lines = [f"### {title}", "",
             "| run | wall (s), median | spread (s) | peak RSS (GiB) | mean loss | note |",
             "|---|---:|---:|---:|---:|---|"]
    for r in results:
        loss = f"{r.loss:.5f}" if r.loss is not None else "—"
        wall = f"{r.wall:.2f}" if r.ok else "failed"
        spread = (f"{min(r.walls):.2f}–{max(r.walls):.2f} ({len(r.walls)} rounds)"
                  if len(r.walls) > 1 and r.ok else "one run")
        lines.append(f"| {r.name} | {wall} | {spread} | {r.peak_rss / 2**30:.2f} | {loss} "
                     f"| {r.note} |")
    ours_runs = [r for r in results if "infonce" in r.name and "info-nce" not in r.name]
    ratios = []
    for mine in ours_runs:
        prefix = mine.name.split(" · ")[0] if " · " in mine.name else None
        for other in results:
            same_workload = prefix is not None and other.name.split(" · ")[0] == prefix
            if other is mine or not other.ok or not same_workload or other in ours_runs:
                continue
            ratios.append(f"- {mine.name} / {other.name}: {mine.wall / other.wall:.2f}× "
                          f"{_round_ratios(mine, other)}".rstrip())
        base = next((r for r in results if r.name == mine.baseline), None)
        if base is not None and base.ok and mine.ok:
            ratios.append(f"- {mine.name} / {base.name}: {mine.wall / base.wall:.2f}× "
                          f"{_round_ratios(mine, base)}".rstrip())
    if ratios:
        lines += ["", "Ratios (ours / theirs, medians; in brackets each round's own):", *ratios]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The CPU model, its vector extensions that matter here, cores, memory and software."""
    model, flags = platform.processor() or "unknown CPU", set()
    with open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    extensions = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                          ("amx_tile", "AMX")) if flag in flags]
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                              capture_output=True, text=True).stdout.strip()
    return (f"{model} ({', '.join(extensions) or 'no AVX-512'}), {cores} cores, "
            f"{memory:.0f} GiB; Python {platform.python_version()}, torch {versions}")


def revision() -> str:
    """The commit measured, and the files of the package edited since."""
    root = str(HERE.parent)
    commit = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h %cI"],
                            capture_output=True, text=True).stdout.strip()
    edited = subprocess.run(["git", "-C", root, "status", "--short", "infonce_cli", "benchmarks"],
                            capture_output=True, text=True).stdout.split()[1::2]
    return (commit or "unknown") + (f", with uncommitted edits to {', '.join(edited)}"
                                    if edited else "")


def warm_up() -> None:
    """What a user's second run finds: the package's bytecode compiled (pip compiles it at
    install) and torch's files in the page cache."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "infonce_cli")],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "import torch, info_nce"], capture_output=True)


def main() -> None:
    global ROUNDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--repeat", type=int, default=ROUNDS, metavar="N",
                        help=f"rounds of each comparison (default {ROUNDS})")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args()
    if args.list:
        for name, suite in SUITES.items():
            print(f"{name}: {(suite.__doc__ or '').strip()}")
        return
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown or args.repeat < 1:
        parser.error(f"unknown suite {unknown[0]}" if unknown else "--repeat must be ≥ 1")
    ROUNDS = args.repeat
    started = time.time()
    print(f"# infonce benchmarks · {time.strftime('%Y-%m-%d %H:%M %Z')}\n\n"
          f"- machine: {machine()}\n- code: {revision()}\n"
          f"- command: python benchmarks/run.py {' '.join(sys.argv[1:])}".rstrip() + "\n",
          flush=True)
    warm_up()
    for name in args.suites or list(SUITES):
        suite_started = time.time()
        results = SUITES[name]()
        if not results:
            print(f"### {name}\n\nskipped: {SKIPPED[name]}\n", flush=True)
            continue
        summary = SUMMARIES[name](results) if name in SUMMARIES else []
        took = f"({name} took {(time.time() - suite_started) / 60:.1f} min)\n"
        print(table(name, results) + "".join(f"{line}\n" for line in summary) + "\n" + took,
              flush=True)
    print(f"Whole run: {(time.time() - started) / 60:.1f} min.")


if __name__ == "__main__":
    main()
