"""The ``infonce`` command: parse options into a request, run it, render the result.

The only module that imports typer. It holds no maths and no orchestration: each
command builds a request (requests.py), hands it to the pipeline (runs.py) and
renders what comes back (render.py). Library errors become one ``error:`` line
and their exit code in one place, ``_command``. torch is imported inside the
commands, so ``infonce --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import os
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .errors import ExitCode, GateFailed, InfonceError, UsageError, arg


def _plain_help_flag(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # a flag takes no value: show none
    return option


class _PlainHelp:
    """``--help`` as plain text, the options under the headings of their panels. typer's own
    layout imports rich's Markdown machinery, which would take half the time ``--help`` may
    (0.2 s); errors are still drawn by typer."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        command: Any = self
        command.format_usage(ctx, formatter)
        command.format_help_text(ctx, formatter)
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = ("Arguments" if param.param_type_name == "argument"
                         else getattr(param, "rich_help_panel", None) or "Options")
                panels.setdefault(panel, []).append((record[0], _unescaped(record[1])))
        if hasattr(command, "list_commands"):  # the group: each command's first line, whole
            panels["Commands"] = [(name, command.get_command(ctx, name).get_short_help_str(
                limit=1000)) for name in command.list_commands(ctx)]
        for panel, rows in panels.items():
            with formatter.section(panel):
                _write_rows(formatter, rows)
        command.format_epilog(ctx, formatter)


def _write_rows(formatter: Any, rows: list[tuple[str, str]]) -> None:
    """Options and their help in two columns, wrapped at spaces only (a flag or a package
    name such as infonce-cli[plot] is never split at its hyphen)."""
    import textwrap

    indent = " " * formatter.current_indent
    column = min(max(len(term) for term, _ in rows), 30) + 2
    width = max(formatter.width - formatter.current_indent - column, 20)
    for term, text in rows:
        lines = textwrap.wrap(text, width, break_on_hyphens=False,
                              break_long_words=False) or [""]
        if len(term) + 2 > column:  # a long term gets a line of its own
            formatter.write(f"{indent}{term}\n")
        else:
            formatter.write(f"{indent}{term:{column}}{lines.pop(0)}\n")
        formatter.write("".join(f"{indent}{'':{column}}{line}\n" for line in lines))


def _unescaped(text: str) -> str:
    """Help text written for rich markup, as plain text (``\\[`` is a bracket)."""
    return text.replace("\\[", "[")


_CLICK_USAGE_ERROR: type[Exception] = next(
    kind for kind in typer.BadParameter.__mro__ if kind.__name__ == "UsageError")
"""click's UsageError, which typer may vendor: every command-line parsing error."""


class _OneLineErrors:
    """Errors in the command line (an unknown option, a bad value, a missing one) as one
    ``error:`` line and exit 2, as every other refusal."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            parsed: list[str] = super().parse_args(ctx, args)  # type: ignore[misc]
        except _CLICK_USAGE_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command shows its help
                print(ctx.get_help())
                raise typer.Exit(int(ExitCode.USAGE_ERROR)) from None
            message = exc.format_message().rstrip(".")  # type: ignore[attr-defined]
            command = " ".join(["infonce", *ctx.command_path.split()[1:]])
            print(f"error: {message[:1].lower()}{message[1:]} (see {command} --help)",
                  file=sys.stderr)
            raise typer.Exit(int(ExitCode.USAGE_ERROR)) from None
        return parsed


class _Command(_OneLineErrors, _PlainHelp, TyperCommand):
    """A command with plain help, whose --help flag shows no value type."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_flag(super().get_help_option(ctx))


class _Commands(_OneLineErrors, _PlainHelp, TyperGroup):
    """Commands in the order they are declared, with plain help, and a suggestion for a
    mistyped one (also for a prefix such as ``sweep``)."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_flag(super().get_help_option(ctx))

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        for param in params:
            if param.name in ("install_completion", "show_completion"):
                _plain_help_flag(param)
        return params

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands:
            close = [c for c in self.commands if c.startswith(name)] or \
                difflib.get_close_matches(name, list(self.commands), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            print(f"error: no command {name!r}{hint} (see infonce --help)", file=sys.stderr)
            raise typer.Exit(int(ExitCode.USAGE_ERROR))
        return super().resolve_command(ctx, args)


_APP_SETTINGS: dict[str, Any] = {
    "cls": _Commands,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": "rich",
    "help": "Score precomputed embeddings with the InfoNCE contrastive loss.",
}
app = typer.Typer(**_APP_SETTINGS)


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


class MultiPositive(StrEnum):
    NTXENT = "ntxent"
    SUPCON = "supcon"


class Spacing(StrEnum):
    LOG = "log"
    LINEAR = "linear"


# ---------------------------------------------------------------- the one error point


def _command(build: Callable[[], Any], run: Callable[[Any], Any],
             show: Callable[[Any], None], debug: bool) -> None:
    """Build the request, run it and show the result; turn every failure into one
    ``error:`` line on stderr and its exit code. A missed quality gate shows its result
    first. A closed stdout (``| head``) ends the run quietly, as it does for coreutils."""
    try:
        from . import io, render

        io.on_wait = render.print_waiting
        request = build()
        try:
            result = run(request)
        except GateFailed as failed:
            show(failed.result)
            raise
        show(result)
    except typer.Exit:
        raise
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(141) from None
    except InfonceError as exc:
        _fail(_message(exc), exc.exit_code, debug)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED, debug)
    except MemoryError:
        _fail("out of memory; lower --max-memory or use smaller inputs", ExitCode.DATA_ERROR,
              debug)
    except Exception as exc:
        first_line = next(iter(str(exc).strip().splitlines()), "")
        _fail(f"unexpected {type(exc).__name__}: {first_line} (rerun with --debug for the "
              "traceback)", ExitCode.DATA_ERROR, debug)


def _fail(message: str, code: ExitCode, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {_one_line(message)}", file=sys.stderr)
    raise typer.Exit(int(code))


def _message(exc: InfonceError) -> str:
    """A library error as the command line says it: arguments named by their flags."""
    return exc.for_command_line()


def _one_line(message: str) -> str:
    """Control characters (a newline in a file name, say) escaped: one error, one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---------------------------------------------------------------- shared options

