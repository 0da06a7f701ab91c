"""Renderers: rich tables, JSON, CSV, JSONL and Parquet. The only module that imports rich,
and only where a table, a note or a progress bar is drawn (JSON in a pipeline starts
without it).

Data goes to stdout (or a file); tables of results go to stdout too when a
person is reading; notes, warnings and progress go to stderr.
"""

from __future__ import annotations

import csv
import io as textio
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, Note, UsageError, arg
from .results import (
    CompareResult,
    Diagnostics,
    ModelComparison,
    RetrievalResult,
    RunInfo,
    ScoreResult,
    SweepResult,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.console import Console, Group
    from rich.progress import Progress
    from rich.table import Table

stderr_console: Console | None = None
"""The console on stderr, made on first use."""


def _stderr() -> Console:
    global stderr_console
    if stderr_console is None:
        from rich.console import Console

        stderr_console = Console(stderr=True, highlight=False)
    return stderr_console


def to_json(data: Mapping[str, Any]) -> str:
    """Pretty JSON with non-finite floats written as null (JSON has no NaN or Infinity)."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined with dots: {"loss": {"mean": 1}} → {"loss.mean": 1}; lists as JSON."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(_finite(list(value)))
        else:
            flat[name] = _finite(value)
    return flat


def to_csv(rows: list[Mapping[str, Any]]) -> str:
    """CSV with a header of flattened keys, one line per row."""
    flat_rows = [flatten(row) for row in rows]
    header: list[str] = []
    for row in flat_rows:
        header.extend(k for k in row if k not in header)
    buffer = textio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat_rows)
    return buffer.getvalue()


def print_table(renderable: Any, file: IO[str] | None = None, width: int | None = None) -> None:
    """Print a rich renderable to a text stream (stdout by default)."""
    from rich.console import Console

    console = Console(file=file or sys.stdout, width=width, highlight=False)
    console.print(renderable)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def score_table(result: ScoreResult) -> Table:
    """The aggregate of a score run as a two-column table."""
    from rich.table import Table

    run = result.run
    title = (f"{run.n} pairs · {_mode(run)} · {run.similarity} · "
             f"τ = {result.temperature:g}{' (fitted)' if result.temperature_fitted else ''}")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    loss = result.loss
    retrieval = result.retrieval
    candidates = (str(result.num_candidates_min) if result.num_candidates_min
                  == result.num_candidates_max
                  else f"{result.num_candidates_min}–{result.num_candidates_max}")
    rows = [
        ("loss mean ± std", f"{_fmt(loss.mean)} ± {_fmt(loss.std)}"),
        ("loss median [5th, 95th pct]", f"{_fmt(loss.median)} [{_fmt(loss.p05)}, "
                                        f"{_fmt(loss.p95)}]"),
        ("loss min / max", f"{_fmt(loss.min)} / {_fmt(loss.max)}"),
        ("accuracy@1", _fmt(retrieval.accuracy_at_1)),
        *((f"recall@{k}", _fmt(v)) for k, v in sorted(retrieval.recall_at.items())),
        ("MRR", _fmt(retrieval.mrr)),
        ("nDCG@10", _fmt(retrieval.ndcg_at_10)),
        ("rank mean / median", f"{_fmt(retrieval.mean_rank, 2)} / {retrieval.median_rank:g}"),
        ("candidates per query", candidates),
        ("MI lower bound", f"{_fmt(result.mi_lower_bound_nats)} nats "
                           f"({_fmt(result.mi_lower_bound_bits)} bits)"),
        *((("masked false negatives", f"{result.masked}"),) if result.masked is not None
          else ()),
        *((("queries left out", f"{result.skipped}"),) if result.skipped else ()),
        *_per_query_rows(result),
        *((f"95% interval of {name}", f"[{_fmt(low)}, {_fmt(high)}]")
          for name, (low, high) in (result.intervals or {}).items()),
        ("device / dtype", f"{run.device} / {run.dtype}"),
        ("seconds", _fmt(run.seconds, 3)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _mode(run: RunInfo) -> str:
    """The negatives, with the batch size and the symmetric loss when set."""
    parts = [run.negatives]
    if run.batch_size is not None:
        parts.append(f"batches of {run.batch_size}")
    if run.symmetric:
        parts.append("symmetric")
    return ", ".join(parts)


def _per_query_rows(result: ScoreResult) -> list[tuple[str, str]]:
    per_query = result.per_query
    if per_query is None:
        return []
    rows = [(f"queries ({result.multi_positive})", str(per_query.queries)),
            ("per query: accuracy@1", _fmt(per_query.accuracy_at_1)),
            ("per query: MRR", _fmt(per_query.mrr)),
            *((f"per query: recall@{k}", _fmt(v)) for k, v in sorted(per_query.recall_at.items()))]
    if per_query.loss_mean is not None:
        rows.append(("per query: loss mean", _fmt(per_query.loss_mean)))
    return rows


def score_report(result: ScoreResult, pictures: bool = False) -> Group:
    """The aggregate table, followed by the worst samples and the diagnostics when asked
    for, and with ``pictures`` text histograms of the losses and ranks."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [score_table(result)]
    if pictures and result.per_sample is not None:
        from .figures import loss_histogram, rank_distribution
        from .plots import text_histogram

        parts += [Text(text_histogram(loss_histogram(result.per_sample["loss"]))),
                  Text(text_histogram(rank_distribution(result.per_sample["rank"])))]
    if result.worst:
        worst = Table(title=f"{len(result.worst)} highest losses", title_justify="left")
        for name in ("index", "id", "loss", "positive", "hardest negative", "its score", "rank"):
            worst.add_column(name, justify="left" if name in ("id", "hardest negative")
                             else "right", overflow="fold")
        for case in result.worst:
            hardest = case.hardest_negative_id
            worst.add_row(str(case.index), "—" if case.id is None else str(case.id),
                          _fmt(case.loss), _fmt(case.positive_score),
                          str(case.hardest_negative_index if hardest is None else hardest),
                          _fmt(case.hardest_negative_score), str(case.rank))
        parts.append(worst)
    if result.diagnostics is not None:
        parts.append(diagnostics_table(result.diagnostics))
    return Group(*parts)


def diagnostics_table(diagnostics: Diagnostics) -> Table:
    """The geometry of each side and the calibration of the softmax, one line each."""
    from rich.table import Table

    table = Table(title="diagnostics (unit rows)", title_justify="left")
    for name in ("", "query", diagnostics.uniformity.pos_name, "reads"):
        table.add_column(name, justify="left" if name in ("", "reads") else "right")
    table.add_row("alignment", _fmt(diagnostics.alignment), "",
                  "mean ‖q̂ − p̂‖² of the pairs; lower: positives closer")
    for name, pair, reads in (
            ("uniformity", diagnostics.uniformity, "log mean exp(−2‖x̂ᵢ − x̂ⱼ‖²); lower: "
                                                   "more evenly spread"),
            ("effective rank", diagnostics.effective_rank, "RankMe: dimensions in use"),
            ("anisotropy", diagnostics.anisotropy, "mean cosine of distinct rows; 0: "
                                                   "no common direction")):
        table.add_row(name, _fmt(pair.query), _fmt(pair.pos), reads)
    hubness = diagnostics.hubness
    if hubness is not None:
        table.add_row(f"hubness (k = {hubness.k})", _fmt(hubness.skewness), "",
                      f"skewness of the {hubness.k}-occurrence; "
                      f"{hubness.antihub_share:.1%} of {hubness.candidates} candidates in no "
                      "top-k")
    calibration = diagnostics.calibration
    table.add_row("ECE", _fmt(calibration.ece), "",
                  f"expected calibration error of the softmax (MCE {_fmt(calibration.mce)})")
    return table


def print_notes(notes: tuple[str, ...] | list[str]) -> None:
    """Notes about a result, on stderr, naming arguments by their flags."""
    for note in notes:
        text = note.for_command_line() if isinstance(note, Note) else note
        _stderr().print(f"note: {text}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------- per-sample tables


def _table(columns: Mapping[str, np.ndarray[Any, Any]]) -> pa.Table:
    import pyarrow as pa  # here, not at the top: it takes 0.1 s to load

    return pa.table({name: pa.array(values) for name, values in columns.items()})


def write_parquet(columns: Mapping[str, np.ndarray[Any, Any]], handle: IO[bytes]) -> None:
    """Per-sample columns as one Parquet table."""
    import pyarrow.parquet as pq

    pq.write_table(_table(columns), handle)


def write_csv(columns: Mapping[str, np.ndarray[Any, Any]], handle: IO[bytes]) -> None:
    """Per-sample columns as CSV with a header row."""
    import pyarrow.csv as pacsv

    pacsv.write_csv(_table(columns), handle)


def jsonl_lines(columns: Mapping[str, np.ndarray[Any, Any]]) -> Iterator[str]:
    """Per-sample columns as JSON lines, one object per sample, NaN as null."""
    names = list(columns)
    lists = [_finite(np.asarray(columns[name]).tolist()) for name in names]
    for row in zip(*lists, strict=True):
        yield json.dumps(dict(zip(names, row, strict=True)), allow_nan=False) + "\n"


def write_jsonl(columns: Mapping[str, np.ndarray[Any, Any]], handle: IO[bytes]) -> None:
    """Per-sample columns as JSON lines."""
    for line in jsonl_lines(columns):
        handle.write(line.encode())


PER_SAMPLE_WRITERS = {".parquet": write_parquet, ".csv": write_csv, ".jsonl": write_jsonl}


def inspect_table(info: Mapping[str, Any]) -> Table:
    """One file's description from ``io.describe_file`` as a table."""
    from rich.table import Table

    title = str(info["file"])
    if "row_groups" in info:
        groups = info["row_groups"]
        title += (f" · {info.get('format', 'Parquet')}, {info['rows']} rows in {groups} "
                  f"row group{'' if groups == 1 else 's'}")
    table = Table(title=title, title_justify="left", caption=_columns(info) or None,
                  caption_justify="left")
    # The array, its shape and dtype are never cut; the statistics wrap first.
    table.add_column("array", no_wrap=True)
    table.add_column("shape", justify="right", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("row norm min / mean / max", justify="right", overflow="fold")
    table.add_column("NaN/Inf rows", justify="right", overflow="fold")
    table.add_column("zero-norm rows", justify="right", overflow="fold")
    for array in info["arrays"]:
        norms = " / ".join(_fmt(array.get(key, math.nan), 3)
                           for key in ("norm_min", "norm_mean", "norm_max"))
        table.add_row(
            array["name"] or "—",
            "×".join("ragged" if x is None else str(x) for x in array["shape"]),
            array["dtype"],
            norms if "norm_min" in array else "—",
            str(array.get("non_finite_rows", "—")),
            str(array.get("zero_norm_rows", "—")),
        )
    return table


def _columns(info: Mapping[str, Any]) -> str:
    if "columns" not in info:
        return ""
    return "columns: " + ", ".join(f"{k} {v}" for k, v in info["columns"].items())


class _Progress:
    """A progress bar on stderr that appears only once a run has taken over a second."""

    DELAY = 1.0

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.done = 0
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        return self.advance

    def advance(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        if self.bar is None and time.monotonic() - self.started > self.DELAY:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                TextColumn("rows"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=_stderr(), transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("scoring", total=self.total, completed=self.done)
        elif self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress(total: int, enabled: bool) -> _Progress:
    """A context manager yielding ``advance(rows)``; silent unless ``enabled``."""
    return _Progress(total, enabled)


# ---------------------------------------------------------------- sweeps


def sweep_table(result: SweepResult) -> Table:
    """The loss at each grid temperature, the best grid row in bold."""
    from rich.table import Table

    run = result.run
    table = Table(title=f"{run.n} pairs · {_mode(run)} · {run.similarity} · "
                        f"{len(result.rows)} temperatures", title_justify="left")
    calibrated = result.calibration_optimum is not None
    for name in ("τ", "loss mean", "loss std", "MI bound (nats)", *(("ECE",) * calibrated)):
        table.add_column(name, justify="right")
    for row in result.rows:
        style = "bold" if row is result.best_grid else None
        table.add_row(f"{row.temperature:.4g}", _fmt(row.loss_mean), _fmt(row.loss_std),
                      _fmt(row.mi_lower_bound_nats), *((_fmt(row.ece),) * calibrated),
                      style=style)
    return table


def sweep_summary(result: SweepResult) -> str:
    """One line: the optimum (or why there is none), the best grid point and the ranks."""
    optimum = result.optimum
    ranks = (f"accuracy@1 {result.retrieval.accuracy_at_1:.4f} · "
             f"MRR {result.retrieval.mrr:.4f}")
    if optimum.temperature is None:
        return f"no finite optimum: {optimum.reason} · {ranks}"
    state = "" if optimum.converged else " (not converged)"
    calibrated = result.calibration_optimum
    lowest_ece = ("" if calibrated is None else f" · lowest ECE {_fmt(calibrated.ece)} at "
                  f"τ = {calibrated.temperature:.4g}")
    return (f"optimum τ = {optimum.temperature:.6g}, mean loss "
            f"{optimum.loss_mean or 0.0:.6f}{state} · best grid τ = "
            f"{result.best_grid.temperature:.4g}{lowest_ece} · {ranks}")


def sweep_text_plot(result: SweepResult, width: int = 64, height: int = 14) -> str:
    """Loss against τ on a log axis, in characters; ▲ marks the optimum when it is in range."""
    temperatures = np.log10([row.temperature for row in result.rows])
    losses = np.array([row.loss_mean for row in result.rows])
    low, high = float(losses.min()), float(losses.max())
    span_x = max(float(temperatures[-1] - temperatures[0]), 1e-12)
    span_y = max(high - low, 1e-12)
    grid = [[" "] * width for _ in range(height)]
    for x, y in zip(temperatures, losses, strict=True):
        column = round((x - temperatures[0]) / span_x * (width - 1))
        line = round((high - y) / span_y * (height - 1))
        grid[line][column] = "•"
    marker = ""
    optimum = result.optimum.temperature
    if optimum is not None:
        x = (math.log10(optimum) - temperatures[0]) / span_x
        if 0 <= x <= 1:
            grid[-1][round(x * (width - 1))] = "▲"
            marker = f"   ▲ optimum τ = {optimum:.4g}"
    lines = [f"{high:8.3f} ┤" + "".join(grid[0])]
    lines += ["         │" + "".join(row) for row in grid[1:-1]]
    lines += [f"{low:8.3f} ┤" + "".join(grid[-1])]
    lines.append("         └" + "─" * width)
    left, right = f"τ = {result.rows[0].temperature:.3g}", f"{result.rows[-1].temperature:.3g}"
    lines.append("          " + left + " " * max(1, width - len(left) - len(right)) + right)
    lines.append("          mean loss against τ (log scale)" + marker)
    return "\n".join(lines)


def sweep_report(result: SweepResult) -> Group:
    """The table, the optimum line and the text plot, as one renderable."""
    from rich.console import Group
    from rich.text import Text

    return Group(sweep_table(result), Text(sweep_summary(result)), Text(""),
                 Text(sweep_text_plot(result)))


def sweep_csv(result: SweepResult) -> str:
    """One CSV line per grid temperature."""
    return to_csv([row.to_dict() for row in result.rows])


# ---------------------------------------------------------------- comparisons


def compare_table(result: CompareResult) -> Table:
    """A, B and B − A per metric, with the 95% interval and p-value of the difference."""
    from rich.table import Table

    table = Table(title=f"{result.n} pairs · B − A with paired-bootstrap 95% intervals "
                        f"({result.resamples} resamples)", title_justify="left")
    for name in ("metric", "A", "B", "B − A", "95% interval", "p"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for metric, diff in result.difference.items():
        worse = result.worse(metric)
        better = (diff.ci_high < 0 if metric in result.lower_is_better else diff.ci_low > 0)
        style = "red" if worse else "green" if better else None
        table.add_row(metric, _fmt(result.a[metric]), _fmt(result.b[metric]),
                      f"{diff.value:+.4f}", f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]",
                      f"{diff.p_value:.3g}", style=style)
    return table


def compare_csv(result: CompareResult) -> str:
    """One CSV line per metric."""
    return to_csv([{"metric": metric, "a": result.a[metric], "b": result.b[metric],
                    **diff.to_dict()} for metric, diff in result.difference.items()])


# ---------------------------------------------------------------- putting it out


def score_output(result: ScoreResult, file_format: str, pictures: bool = False) -> Any:
    """A score result as a table (a renderable; with ``pictures``, text histograms under
    it), JSON or CSV text."""
    if file_format == "table":
        return score_report(result, pictures)
    if file_format == "csv":
        return to_csv([result.to_dict()])
    return to_json(result.to_dict())


def sweep_output(result: SweepResult, file_format: str) -> Any:
    """A sweep as a table with the optimum and a text plot, JSON, or CSV (one line per τ)."""
    if file_format == "table":
        return sweep_report(result)
    if file_format == "csv":
        return sweep_csv(result)
    return to_json(result.to_dict())


def compare_output(result: CompareResult | ModelComparison, file_format: str) -> Any:
    """A comparison as a table, JSON or CSV (one line per metric, and model)."""
    if isinstance(result, ModelComparison):
        if file_format == "table":
            return model_comparison_table(result)
        if file_format == "csv":
            return to_csv([{"model": model, "metric": metric, "value": result.values[model][metric],
                            "baseline": result.values[result.names[0]][metric], **diff.to_dict(),
                            "p_adjusted": result.adjusted[model][metric]}
                           for model, metrics in result.difference.items()
                           for metric, diff in metrics.items()])
        return to_json(result.to_dict())
    if file_format == "table":
        return compare_table(result)
    if file_format == "csv":
        return compare_csv(result)
    return to_json(result.to_dict())


def model_comparison_table(result: ModelComparison) -> Table:
    """Per metric and model: its value, the difference from the baseline with its 95%
    interval, and the p-value adjusted over the models."""
    from rich.table import Table

    baseline = result.names[0]
    table = Table(title=f"{result.queries} queries · each model − {baseline} with "
                        f"paired-bootstrap 95% intervals · p adjusted ({result.correction})",
                  title_justify="left")
    for name in ("metric", "model", "value", f"− {baseline}", "95% interval", "p adj."):
        table.add_column(name, justify="left" if name in ("metric", "model") else "right",
                         overflow="fold")
    for metric in result.values[baseline]:
        table.add_row(metric, baseline, _fmt(result.values[baseline][metric]), "", "", "")
        for model in result.names[1:]:
            diff = result.difference[model][metric]
            worse = result.worse(model, metric)
            better = result.adjusted[model][metric] < 0.05 and not worse
            table.add_row("", model, _fmt(result.values[model][metric]), f"{diff.value:+.4f}",
                          f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]",
                          f"{result.adjusted[model][metric]:.3g}",
                          style="red" if worse else "green" if better else None)
    return table


def inspect_output(described: list[dict[str, Any]], file_format: str) -> Any:
    """Descriptions of files as tables, JSON or CSV (one line per array)."""
    if file_format == "table":
        from rich.console import Group

        return Group(*(inspect_table(info) for info in described))
    if file_format == "csv":
        return to_csv([{"file": info["file"], **array} for info in described
                       for array in info["arrays"]])
    return to_json({"files": described})


def emit(rendered: Any, output: str | None, to_stderr: bool = False) -> None:
    """Write text, or a rich renderable as text, to ``output`` (atomically) or else (None
    or ``-``) to stdout (stderr when stdout carries per-sample rows)."""
    from . import io

    if output is not None and output != "-":
        if isinstance(rendered, str):
            text = rendered
        else:
            buffer = textio.StringIO()
            print_table(rendered, file=buffer, width=100)
            text = buffer.getvalue()
        data = text.encode()
        io.write_atomically(output, lambda handle: _write_bytes(handle, data))
        return
    stream = sys.stderr if to_stderr else sys.stdout
    if isinstance(rendered, str):
        stream.write(rendered)
        stream.flush()
    else:
        print_table(rendered, file=stream)


def _write_bytes(handle: IO[bytes], data: bytes) -> None:
    handle.write(data)


def write_per_sample(columns: Mapping[str, Any] | None, target: str, run: RunInfo) -> None:
    """Per-sample rows: JSONL on stdout for ``-``, a .parquet/.csv/.jsonl file by its
    extension, or in a distributed run a Parquet dataset (a directory of one part file
    per rank, each written atomically)."""
    from pathlib import Path

    from . import io

    if columns is None:
        return
    if target == "-":
        sys.stdout.writelines(jsonl_lines(columns))
        sys.stdout.flush()
        return
    if run.world > 1:
        directory = Path(target)
        directory.mkdir(exist_ok=True)
        part = str(directory / f"part-{run.rank:05d}.parquet")
        io.write_atomically(part, lambda handle: write_parquet(columns, handle))
        return
    write = PER_SAMPLE_WRITERS[Path(target).suffix.lower()]
    io.write_atomically(target, lambda handle: write(columns, handle))


def check_per_sample_target(target: str | None, distributed: bool,
                            argument: str = "per_sample") -> None:
    """Refuse a per-sample (or per-query) target that has no writer, before any work."""
    from pathlib import Path

    if target is None or target == "-":
        return
    if distributed:
        if Path(target).suffix:
            raise UsageError(f"{arg(argument)} {target}: a distributed run writes a Parquet "
                             "dataset; give a directory name")
        if not Path(target).absolute().parent.is_dir():
            raise UsageError(f"{arg(argument)} {target}: directory "
                             f"{str(Path(target).parent)!r} does not exist")
        return
    if Path(target).suffix.lower() not in PER_SAMPLE_WRITERS:
        raise UsageError(f"{arg(argument)} {target}: use a .parquet, .csv or .jsonl file "
                         "name, or - for JSONL on stdout")


def print_waiting(message: str) -> None:
    """A note that the run waits for an input (a pipe nobody writes to yet)."""
    _stderr().print(f"note: {message}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------- retrieval


_RANKED = (("nDCG", "ndcg_at"), ("recall", "recall_at"), ("precision", "precision_at"),
           ("MRR", "mrr_at"), ("MAP", "map_at"), ("hit rate", "hit_rate_at"))


def retrieval_table(result: RetrievalResult) -> Group:
    """The metrics at each cut-off (a row per metric), then the rest of the result."""
    from rich.console import Group
    from rich.table import Table

    run, metrics = result.run, result.metrics
    title = (f"{metrics.queries} queries · {result.corpus} documents · {run.similarity} · "
             f"τ = {result.temperature:g}{' (fitted)' if result.temperature_fitted else ''}")
    cut_offs = sorted(metrics.ndcg_at)
    ranked = Table(title=title, title_justify="left")
    ranked.add_column("metric", style="bold")
    for k in cut_offs:
        ranked.add_column(f"@{k}", justify="right")
    for label, field_name in _RANKED:
        values = getattr(metrics, field_name)
        ranked.add_row(label, *(_fmt(values[k]) for k in cut_offs))
    summary = Table(show_header=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    loss = result.loss
    for name, value in (
        ("MRR / MAP / R-precision", f"{_fmt(metrics.mrr)} / {_fmt(metrics.map)} / "
                                    f"{_fmt(metrics.r_precision)}"),
        ("nDCG gain", metrics.gain),
        (f"loss mean ± std ({result.multi_positive})", f"{_fmt(loss.mean)} ± {_fmt(loss.std)}"),
        ("MI lower bound", f"{_fmt(result.mi_lower_bound_nats)} nats"),
        ("relevant pairs", str(result.relevant)),
        ("queries left out (no relevant)", str(result.without_relevant)),
        ("device / dtype", f"{run.device} / {run.dtype}"),
        ("seconds", _fmt(run.seconds, 3)),
    ):
        summary.add_row(name, value)
    if result.diagnostics is not None:
        return Group(ranked, summary, diagnostics_table(result.diagnostics))
    return Group(ranked, summary)


def retrieval_output(result: RetrievalResult, file_format: str) -> Any:
    """A retrieval result as tables, JSON or CSV (one flattened line)."""
    if file_format == "table":
        return retrieval_table(result)
    if file_format == "csv":
        return to_csv([result.to_dict()])
    return to_json(result.to_dict())


_TREC_FIELD = re.compile(r"[^\s]+")
"""A column of a TREC run file: no whitespace (the separator), not empty."""


def check_run_tag(tag: str) -> None:
    """Refuse a run tag that would not be one column of the run file."""
    from .io import quoted

    if not _TREC_FIELD.fullmatch(tag):
        raise UsageError(f"{arg('run_tag')} {quoted(tag)}: the tag is a column of the run "
                         "file; give one word without whitespace")


def write_trec_run(top: Mapping[str, Any], target: str, tag: str) -> None:
    """The top-k lists as a TREC run file: ``qid Q0 docid rank score tag``, ranks from 1,
    best first, scores printed to round-trip exactly; refused (before anything is
    written) when an id is empty or holds whitespace."""
    from . import io

    for name, ids in (("query", top["query_id"]),
                      ("document", (doc for docs in top["doc_ids"] for doc in docs))):
        bad = [value for value in {str(value) for value in ids}
               if not _TREC_FIELD.fullmatch(value)]
        if bad:
            raise InputError(f"{arg('run')}: the {name} id {io.quoted(min(bad))} is empty or "
                             "holds whitespace, which would split the run file's columns")
    lines = []
    for query_id, doc_ids, scores in zip(top["query_id"], top["doc_ids"], top["scores"],
                                         strict=True):
        for rank, (doc_id, score) in enumerate(zip(doc_ids, scores, strict=True), start=1):
            lines.append(f"{query_id} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")
    data = "".join(lines).encode()
    if target == "-":
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    io.write_atomically(target, lambda handle: _write_bytes(handle, data))
