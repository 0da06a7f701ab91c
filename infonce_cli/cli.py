"""The ``infonce`` command: parse options, load files, run the engine, render results.

The only module that imports typer. It holds no maths. torch is imported inside
the commands, so ``infonce --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .errors import ExitCode, InfonceError, InputError, OutputError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from .distributed import Cluster
    from .engine import EngineOptions
    from .io import Embeddings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Score precomputed embeddings with the InfoNCE contrastive loss.",
)


class OutputFormat(StrEnum):
    AUTO = "auto"
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class SimilarityChoice(StrEnum):
    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"


class DtypeChoice(StrEnum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


# ---------------------------------------------------------------- error handling


@contextlib.contextmanager
def _together(cluster: Cluster) -> Iterator[None]:
    """Run a step on every rank; if it fails on any, it fails on all, with that message."""
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:
        error = exc
    cluster.check(error)


@contextlib.contextmanager
def _reported_errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one ``error:`` line on stderr and their exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except InfonceError as exc:
        _fail(str(exc), exc.exit_code, debug)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED, debug)
    except MemoryError:
        _fail("out of memory; lower --max-memory or use smaller inputs", ExitCode.DATA_ERROR, debug)
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {_first_line(exc)} (rerun with --debug "
              "for the traceback)", ExitCode.DATA_ERROR, debug)


def _fail(message: str, code: ExitCode, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(int(code))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


# ---------------------------------------------------------------- option parsing


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
               "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
               "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_memory(text: str) -> int:
    """'512MiB', '2GB', '1g' or a number of bytes → bytes (at least 1 MiB)."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise UsageError(f"--max-memory: cannot read {text!r}; use e.g. 512MiB or 2GB")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 2**20:
        raise UsageError(f"--max-memory: {text} is below the minimum of 1MiB")
    return size


def parse_recall_at(text: str) -> tuple[int, ...]:
    """'1,5,10' → (1, 5, 10)."""
    try:
        values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise UsageError(f"--recall-at: expected whole numbers like 1,5,10, got {text!r}") from None
    if not values or values[0] < 1:
        raise UsageError(f"--recall-at: every k must be at least 1, got {text!r}")
    return values