INPUTS, NEGATIVES, MASKING, ENGINE, REPORT, OUTPUTS, GATES, GRID = (
    "Inputs", "Negatives", "Masking and several positives", "Engine", "Report", "Outputs",
    "Quality gates", "Temperature grid")

QueryOpt = Annotated[str, typer.Option("--query", "-q", metavar="PATH", rich_help_panel=INPUTS, help="Query embeddings (N, d): .npy, .npz or Parquet; - for stdin.", show_default=False)]
PosOpt = Annotated[str, typer.Option("--pos", "-p", metavar="PATH", rich_help_panel=INPUTS, help="Positive embeddings (N, d): row i is query i's positive.", show_default=False)]
NegOpt = Annotated[str | None, typer.Option("--neg", "-n", metavar="PATH", rich_help_panel=NEGATIVES, help="Negatives: (N, M, d) paired or (K, d) shared by every query. Leave out for in-batch negatives.", show_default=False)]
QueryKeyOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Array name inside a --query .npz file.", show_default=False)]
PosKeyOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Array name inside a --pos .npz file.", show_default=False)]
NegKeyOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Array name inside a --neg .npz file.", show_default=False)]
QueryColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Embedding column of a --query Parquet file (default: its only list column).", show_default=False)]
PosColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Embedding column of a --pos Parquet file.", show_default=False)]
NegColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Embedding column of a --neg Parquet file (a list of vectors per row when paired).", show_default=False)]
IdColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Id column of the --query (else --pos) Parquet file, for the per-sample output.", show_default=False)]
SimilarityOpt = Annotated[SimilarityChoice, typer.Option("--similarity", "-s", metavar="NAME", rich_help_panel=ENGINE, help="cosine (rows L2-normalised), dot (raw inner product) or l2 (−squared distance).")]
InBatchOpt = Annotated[bool, typer.Option("--in-batch", metavar="", rich_help_panel=NEGATIVES, help="Pool the batch's positives with --neg: paired hard negatives (DPR, MNRL) or a shared queue (MoCo).")]
BatchSizeOpt = Annotated[int | None, typer.Option(metavar="INT", rich_help_panel=NEGATIVES, help="Split the pairs into consecutive batches of this size for in-batch negatives, as a training step would.", show_default=False)]
SymmetricOpt = Annotated[bool, typer.Option("--symmetric", metavar="", rich_help_panel=NEGATIVES, help="Average the query→positive and positive→query losses (CLIP); in-batch only.")]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", rich_help_panel=ENGINE, help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[DtypeChoice, typer.Option(metavar="DTYPE", rich_help_panel=ENGINE, help="float32, float64, bfloat16 or float16: the precision of the similarity computation; reductions stay float32 or better. bfloat16 and float16 are faster only on a GPU or a CPU with bf16 matrix units (AMX).")]
AllowTf32Opt = Annotated[bool, typer.Option("--allow-tf32", metavar="", rich_help_panel=ENGINE, help="On CUDA, let float32 matrix products use TF32 (faster, less exact).")]
MaxMemoryOpt = Annotated[str, typer.Option(metavar="SIZE", rich_help_panel=ENGINE, help="Working-memory budget for score blocks, e.g. 512MiB or 4GB.")]
PosIdsOpt = Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=MASKING, help="Ids of the positives (N,), .npy: an in-batch candidate or hard negative with the query's positive id is not a negative.", show_default=False)]
NegIdsOpt = Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=MASKING, help="Ids of the negatives, .npy: (N, M) paired or (K,) shared.", show_default=False)]
PosIdColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=MASKING, help="Positive-id column of the --pos Parquet file (instead of --pos-ids).", show_default=False)]
NegIdColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=MASKING, help="Negative-id column of the --neg Parquet file (instead of --neg-ids).", show_default=False)]
QueryIdsOpt = Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=MASKING, help="Query ids (N,), .npy: rows with the same id are one query with several positives.", show_default=False)]
QueryIdColOpt = Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=MASKING, help="Query-id column of the --query Parquet file (instead of --query-ids).", show_default=False)]
MultiPositiveOpt = Annotated[MultiPositive, typer.Option(metavar="MODE", rich_help_panel=MASKING, help="ntxent or supcon, for several positives per query: ntxent leaves the other positives out of each pair's denominator (NTXentLoss); supcon keeps them and averages over the query's positives (SupConLoss).")]
MaskDuplicatesOpt = Annotated[bool, typer.Option("--mask-duplicates", metavar="", rich_help_panel=MASKING, help="Drop candidates bit-identical to the query's positive (else they tie with it).")]
AllowEmptyOpt = Annotated[bool, typer.Option("--allow-empty", metavar="", rich_help_panel=MASKING, help="Leave queries that masking left with no negative out of the aggregates (else an error).")]
RecallAtOpt = Annotated[str, typer.Option(metavar="LIST", rich_help_panel=REPORT, help="Cut-offs k for recall@k, comma-separated.")]
CiOpt = Annotated[bool, typer.Option("--ci", metavar="", rich_help_panel=REPORT, help="Add bootstrap 95% intervals of the mean loss, accuracy@1 and MRR.")]
BootstrapOpt = Annotated[int, typer.Option(metavar="INT", rich_help_panel=REPORT, help="Bootstrap resamples.")]
SeedOpt = Annotated[int, typer.Option(metavar="INT", rich_help_panel=REPORT, help="Seed of the resampling.")]
HubnessKOpt = Annotated[int, typer.Option(metavar="K", rich_help_panel=REPORT, help="The k of the k-occurrence whose skewness measures hubness (with --diagnostics).")]
WorstOpt = Annotated[int, typer.Option(metavar="K", rich_help_panel=REPORT, help="Report the K pairs with the highest loss.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", metavar="FORMAT", rich_help_panel=OUTPUTS, help="auto, table, json or csv; auto is a table on a terminal and JSON when piped.")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", metavar="PATH", rich_help_panel=OUTPUTS, help="Write the aggregate to this file instead of stdout (- is stdout).", show_default=False)]
PerSampleOpt = Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=OUTPUTS, help="Write per-sample rows to a .parquet, .csv or .jsonl file, or - for JSONL on stdout (the aggregate then goes to --output or stderr).", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", metavar="", rich_help_panel=OUTPUTS, help="No progress bar or notes on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", metavar="", rich_help_panel=OUTPUTS, help="Show the traceback of an error.")]

_CLI_ONLY = ("fmt", "output", "per_sample", "plot", "quiet", "debug", "run_file", "run_tag",
             "per_query")
"""Parameters that say where and how results are shown, not what is computed."""


def _options(parameters: dict[str, Any], *positional: str) -> dict[str, Any]:
    """A command's parameters as request options: everything but the display options and
    the positional inputs, with choices as their plain values."""
    return {name: value.value if isinstance(value, StrEnum) else value
            for name, value in parameters.items()
            if name not in (*_CLI_ONLY, *positional)}


# ---------------------------------------------------------------- rendering helpers


def _format(fmt: OutputFormat, output: str | None) -> OutputFormat:
    if fmt is not OutputFormat.AUTO:
        return fmt
    if output is not None:
        return OutputFormat.CSV if output.lower().endswith(".csv") else OutputFormat.JSON
    return OutputFormat.TABLE if sys.stdout.isatty() else OutputFormat.JSON


def _progress(quiet: bool) -> Callable[[int], Any]:
    from . import render

    def progress(total: int) -> Any:
        return render.progress(total, enabled=not quiet and sys.stderr.isatty())
    return progress


def _check_outputs(outputs: dict[str, str | None], inputs: list[str]) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, and a
    per-sample target without a writer."""
    from . import io, render
    from .distributed import launched

    render.check_per_sample_target(outputs.get("per_sample"), distributed=launched())
    distributed_target = outputs.get("per_sample") if launched() else None
    io.check_outputs({name: path for name, path in outputs.items()
                      if path != distributed_target}, inputs)


# ---------------------------------------------------------------- commands


def _version(value: bool) -> None:
    if value:
        print(f"infonce {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Score precomputed embeddings with the InfoNCE contrastive loss."""


@app.command(cls=_Command, epilog="Examples:\n\n  infonce score -q q.npy -p p.npy --neg n.npy --format json | jq .loss.mean\n\n  infonce score -q pairs.parquet --query-col query -p pairs.parquet --pos-col positive --id-col id --worst 5")
def score(
    query: QueryOpt,
    pos: PosOpt,
    neg: NegOpt = None,
    temperature: Annotated[str, typer.Option("--temperature", "-t", metavar="FLOAT|auto", rich_help_panel=ENGINE, help="Temperature τ > 0 (logits are similarities / τ), or auto to fit the loss-minimising τ and score at it.")] = "0.05",
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
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    recall_at: RecallAtOpt = "1,5,10",
    ci: CiOpt = False,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    worst: WorstOpt = 0,
    diagnostics: Annotated[bool, typer.Option("--diagnostics", metavar="", rich_help_panel=REPORT, help="Add the geometry of both sides (alignment, uniformity, effective rank, anisotropy), hubness and the calibration of the softmax (ECE).")] = False,
    hubness_k: HubnessKOpt = 10,
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    per_sample: PerSampleOpt = None,
    plot: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=OUTPUTS, help="Write a figure of the losses, ranks, calibration and similarities to a .svg, .html or .png file (.png needs matplotlib).", show_default=False)] = None,
    fail_above: Annotated[float | None, typer.Option(metavar="NATS", rich_help_panel=GATES, help="Exit 3 when the mean loss is above this (≥ 0), after printing the results.", show_default=False)] = None,
    fail_below_accuracy: Annotated[float | None, typer.Option(metavar="FRACTION", rich_help_panel=GATES, help="Exit 3 when accuracy@1 is below this (0 to 1), after printing the results.", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Per-sample and aggregate InfoNCE loss, ranks and retrieval metrics."""
    options = _options(locals(), "query", "pos", "neg")

    def build() -> Any:
        from .requests import score_request

        request = score_request(query, pos, neg, **options)
        if bootstrap != 1000 and not ci:
            raise UsageError(f"{arg('bootstrap')} sets the resamples of {arg('ci')}: add "
                             f"{arg('ci')}")
        from . import plots
        from .distributed import launched

        plots.check_figure_target("plot", plot)
        if plot is not None and launched():
            raise UsageError(f"{arg('plot')} draws every pair: run it in one process, "
                             "without torchrun")
        _check_outputs({"output": output, "per_sample": per_sample, "plot": plot},
                       request.inputs.paths())
        return request

    def show(result: Any) -> None:
        from . import figures, plots, render

        if per_sample is not None:
            render.write_per_sample(result.per_sample, per_sample, result.run)
        if plot is not None:
            plots.write_figure(figures.score_panels(result), plot)
        if result.run.leader:
            whole = result.run.world == 1  # a distributed rank holds its own rows only
            render.emit(render.score_output(result, _format(fmt, output),
                                            pictures=not quiet and output is None and whole),
                        output, to_stderr=per_sample == "-")
            if not quiet:
                render.print_notes(result.notes)

    _command(build, _runner("run_score", quiet), show, debug)


@app.command("sweep-temperature", cls=_Command, epilog="Examples:\n\n  infonce sweep-temperature -q q.npy -p p.npy --format table\n\n  infonce sweep-temperature -q q.npy -p p.npy --temperatures 0.02,0.05,0.1 --format csv")
def sweep_temperature(
    query: QueryOpt,
    pos: PosOpt,
    neg: NegOpt = None,
    temperatures: Annotated[str | None, typer.Option(metavar="LIST", rich_help_panel=GRID, help="Explicit grid, comma-separated (e.g. 0.01,0.02,0.05); overrides --min/--max/--steps.", show_default=False)] = None,
    minimum: Annotated[float, typer.Option("--min", metavar="FLOAT", rich_help_panel=GRID, help="Smallest grid temperature.")] = 0.01,
    maximum: Annotated[float, typer.Option("--max", metavar="FLOAT", rich_help_panel=GRID, help="Largest grid temperature.")] = 1.0,
    steps: Annotated[int, typer.Option(metavar="INT", rich_help_panel=GRID, help="Number of grid temperatures (2 to 10,000).")] = 50,
    spacing: Annotated[Spacing, typer.Option(metavar="SPACING", rich_help_panel=GRID, help="log or linear spacing of the grid in τ.")] = Spacing.LOG,
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
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    recall_at: RecallAtOpt = "1,5,10",
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    per_sample: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=OUTPUTS, help="Write per-sample rows at the optimum (else the best grid τ) to a .parquet, .csv or .jsonl file, or - for JSONL on stdout.", show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=OUTPUTS, help="Write a figure of loss against τ to a .svg, .html or .png file (.png needs matplotlib: pip install 'infonce-cli\\[plot]').", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Mean loss at every temperature of a grid from one similarity pass, and the exact optimum."""
    options = _options(locals(), "query", "pos", "neg", "minimum", "maximum")
    options.update({"min": minimum, "max": maximum, "per_sample": per_sample is not None})

    def build() -> Any:
        from . import plots
        from .requests import sweep_request

        request = sweep_request(query, pos, neg, **options)
        plots.check_figure_target("plot", plot)
        _check_outputs({"output": output, "per_sample": per_sample, "plot": plot},
                       request.inputs.paths())
        return request

    def show(result: Any) -> None:
        from . import figures, plots, render

        if per_sample is not None:
            render.write_per_sample(result.per_sample, per_sample, result.run)
        if not result.run.leader:
            return
        if plot is not None:
            plots.write_figure((figures.sweep_curve(result),), plot)
        out_format = _format(fmt, output)
        render.emit(render.sweep_output(result, out_format), output,
                    to_stderr=per_sample == "-")
        if not quiet:
            notes = list(result.notes)
            if result.optimum.temperature is None and out_format is not OutputFormat.TABLE:
                notes.append(f"no finite optimum: {result.optimum.reason}")
            render.print_notes(notes)

    _command(build, _runner("run_sweep", quiet), show, debug)


@app.command(cls=_Command, epilog="Examples:\n\n  infonce report -q q.npy -p p.npy --neg n.npy -o report.html\n\n  infonce report -q pairs.parquet --query-col query -p pairs.parquet --pos-col positive --id-col id -o review.html")
def report(
    query: QueryOpt,
    pos: PosOpt,
    output: Annotated[str, typer.Option("--output", "-o", metavar="PATH", rich_help_panel=OUTPUTS, help="The .html file to write: one self-contained page, no network needed to view it.", show_default=False)],
    neg: NegOpt = None,
    temperature: Annotated[str, typer.Option("--temperature", "-t", metavar="FLOAT|auto", rich_help_panel=ENGINE, help="Temperature τ of the score and its diagnostics, or auto for the loss-minimising τ.")] = "0.05",
    temperatures: Annotated[str | None, typer.Option(metavar="LIST", rich_help_panel=GRID, help="Explicit sweep grid, comma-separated; overrides --min/--max/--steps.", show_default=False)] = None,
    minimum: Annotated[float, typer.Option("--min", metavar="FLOAT", rich_help_panel=GRID, help="Smallest sweep temperature.")] = 0.01,
    maximum: Annotated[float, typer.Option("--max", metavar="FLOAT", rich_help_panel=GRID, help="Largest sweep temperature.")] = 1.0,
    steps: Annotated[int, typer.Option(metavar="INT", rich_help_panel=GRID, help="Number of sweep temperatures (2 to 10,000).")] = 50,
    spacing: Annotated[Spacing, typer.Option(metavar="SPACING", rich_help_panel=GRID, help="log or linear spacing of the sweep grid in τ.")] = Spacing.LOG,
    in_batch: InBatchOpt = False,
    batch_size: BatchSizeOpt = None,
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
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    recall_at: RecallAtOpt = "1,5,10",
    worst: Annotated[int, typer.Option(metavar="K", rich_help_panel=REPORT, help="The K pairs with the highest loss, with their ids and hardest negatives.")] = 10,
    hubness_k: HubnessKOpt = 10,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """One self-contained HTML page to review a model: the score, its diagnostics, the
    sweep with its optimum, the pictures and the worst cases."""
    options = _options(locals(), "query", "pos", "neg", "minimum", "maximum", "output")
    options.update({"min": minimum, "max": maximum})

    def build() -> Any:
        from pathlib import Path

        from .requests import report_request

        if Path(output).suffix.lower() not in (".html", ".htm"):
            raise UsageError(f"{arg('output')} {output}: use a .html file name")
        request = report_request(query, pos, neg, **options)
        _check_outputs({"output": output}, request.inputs.paths())
        return request

    def show(result: Any) -> None:
        from . import io, render
        from .html_report import report_html

        page = report_html(result).encode()

        def write(handle: Any) -> None:
            handle.write(page)

        io.write_atomically(output, write)
        if not quiet:
            render.print_notes([*result.score.notes, f"wrote {output}"])

    _command(build, _runner("run_report", quiet), show, debug)


@app.command(cls=_Command, epilog="Examples:\n\n  infonce compare --query-a a/q.npy --pos-a a/p.npy --query-b b/q.npy --pos-b b/p.npy --metric mrr --fail-if-worse\n\n  infonce compare --qrels qrels.tsv --query-a a/q.parquet --corpus-a a/c.parquet --query-b b/q.parquet --corpus-b b/c.parquet --query-b c/q.parquet --corpus-b c/c.parquet")
def compare(
    query_a: Annotated[str, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model A's query embeddings (the baseline).", show_default=False)],
    query_b: Annotated[list[str], typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model B's query embeddings (same pairs or queries, same order; any dimension). With --qrels, repeat --query-b and --corpus-b for more models, each compared with A.", show_default=False)],
    pos_a: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model A's positive embeddings (pairs).", show_default=False)] = None,
    pos_b: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model B's positive embeddings (pairs).", show_default=False)] = None,
    neg_a: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=NEGATIVES, help="Model A's negatives (paired or shared).", show_default=False)] = None,
    neg_b: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=NEGATIVES, help="Model B's negatives.", show_default=False)] = None,
    corpus_a: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model A's corpus embeddings (with --qrels).", show_default=False)] = None,
    corpus_b: Annotated[list[str] | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Model B's corpus embeddings (with --qrels); one per --query-b.", show_default=False)] = None,
    qrels: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Judgements shared by the models: compare retrieval from queries and corpora instead of pairs.", show_default=False)] = None,
    temperature: Annotated[str, typer.Option("--temperature", "-t", metavar="FLOAT|auto", rich_help_panel=ENGINE, help="Temperature τ > 0 for every model, or auto to fit each model's own.")] = "0.05",
    in_batch: InBatchOpt = False,
    batch_size: BatchSizeOpt = None,
    symmetric: SymmetricOpt = False,
    query_key: QueryKeyOpt = None,
    pos_key: PosKeyOpt = None,
    neg_key: NegKeyOpt = None,
    corpus_key: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Array name inside the corpus .npz files.", show_default=False)] = None,
    query_col: QueryColOpt = None,
    pos_col: PosColOpt = None,
    neg_col: NegColOpt = None,
    corpus_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Embedding column of the corpus Parquet files.", show_default=False)] = None,
    pos_ids: PosIdsOpt = None,
    neg_ids: NegIdsOpt = None,
    pos_id_col: PosIdColOpt = None,
    neg_id_col: NegIdColOpt = None,
    query_ids: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Query ids with --qrels (text or .npy; default: a Parquet id column, else row numbers).", show_default=False)] = None,
    corpus_ids: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Document ids with --qrels, as --query-ids.", show_default=False)] = None,
    query_id_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Id column of the Parquet query inputs with --qrels.", show_default=False)] = None,
    corpus_id_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Id column of the Parquet corpora with --qrels.", show_default=False)] = None,
    ignore_unknown: Annotated[bool, typer.Option("--ignore-unknown", metavar="", rich_help_panel=INPUTS, help="With --qrels: drop judgements of unknown queries, count unknown relevant documents as never retrieved.")] = False,
    mask_duplicates: MaskDuplicatesOpt = False,
    allow_empty: AllowEmptyOpt = False,
    multi_positive: MultiPositiveOpt = MultiPositive.NTXENT,
    min_relevance: Annotated[int, typer.Option(metavar="INT", rich_help_panel=REPORT, help="With --qrels: relevance a document needs to be a positive of the loss.")] = 1,
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    recall_at: RecallAtOpt = "1,5,10",
    at: Annotated[str, typer.Option(metavar="LIST", rich_help_panel=REPORT, help="With --qrels: cut-offs k of the metrics, comma-separated.")] = "1,5,10,100",
    gain: Annotated[str, typer.Option(metavar="GAIN", rich_help_panel=REPORT, help="With --qrels: nDCG gain, linear or exponential.")] = "linear",
    bootstrap: Annotated[int, typer.Option(metavar="INT", rich_help_panel=REPORT, help="Paired bootstrap resamples (and sign-flip permutations).")] = 1000,
    seed: SeedOpt = 0,
    correction: Annotated[str, typer.Option(metavar="METHOD", rich_help_panel=REPORT, help="With --qrels: how p-values are adjusted over the models, per metric: holm or bonferroni.")] = "holm",
    metric: Annotated[str | None, typer.Option(metavar="METRIC", rich_help_panel=GATES, help="The metric --fail-if-worse judges (default: loss_mean for pairs, ndcg_at_10 with --qrels).", show_default=False)] = None,
    fail_if_worse: Annotated[bool, typer.Option("--fail-if-worse", metavar="", rich_help_panel=GATES, help="Exit 3 when B (any model, with --qrels) is significantly worse than A on --metric.")] = False,
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare embedding models on the same data: every metric of each, and B − A with paired-bootstrap intervals and p-values.

    Pairs: --query-a/--pos-a against --query-b/--pos-b. Retrieval: --qrels with --query-a/--corpus-a and one or more --query-b/--corpus-b, p-values adjusted over the models. Input options (columns, keys, ids) apply to every model.
    """
    options = _options(locals(), "query_a", "pos_a", "query_b", "pos_b", "neg_a", "neg_b",
                       "corpus_a", "corpus_b", "qrels")
    if options["metric"] is None:
        del options["metric"]

    def build() -> Any:
        from .requests import compare_request, retrieval_compare_request

        if qrels is not None:
            _refuse_options(options, compare, _PAIRS_ONLY, "with --qrels")
            if corpus_a is None or not corpus_b:
                raise UsageError(f"{arg('qrels')} compares retrieval: give {arg('corpus_a')} "
                                 f"and a {arg('corpus_b')} for each {arg('query_b')}")
            if any(value is not None for value in (pos_a, pos_b, neg_a, neg_b)):
                raise UsageError(f"{arg('qrels')} compares retrieval from corpora: leave out "
                                 "the positives and negatives of pairs")
            request: Any = retrieval_compare_request(
                [query_a, *query_b], [corpus_a, *corpus_b], qrels,
                **{k: v for k, v in options.items() if k not in _PAIRS_ONLY})
            inputs = [path for model in request.models for path in model.paths()]
        else:
            _refuse_options(options, compare, _RETRIEVAL_ONLY, f"without {arg('qrels')}")
            if len(query_b) != 1 or corpus_a is not None or corpus_b:
                raise UsageError(f"several models, and corpora, are compared with "
                                 f"{arg('qrels')}; pairs compare one {arg('query_b')}")
            if pos_a is None or pos_b is None:
                raise UsageError(f"give {arg('pos_a')} and {arg('pos_b')} (pairs), or "
                                 f"{arg('qrels')} with corpora (retrieval)")
            request = compare_request(query_a, pos_a, query_b[0], pos_b, neg_a, neg_b,
                                      **{k: v for k, v in options.items()
                                         if k not in _RETRIEVAL_ONLY})
            inputs = request.a.paths() + request.b.paths()
        _check_outputs({"output": output}, inputs)
        return request

    def run(request: Any) -> Any:
        from .requests import RetrievalCompareRequest

        name = "run_retrieval_compare" if isinstance(request, RetrievalCompareRequest) \
            else "run_compare"
        return _runner(name, quiet)(request)

    def show(result: Any) -> None:
        from . import render

        render.emit(render.compare_output(result, _format(fmt, output)), output)
        if not quiet:
            render.print_notes(getattr(result, "notes", ()))

    _command(build, run, show, debug)


_PAIRS_ONLY = ("in_batch", "batch_size", "symmetric", "pos_key", "neg_key", "pos_col",
               "neg_col", "pos_ids", "neg_ids", "pos_id_col", "neg_id_col", "mask_duplicates",
               "allow_empty", "recall_at")
_RETRIEVAL_ONLY = ("corpus_key", "corpus_col", "query_ids", "corpus_ids", "query_id_col",
                   "corpus_id_col", "ignore_unknown", "min_relevance", "at", "gain",
                   "correction", "multi_positive")


def _refuse_options(options: dict[str, Any], command: Callable[..., Any],
                    names: tuple[str, ...], where: str) -> None:
    """Refuse options of the other layout that were set (differ from their default)."""
    import inspect as signatures

    parameters = signatures.signature(command).parameters
    for name in names:
        default = parameters[name].default
        value = options.get(name)
        if value != (default.value if isinstance(default, StrEnum) else default):
            raise UsageError(f"{arg(name)} does not apply {where}")


@app.command(cls=_Command, epilog="Examples:\n\n  infonce retrieval -q queries.parquet -c corpus.parquet --qrels qrels.tsv --format table\n\n  infonce retrieval -q q.parquet -c c.parquet --qrels qrels.trec --run run.trec --fail-below ndcg_at_10=0.3")
def retrieval(
    query: Annotated[str, typer.Option("--query", "-q", metavar="PATH", rich_help_panel=INPUTS, help="Query embeddings (Q, d): .npy, .npz, Parquet or Arrow; - for stdin.", show_default=False)],
    corpus: Annotated[str, typer.Option("--corpus", "-c", metavar="PATH", rich_help_panel=INPUTS, help="Corpus embeddings (D, d): every document is a candidate of every query.", show_default=False)],
    qrels: Annotated[str, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Relevance judgements: BEIR TSV, TREC qrels, JSONL or Parquet (detected by content).", show_default=False)],
    query_key: QueryKeyOpt = None,
    corpus_key: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Array name inside a --corpus .npz file.", show_default=False)] = None,
    query_col: QueryColOpt = None,
    corpus_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Embedding column of a --corpus Parquet file (default: its only list column).", show_default=False)] = None,
    query_ids: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Query ids: a text file of one id per line, or .npy (default: an id column of a Parquet --query, else the row numbers).", show_default=False)] = None,
    corpus_ids: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=INPUTS, help="Document ids, as --query-ids.", show_default=False)] = None,
    query_id_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Id column of a Parquet --query (default: the one named id, _id or query-id).", show_default=False)] = None,
    corpus_id_col: Annotated[str | None, typer.Option(metavar="NAME", rich_help_panel=INPUTS, help="Id column of a Parquet --corpus (default: the one named id, _id or corpus-id).", show_default=False)] = None,
    ignore_unknown: Annotated[bool, typer.Option("--ignore-unknown", metavar="", rich_help_panel=INPUTS, help="Drop (and count) judgements naming a query or document that is not in the inputs, instead of refusing them.")] = False,
    temperature: Annotated[str, typer.Option("--temperature", "-t", metavar="FLOAT|auto", rich_help_panel=ENGINE, help="Temperature τ > 0 of the loss over the corpus, or auto to fit it.")] = "0.05",
    multi_positive: MultiPositiveOpt = MultiPositive.NTXENT,
    min_relevance: Annotated[int, typer.Option(metavar="INT", rich_help_panel=REPORT, help="Relevance a document needs to be a positive of the loss (metrics count relevance ≥ 1).")] = 1,
    at: Annotated[str, typer.Option(metavar="LIST", rich_help_panel=REPORT, help="Cut-offs k of the metrics, comma-separated.")] = "1,5,10,100",
    gain: Annotated[str, typer.Option(metavar="GAIN", rich_help_panel=REPORT, help="nDCG gain of a relevance grade: linear (rel) or exponential (2^rel − 1).")] = "linear",
    diagnostics: Annotated[bool, typer.Option("--diagnostics", metavar="", rich_help_panel=REPORT, help="Add the geometry of the queries and the corpus (alignment of the relevant pairs, uniformity, effective rank, anisotropy), the corpus's hubness and the calibration of the softmax.")] = False,
    hubness_k: HubnessKOpt = 10,
    top_k: Annotated[int, typer.Option(metavar="K", rich_help_panel=OUTPUTS, help="Documents per query in the --run file.")] = 100,
    similarity: SimilarityOpt = SimilarityChoice.COSINE,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.FLOAT32,
    allow_tf32: AllowTf32Opt = False,
    max_memory: MaxMemoryOpt = "512MiB",
    fmt: FormatOpt = OutputFormat.AUTO,
    output: OutputOpt = None,
    run_file: Annotated[str | None, typer.Option("--run", metavar="PATH", rich_help_panel=OUTPUTS, help="Write the top-k documents of every query as a TREC run file (qid Q0 docid rank score tag), or - for stdout.", show_default=False)] = None,
    run_tag: Annotated[str, typer.Option(metavar="TAG", rich_help_panel=OUTPUTS, help="The tag column of the --run file.")] = "infonce",
    per_query: Annotated[str | None, typer.Option(metavar="PATH", rich_help_panel=OUTPUTS, help="Write every query's metrics to a .parquet, .csv or .jsonl file, or - for JSONL on stdout (the aggregate then goes to --output or stderr).", show_default=False)] = None,
    fail_below: Annotated[str | None, typer.Option(metavar="METRIC=VALUE", rich_help_panel=GATES, help="Exit 3 when a metric is below a value (0 to 1), e.g. ndcg_at_10=0.4; comma-separated for several.", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Exact retrieval over a whole corpus from queries, a corpus and qrels: graded metrics, InfoNCE over the corpus, a TREC run."""
    options = _options(locals(), "query", "corpus", "qrels")
    options["run"] = run_file is not None

    def build() -> Any:
        from . import render
        from .requests import retrieval_request

        request = retrieval_request(query, corpus, qrels, **options)
        render.check_per_sample_target(per_query, distributed=False, argument="per_query")
        if run_file is not None:
            render.check_run_tag(run_tag)
        _check_outputs({"output": output, "run": run_file, "per_query": per_query},
                       request.inputs.paths())
        return request

    def show(result: Any) -> None:
        from . import render

        if run_file is not None:
            render.write_trec_run(result.top, run_file, run_tag)
        if per_query is not None:
            render.write_per_sample(result.per_query, per_query, result.run)
        render.emit(render.retrieval_output(result, _format(fmt, output)), output,
                    to_stderr="-" in (run_file, per_query))
        if not quiet:
            render.print_notes(result.notes)

    _command(build, _runner("run_retrieval", quiet), show, debug)


@app.command(cls=_Command, epilog="Example:\n\n  infonce inspect sample_data/pairs.parquet sample_data/hard_negatives.npy")
def inspect(
    files: Annotated[list[str], typer.Argument(metavar="PATH", help="Embedding files (.npy, .npz, Parquet, Arrow).", show_default=False)],
    fmt: FormatOpt = OutputFormat.AUTO,
    debug: DebugOpt = False,
) -> None:
    """Shape, dtype, Parquet schema, row norms and NaN/Inf/zero-norm counts of each file.

    Every file is reported; the exit code is 1 if any could not be read.
    """
    from . import io, render

    described: list[dict[str, Any]] = []
    failed = 0

    def build() -> None:
        nonlocal failed
        _resume_gc()
        for path in files:
            try:
                described.append(io.describe_file(path))
            except InfonceError as exc:  # reported, and the next file described
                failed += 1
                print(f"error: {_one_line(_message(exc))}", file=sys.stderr)

    def show(_: Any) -> None:
        render.emit(render.inspect_output(described, _format(fmt, None)), None)

    _command(build, lambda request: None, show, debug)
    if failed:
        raise typer.Exit(int(ExitCode.DATA_ERROR))


def _runner(name: str, quiet: bool) -> Callable[[Any], Any]:
    """The pipeline function ``name`` of runs.py, with a progress bar on a terminal."""
    def run(request: Any) -> Any:
        from . import runs

        _resume_gc()
        return getattr(runs, name)(request, _progress(quiet))
    return run


def main() -> None:
    """Entry point of the ``infonce`` command. The garbage collector is paused while the
    command's modules are imported (torch's above all: collecting among their many objects,
    none of them garbage, takes a tenth of a second) and resumed before any work."""
    gc.disable()
    try:
        _app_for(sys.argv[1:])()
    finally:
        _resume_gc()


def _resume_gc() -> None:
    """Collect again, leaving what has been imported so far out of later collections."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command that ``args`` name (the whole app when they name none):
    typer builds the options of every command it holds before parsing, which is a
    measurable share of a short run's start-up."""
    chosen = [info for info in app.registered_commands if args and _name_of(info) == args[0]]
    if not chosen:
        return app
    single = typer.Typer(**_APP_SETTINGS)
    single.registered_callback = app.registered_callback
    single.registered_commands = chosen
    return single


def _name_of(info: Any) -> str:
    """A registered command's name as typed: its own, or its function's with dashes."""
    return str(info.name or info.callback.__name__.lower().replace("_", "-"))