def parse_temperature(text: str) -> float:
    """A temperature > 0."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--temperature: expected a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"--temperature must be > 0, got {text}")
    return value


def parse_device(text: str) -> Any:
    """auto, cpu, cuda or cuda:N → a torch.device that exists here."""
    import torch

    name = text.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UsageError(f"--device: unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InfonceError(f"--device {text}: no CUDA device is available here "
                               f"(torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InfonceError(f"--device {text}: only {torch.cuda.device_count()} CUDA "
                               "device(s) are available")
    return device


# ---------------------------------------------------------------- shared options

QueryOpt = Annotated[str, typer.Option("--query", "-q", help="Query embeddings: .npy, .npz or Parquet (N, d).", show_default=False)]
PosOpt = Annotated[str, typer.Option("--pos", "-p", help="Positive embeddings, row i for query i (N, d).", show_default=False)]
NegOpt = Annotated[str | None, typer.Option("--neg", "-n", help="Negatives: (N, M, d) paired, or (K, d) shared by every query. Leave out for in-batch negatives.", show_default=False)]
QueryKeyOpt = Annotated[str | None, typer.Option(help="Array name inside a --query .npz file.")]
PosKeyOpt = Annotated[str | None, typer.Option(help="Array name inside a --pos .npz file.")]
NegKeyOpt = Annotated[str | None, typer.Option(help="Array name inside a --neg .npz file.")]
QueryColOpt = Annotated[str | None, typer.Option(help="Embedding column of a --query Parquet file (default: its only list column).")]
PosColOpt = Annotated[str | None, typer.Option(help="Embedding column of a --pos Parquet file.")]
NegColOpt = Annotated[str | None, typer.Option(help="Embedding column of a --neg Parquet file (list of vectors per row for paired negatives).")]
IdColOpt = Annotated[str | None, typer.Option(help="Id column of the --query (or else --pos) Parquet file, carried into the per-sample output.")]
SimilarityOpt = Annotated[SimilarityChoice, typer.Option("--similarity", "-s", help="cosine (rows L2-normalised), dot (raw inner product) or l2 (−squared distance).")]
InBatchOpt = Annotated[bool, typer.Option("--in-batch", help="Pool the batch's positives with the paired hard negatives (DPR / MNRL style).")]
BatchSizeOpt = Annotated[int | None, typer.Option(help="Split the pairs into consecutive batches of this size for in-batch negatives, as a training step would.", show_default=False)]
SymmetricOpt = Annotated[bool, typer.Option("--symmetric", help="Average the query→positive and positive→query losses (CLIP); in-batch only.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[DtypeChoice, typer.Option(help="Precision of the similarity computation; reductions stay float32 or better.")]
PosIdsOpt = Annotated[str | None, typer.Option(help="Ids of the positives, an .npy array (N,): an in-batch candidate with the query's positive id is not a negative, nor is a hard negative with that id.", show_default=False)]
NegIdsOpt = Annotated[str | None, typer.Option(help="Ids of the negatives, an .npy array: (N, M) for paired, (K,) for a shared pool.", show_default=False)]
PosIdColOpt = Annotated[str | None, typer.Option(help="Positive-id column of the --pos Parquet file (instead of --pos-ids).", show_default=False)]
NegIdColOpt = Annotated[str | None, typer.Option(help="Negative-id column of the --neg Parquet file (instead of --neg-ids).", show_default=False)]
class MultiPositive(StrEnum):
    NTXENT = "ntxent"
    SUPCON = "supcon"


QueryIdsOpt = Annotated[str | None, typer.Option(help="Query ids, an .npy array (N,): rows with the same id are one query with several positives.", show_default=False)]
QueryIdColOpt = Annotated[str | None, typer.Option(help="Query-id column of the --query Parquet file (instead of --query-ids).", show_default=False)]
MultiPositiveOpt = Annotated[MultiPositive, typer.Option(help="With several positives per query: ntxent scores each pair with the other positives left out of the denominator (pytorch-metric-learning NTXentLoss); supcon keeps them in and averages over the query's positives (SupConLoss).")]
MaskDuplicatesOpt = Annotated[bool, typer.Option("--mask-duplicates", help="Drop candidates bit-identical to the query's positive (instead of counting them as ties).")]
AllowEmptyOpt = Annotated[bool, typer.Option("--allow-empty", help="Leave queries that masking left with no negative out of the aggregates (else an error).")]
AllowTf32Opt = Annotated[bool, typer.Option("--allow-tf32", help="On CUDA, let float32 matrix products use TF32 (faster, less exact).")]
MaxMemoryOpt = Annotated[str, typer.Option(help="Working-memory budget for score blocks, e.g. 512MiB or 4GB.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="auto: a table on a terminal, JSON when piped.")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="Write the aggregate to this file instead of stdout.", show_default=False)]
RecallAtOpt = Annotated[str, typer.Option(help="Cut-offs k for recall@k, comma-separated.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar or notes on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]


@dataclass(frozen=True)
class _Inputs:
    query: Embeddings
    positive: Embeddings
    negatives: Embeddings | None
    ids: np.ndarray[Any, Any] | None
    paths: list[str]


def _load_inputs(
    query: str, pos: str, neg: str | None,
    query_key: str | None, pos_key: str | None, neg_key: str | None,
    query_col: str | None, pos_col: str | None, neg_col: str | None,
    id_col: str | None, cosine: bool, cluster: Cluster | None = None,
) -> _Inputs:
    """Load and check the inputs; in a distributed run each rank checks its share of rows."""
    from . import io
    from .distributed import Cluster

    cluster = cluster or Cluster()

    query_array = io.load_embeddings(query, key=query_key, column=query_col)
    positive_array = io.load_embeddings(pos, key=pos_key, column=pos_col)
    negative_array = (io.load_embeddings(neg, key=neg_key, column=neg_col, ndims=(2, 3))
                      if neg is not None else None)
    io.check_pairs(query_array, positive_array, negative_array)
    share = cluster.share(query_array.shape[0])
    for embeddings in (query_array, positive_array, negative_array):
        if embeddings is not None:
            paired_rows = embeddings is not negative_array or len(embeddings.shape) == 3
            rows = share if paired_rows else cluster.share(embeddings.shape[0])
            io.check_values(embeddings, nonzero=cosine, rows=rows)
    ids = None
    if id_col is not None:
        source = next((p for p in (query, pos) if io.is_parquet(p)), None)
        if source is None:
            raise UsageError("--id-col needs --query or --pos to be a Parquet file")
        ids = io.load_ids(source, id_col)
        if len(ids) != query_array.shape[0]:
            raise InputError(f"{source}:{id_col}: has {len(ids)} ids for "
                             f"{query_array.shape[0]} pairs")
    paths = [p for p in (query, pos, neg) if p is not None]
    return _Inputs(query_array, positive_array, negative_array, ids, paths)


def _load_masking_ids(
    inputs: _Inputs, pos: str, neg: str | None, pos_ids: str | None, neg_ids: str | None,
    pos_id_col: str | None, neg_id_col: str | None,
) -> tuple[np.ndarray[Any, Any] | None, np.ndarray[Any, Any] | None]:
    """Positive and negative ids for masking false negatives, checked against the inputs."""
    from . import io

    if pos_ids is not None and pos_id_col is not None:
        raise UsageError("give --pos-ids or --pos-id-col, not both")
    if neg_ids is not None and neg_id_col is not None:
        raise UsageError("give --neg-ids or --neg-id-col, not both")
    if (neg_ids is not None or neg_id_col is not None) and neg is None:
        raise UsageError("--neg-ids/--neg-id-col name the rows of --neg: give --neg too")
    positive = (io.load_id_array(pos_ids) if pos_ids is not None
                else io.load_ids(pos, pos_id_col) if pos_id_col is not None else None)
    negative = (io.load_id_array(neg_ids) if neg_ids is not None
                else io.load_ids(neg, neg_id_col) if neg_id_col is not None and neg is not None
                else None)
    n = inputs.query.shape[0]
    if positive is not None and positive.shape != (n,):
        raise InputError(f"{pos_ids or pos}: expected {n} positive ids (N,), got shape "
                         f"{positive.shape}")
    if negative is not None and inputs.negatives is not None:
        wanted = inputs.negatives.shape[:-1]
        if negative.shape != wanted:
            raise InputError(f"{neg_ids or neg}: expected negative ids of shape {wanted}, "
                             f"got {negative.shape}")
    return positive, negative


def _load_query_ids(
    inputs: _Inputs, query: str, query_ids: str | None, query_id_col: str | None
) -> np.ndarray[Any, Any] | None:
    """Query ids grouping rows that share a query (several positives), or None."""
    from . import io

    if query_ids is not None and query_id_col is not None:
        raise UsageError("give --query-ids or --query-id-col, not both")
    if query_ids is None and query_id_col is None:
        return None
    ids = io.load_id_array(query_ids) if query_ids is not None else io.load_ids(
        query, query_id_col or "")
    n = inputs.query.shape[0]
    if ids.shape != (n,):
        raise InputError(f"{query_ids or query}: expected {n} query ids (N,), got shape "
                         f"{ids.shape}")
    return ids


def _engine_options(
    temperatures: tuple[float, ...], similarity: SimilarityChoice, in_batch: bool,
    batch_size: int | None, symmetric: bool, device: str, dtype: DtypeChoice, max_memory: str,
    has_negatives: bool, allow_tf32: bool = False, mask_duplicates: bool = False,
    cluster: Cluster | None = None,
) -> EngineOptions:
    import torch

    from .engine import EngineOptions
    from .similarity import Similarity

    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if in_batch and not has_negatives:
        raise UsageError("--in-batch pools the batch with paired negatives: give --neg "
                         "(N, M, d); without --neg, negatives are in-batch already")
    torch_device = parse_device(device)
    if cluster is not None and cluster.world > 1 and torch_device.type == "cuda":
        torch_device = torch.device("cuda", cluster.local_rank)
    torch_dtype = getattr(torch, dtype.value)
    return EngineOptions(
        temperatures=temperatures,
        similarity=Similarity(similarity.value),
        in_batch=in_batch,
        batch_size=batch_size,
        symmetric=symmetric,
        dtype=torch_dtype,
        device=torch_device,
        max_memory=parse_memory(max_memory),
        allow_tf32=allow_tf32,
        mask_duplicates=mask_duplicates,
    )


def _resolve_format(fmt: OutputFormat, output: str | None) -> OutputFormat:
    if fmt is not OutputFormat.AUTO:
        return fmt
    if output is not None:
        return OutputFormat.CSV if output.lower().endswith(".csv") else OutputFormat.JSON
    return OutputFormat.TABLE if sys.stdout.isatty() else OutputFormat.JSON


def _emit(rendered: Any, output: str | None, to_stderr: bool = False) -> None:
    """Write the aggregate (text, or a rich renderable for a table) to --output atomically,
    else to stdout (stderr when stdout carries per-sample rows)."""
    from . import io, render

    if output is not None:
        text = rendered if isinstance(rendered, str) else _table_text(rendered)
        io.write_atomically(output, lambda handle: _write_text(handle, text))
        return
    stream = sys.stderr if to_stderr else sys.stdout
    if isinstance(rendered, str):
        stream.write(rendered)
        stream.flush()
    else:
        render.print_table(rendered, file=stream)


def _write_text(handle: Any, text: str) -> None:
    handle.write(text.encode())


def _table_text(table: Any) -> str:
    import io as textio

    from . import render

    buffer = textio.StringIO()
    render.print_table(table, file=buffer, width=100)
    return buffer.getvalue()


def _progress(total: int, quiet: bool) -> Any:
    from . import render

    return render.progress(total, enabled=not quiet and sys.stderr.isatty())


# ---------------------------------------------------------------- commands


def _version(value: bool) -> None:
    if value:
        print(f"infonce {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Score precomputed embeddings with the InfoNCE contrastive loss."""


@app.command()
def score(
    query: QueryOpt,
    pos: PosOpt,
    neg: NegOpt = None,
    temperature: Annotated[str, typer.Option("--temperature", "-t", help="Temperature τ > 0 (logits are similarities / τ), or 'auto' to fit the loss-minimising τ and score at it.")] = "0.05",
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    in_batch: InBatchOpt = False,
    batch_size: BatchSizeOpt = None,
    symmetric: SymmetricOpt = False,
    query_key: QueryKeyOpt = None,
    pos_key: PosKeyOpt = None,
    neg_key: NegKeyOpt = None,
    query_col: QueryColOpt = None,
    pos_col: PosColOpt = None,
    neg_col: NegColOpt = None,
    id_col: IdColOpt = None,
    pos_ids: PosIdsOpt = None,
    neg_ids: NegIdsOpt = None,
    pos_id_col: PosIdColOpt = None,
    neg_id_col: NegIdColOpt = None,
    mask_duplicates: MaskDuplicatesOpt = False,
    allow_empty: AllowEmptyOpt = False,
    query_ids: QueryIdsOpt = None,
    query_id_col: QueryIdColOpt = None,
    multi_positive: MultiPositiveOpt = MultiPositive.NTXENT,
    recall_at: RecallAtOpt = "1,5,10",
    ci: Annotated[bool, typer.Option("--ci", help="Add bootstrap 95% intervals of the mean loss, accuracy@1 and MRR.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for --ci.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    worst: Annotated[int, typer.Option(help="Report the K samples with the highest loss.")] = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    per_sample: Annotated[str | None, typer.Option(help="Write per-sample rows to a .parquet, .csv or .jsonl file, or '-' for JSONL on stdout (the aggregate then goes to --output or stderr).", show_default=False)] = None,
    fail_above: Annotated[float | None, typer.Option(help="Exit 3 when the mean loss is above this (after printing the results).", show_default=False)] = None,
    fail_below_accuracy: Annotated[float | None, typer.Option(help="Exit 3 when accuracy@1 is below this (after printing the results).", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Per-sample and aggregate InfoNCE loss, ranks and retrieval metrics."""
    with _reported_errors(debug):
        from . import api, distributed, engine, render
        from .sweep import score_at_optimum

        auto = temperature.strip().lower() == "auto"
        tau = 1.0 if auto else parse_temperature(temperature)
        recall = parse_recall_at(recall_at)
        out_format = _resolve_format(fmt, output)
        if bootstrap < 1 or worst < 0:
            raise UsageError("--bootstrap must be at least 1 and --worst at least 0")
        cluster = distributed.start(device)
        try:
            writer = _per_sample_writer(per_sample, cluster)
            options = _engine_options((tau,), similarity, in_batch, batch_size, symmetric,
                                      device, dtype, max_memory, has_negatives=neg is not None,
                                      allow_tf32=allow_tf32, mask_duplicates=mask_duplicates,
                                      cluster=cluster)
            with _together(cluster):
                inputs = _load_inputs(query, pos, neg, query_key, pos_key, neg_key, query_col,
                                      pos_col, neg_col, id_col,
                                      cosine=similarity is SimilarityChoice.COSINE,
                                      cluster=cluster)
                masking = _load_masking_ids(inputs, pos, neg, pos_ids, neg_ids, pos_id_col,
                                            neg_id_col)
                groups = _load_query_ids(inputs, query, query_ids, query_id_col)
                if groups is not None and neg is not None:
                    raise UsageError("--query-ids works with in-batch negatives (leave out "
                                     "--neg)")
                _check_outputs(output, per_sample, inputs.paths, cluster)
            supcon = multi_positive is MultiPositive.SUPCON
            share = cluster.share(inputs.query.shape[0])
            if cluster.world > 1:
                options = dataclasses.replace(options, query_rows=share)
            negatives = inputs.negatives.values if inputs.negatives is not None else None
            arrays = (inputs.query.values, inputs.positive.values, negatives)
            group_mask = groups if groups is not None and not supcon else None
            ids = api.candidate_ids(*masking, group_mask, device=options.device) if any(
                x is not None for x in (*masking, group_mask)) else None
            masks = ids is not None or mask_duplicates
            report = api.Report(recall, masking=masks, allow_empty=allow_empty,
                                resamples=bootstrap if ci else 0, seed=seed, worst=worst,
                                row_ids=inputs.ids if inputs.ids is not None else masking[0],
                                negative_ids=masking[1], groups=groups, supcon=supcon)
            with _progress(share[1] - share[0], quiet or not cluster.leader) as advance:
                started = time.perf_counter()
                with _together(cluster):
                    if auto:
                        fitted, local = score_at_optimum(*arrays, options, advance, ids,
                                                         cluster.summer())
                        options = dataclasses.replace(options, temperatures=(fitted,))
                    else:
                        local = engine.score_embeddings(*arrays, options, advance, ids)
                per_sample_scores = distributed.gather_scores(cluster, local)
                seconds = time.perf_counter() - started
            if writer is not None:
                part_ids = None if inputs.ids is None else inputs.ids[share[0]:share[1]]
                columns = api.per_sample_columns(local, part_ids, masked=masks,
                                                 first_row=share[0])
                writer(columns)
            if not cluster.leader:
                return
            result = api.summarize(per_sample_scores, options, seconds, report,
                                   temperature_fitted=auto)
        finally:
            distributed.stop()
        if out_format is OutputFormat.TABLE:
            rendered: Any = render.score_report(result)
        elif out_format is OutputFormat.CSV:
            rendered = render.to_csv([result.to_dict()])
        else:
            rendered = render.to_json(result.to_dict())
        _emit(rendered, output, to_stderr=per_sample == "-")
        if not quiet:
            render.print_notes(result.notes)
        _check_gates(result.loss.mean, result.retrieval.accuracy_at_1, fail_above,
                     fail_below_accuracy)


def _check_outputs(
    output: str | None, per_sample: str | None, inputs: list[str], cluster: Cluster
) -> None:
    """Refuse outputs that would overwrite an input or have nowhere to go, before any work."""
    from . import io

    if output is not None:
        io.check_output_path(output, inputs)
    if per_sample is None or per_sample == "-":
        return
    if cluster.world == 1:
        io.check_output_path(per_sample, inputs)
    elif not Path(per_sample).parent.is_dir():
        raise OutputError(f"{per_sample}: directory {str(Path(per_sample).parent)!r} does "
                          "not exist")


def _per_sample_writer(
    target: str | None, cluster: Cluster
) -> Callable[[dict[str, Any]], None] | None:
    """How per-sample rows are written: JSONL on stdout ('-'), a .parquet/.csv/.jsonl file,
    or in a distributed run a Parquet dataset (a directory with one part file per rank)."""
    from . import io, render

    if target is None:
        return None
    if target == "-":
        def to_stdout(columns: dict[str, Any]) -> None:
            sys.stdout.writelines(render.jsonl_lines(columns))
            sys.stdout.flush()
        return to_stdout
    if cluster.world > 1:
        directory = Path(target)
        if directory.suffix:
            raise UsageError(f"--per-sample {target}: a distributed run writes a Parquet "
                             "dataset; give a directory name")
        part = str(directory / f"part-{cluster.rank:05d}.parquet")

        def to_part(columns: dict[str, Any]) -> None:
            directory.mkdir(exist_ok=True)
            io.write_atomically(part, lambda handle: render.write_parquet(columns, handle))
        return to_part
    suffix = Path(target).suffix.lower()
    if suffix not in render.PER_SAMPLE_WRITERS:
        raise UsageError(f"--per-sample {target}: use a .parquet, .csv or .jsonl file name, "
                         "or - for JSONL on stdout")
    write = render.PER_SAMPLE_WRITERS[suffix]

    def to_file(columns: dict[str, Any]) -> None:
        io.write_atomically(target, lambda handle: write(columns, handle))
    return to_file


def _check_gates(loss_mean: float, accuracy: float, fail_above: float | None,
                 fail_below_accuracy: float | None) -> None:
    failures = []
    if fail_above is not None and loss_mean > fail_above:
        failures.append(f"mean loss {loss_mean:.6g} is above --fail-above {fail_above:g}")
    if fail_below_accuracy is not None and accuracy < fail_below_accuracy:
        failures.append(f"accuracy@1 {accuracy:.6g} is below --fail-below-accuracy "
                        f"{fail_below_accuracy:g}")
    if failures:
        print(f"error: quality gate failed: {'; '.join(failures)}", file=sys.stderr)
        raise typer.Exit(int(ExitCode.GATE_FAILED))


class CompareMetric(StrEnum):
    LOSS_MEAN = "loss_mean"
    ACCURACY_AT_1 = "accuracy_at_1"
    MRR = "mrr"


@app.command()
def compare(
    query_a: Annotated[str, typer.Option(help="Model A's query embeddings.", show_default=False)],
    pos_a: Annotated[str, typer.Option(help="Model A's positive embeddings.", show_default=False)],
    query_b: Annotated[str, typer.Option(help="Model B's query embeddings (same pairs, same order; any dimension).", show_default=False)],
    pos_b: Annotated[str, typer.Option(help="Model B's positive embeddings.", show_default=False)],
    neg_a: Annotated[str | None, typer.Option(help="Model A's negatives (paired or shared).", show_default=False)] = None,
    neg_b: Annotated[str | None, typer.Option(help="Model B's negatives.", show_default=False)] = None,
    temperature: Annotated[str, typer.Option("--temperature", "-t", help="Temperature τ > 0 used for both models.")] = "0.05",
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    in_batch: InBatchOpt = False,
    batch_size: BatchSizeOpt = None,
    symmetric: SymmetricOpt = False,
    recall_at: RecallAtOpt = "1,5,10",
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples (and sign-flip permutations).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    metric: Annotated[CompareMetric, typer.Option(help="The metric --fail-if-worse judges.")] = CompareMetric.LOSS_MEAN,
    fail_if_worse: Annotated[bool, typer.Option("--fail-if-worse", help="Exit 3 when B is significantly worse than A on --metric (its 95% interval excludes 0).")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare two embedding models on the same pairs: A, B and B − A with paired-bootstrap
    intervals and p-values."""
    with _reported_errors(debug):
        from . import api, engine, io, render

        tau = parse_temperature(temperature)
        recall = parse_recall_at(recall_at)
        if bootstrap < 1:
            raise UsageError(f"--bootstrap must be at least 1, got {bootstrap}")
        if (neg_a is None) != (neg_b is None):
            raise UsageError("give negatives for both models (--neg-a and --neg-b) or neither")
        out_format = _resolve_format(fmt, output)
        options = _engine_options((tau,), similarity, in_batch, batch_size, symmetric, device,
                                  dtype, max_memory, has_negatives=neg_a is not None,
                                  allow_tf32=allow_tf32)
        cosine = similarity is SimilarityChoice.COSINE
        a = _load_inputs(query_a, pos_a, neg_a, None, None, None, None, None, None, None, cosine)
        b = _load_inputs(query_b, pos_b, neg_b, None, None, None, None, None, None, None, cosine)
        if a.query.shape[0] != b.query.shape[0]:
            raise InputError(f"{b.query.label}: has {b.query.shape[0]} pairs but "
                             f"{a.query.label} has {a.query.shape[0]}; compare needs the same "
                             "pairs in the same order")
        if output is not None:
            io.check_output_path(output, a.paths + b.paths)
        scores = []
        with _progress(2 * a.query.shape[0], quiet) as advance:
            for inputs in (a, b):
                started = time.perf_counter()
                negatives = inputs.negatives.values if inputs.negatives is not None else None
                per_sample = engine.score_embeddings(inputs.query.values, inputs.positive.values,
                                                     negatives, options, advance)
                scores.append((per_sample, time.perf_counter() - started))
        result = api.compare_scores(scores[0], scores[1], options, recall, bootstrap, seed)
        if out_format is OutputFormat.TABLE:
            _emit(render.compare_table(result), output)
        elif out_format is OutputFormat.CSV:
            _emit(render.compare_csv(result), output)
        else:
            _emit(render.to_json(result.to_dict()), output)
        if fail_if_worse and result.worse(metric.value):
            diff = result.difference[metric.value]
            print(f"error: quality gate failed: B is worse than A on {metric.value} "
                  f"(B − A = {diff.value:.6g}, 95% interval [{diff.ci_low:.6g}, "
                  f"{diff.ci_high:.6g}], p = {diff.p_value:.3g})", file=sys.stderr)
            raise typer.Exit(int(ExitCode.GATE_FAILED))


class Spacing(StrEnum):
    LOG = "log"
    LINEAR = "linear"


@app.command("sweep-temperature")
def sweep_temperature(
    query: QueryOpt,
    pos: PosOpt,
    neg: NegOpt = None,
    temperatures: Annotated[str | None, typer.Option(help="Explicit grid, comma-separated (e.g. 0.01,0.02,0.05); overrides --min/--max/--steps.", show_default=False)] = None,
    minimum: Annotated[float, typer.Option("--min", help="Smallest grid temperature.")] = 0.01,
    maximum: Annotated[float, typer.Option("--max", help="Largest grid temperature.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Number of grid temperatures.")] = 50,
    spacing: Annotated[Spacing, typer.Option(help="Grid spacing in τ.")] = Spacing.LOG,
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    in_batch: InBatchOpt = False,
    batch_size: BatchSizeOpt = None,
    symmetric: SymmetricOpt = False,
    query_key: QueryKeyOpt = None,
    pos_key: PosKeyOpt = None,
    neg_key: NegKeyOpt = None,
    query_col: QueryColOpt = None,
    pos_col: PosColOpt = None,
    neg_col: NegColOpt = None,
    recall_at: RecallAtOpt = "1,5,10",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    plot: Annotated[str | None, typer.Option(help="Write a figure of loss against τ to a .png or .svg file (needs matplotlib: pip install 'infonce-cli[plot]').", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Mean loss at every temperature of a grid from one similarity pass, and the exact optimum."""
    with _reported_errors(debug):
        from . import api, distributed, io, render, sweep

        if temperatures is not None:
            grid = sweep.check_temperatures(_parse_floats(temperatures, "--temperatures"))
        else:
            grid = sweep.temperature_grid(minimum, maximum, steps, spacing.value)
        recall = parse_recall_at(recall_at)
        out_format = _resolve_format(fmt, output)
        plot_format = _plot_format(plot)
        cluster = distributed.start(device)
        try:
            options = _engine_options(grid[:1], similarity, in_batch, batch_size, symmetric,
                                      device, dtype, max_memory, has_negatives=neg is not None,
                                      allow_tf32=allow_tf32, cluster=cluster)
            with _together(cluster):
                inputs = _load_inputs(query, pos, neg, query_key, pos_key, neg_key, query_col,
                                      pos_col, neg_col, None,
                                      cosine=similarity is SimilarityChoice.COSINE,
                                      cluster=cluster)
                for target in (output, plot):
                    if target is not None:
                        io.check_output_path(target, inputs.paths)
            share = cluster.share(inputs.query.shape[0])
            if cluster.world > 1:
                options = dataclasses.replace(options, query_rows=share)
            negatives = inputs.negatives.values if inputs.negatives is not None else None
            with _progress(share[1] - share[0], quiet or not cluster.leader) as advance:
                started = time.perf_counter()
                with _together(cluster):
                    local = sweep.sweep_embeddings(
                        inputs.query.values, inputs.positive.values, negatives, grid, options,
                        advance, cluster.summer())
                scores = dataclasses.replace(
                    local, grid=distributed.gather_scores(cluster, local.grid))
                seconds = time.perf_counter() - started
            if not cluster.leader:
                return
            result = api.summarize_sweep(scores, options, seconds, recall)
        finally:
            distributed.stop()
        if plot is not None and plot_format is not None:
            io.write_atomically(plot, lambda handle: render.write_sweep_plot(result, handle,
                                                                             plot_format))
        if out_format is OutputFormat.TABLE:
            _emit(render.sweep_report(result), output)
        elif out_format is OutputFormat.CSV:
            _emit(render.sweep_csv(result), output)
        else:
            _emit(render.to_json(result.to_dict()), output)
        if not quiet and result.optimum["temperature"] is None \
                and out_format is not OutputFormat.TABLE:
            render.print_notes([f"no finite optimum: {result.optimum['reason']}"])


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{option}: expected numbers like 0.01,0.05,0.1, got {text!r}") from None


def _plot_format(plot: str | None) -> str | None:
    if plot is None:
        return None
    suffix = Path(plot).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise UsageError(f"--plot {plot}: use a .png or .svg file name")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InfonceError("--plot needs matplotlib, which is not installed: "
                           "pip install 'infonce-cli[plot]'") from None
    return suffix


@app.command()
def inspect(
    files: Annotated[list[str], typer.Argument(help="Embedding files (.npy, .npz, Parquet).", show_default=False)],
    fmt: FormatOpt = OutputFormat.AUTO,
    debug: DebugOpt = False,
) -> None:
    """Shape, dtype, Parquet schema, row norms and NaN/Inf/zero-norm counts of each file."""
    with _reported_errors(debug):
        from . import io, render

        described = [io.describe_file(path) for path in files]
        out_format = _resolve_format(fmt, None)
        if out_format is OutputFormat.TABLE:
            for info in described:
                render.print_table(render.inspect_table(info))
        elif out_format is OutputFormat.CSV:
            sys.stdout.write(render.to_csv([
                {"file": info["file"], **array} for info in described for array in info["arrays"]
            ]))
        else:
            sys.stdout.write(render.to_json({"files": described}))


def main() -> None:
    """Entry point of the ``infonce`` command."""
    app()
