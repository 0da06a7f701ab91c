"""The report page: one self-contained HTML file (inline CSS and SVG, nothing to load, no
scripts) of a score with its diagnostics and a temperature sweep, for a person to read or
attach to a review. No torch: the panels come from :mod:`.figures`, drawn by :mod:`.svg`.

Every text that comes from the data (paths, ids, notes) is escaped.
"""

from __future__ import annotations

import math
from dataclasses import replace

from . import __version__, figures, svg
from .errors import Note
from .figures import Line, Points
from .results import Diagnostics, ReportResult, ScoreResult, SweepResult

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial,
  sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 28px 24px 48px; }
header { border-bottom: 2px solid #d9dde4; padding-bottom: 14px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 19px; margin: 30px 0 10px; }
.muted { color: #5b6475; font-size: 13px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px;
  margin: 12px 0 0; font-size: 14px; }
dl.facts dt { color: #5b6475; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px;
  border: 1px solid #e1e4ea; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e9ecf1; vertical-align: top;
  text-align: left; }
th { background: #eef1f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
td.better { white-space: nowrap; color: #3d4a5f; }
td.why { color: #4a5365; font-size: 13px; }
td.id { overflow-wrap: anywhere; max-width: 300px; }
table.compact { width: auto; min-width: 60%; }
table.compact td.num, table.compact th.num { padding-left: 22px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
  gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid #e1e4ea; padding: 4px; }
figure svg { display: block; width: 100%; height: auto; }
.sweep { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.sweep figure { flex: 0 1 660px; }
.sweep dl.facts { margin-top: 4px; }
.head { display: grid; grid-template-columns: 1fr 1fr; gap: 0 32px; }
.head h3 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.04em;
  color: #5b6475; margin: 14px 0 0; }
td:first-child { white-space: nowrap; }
ul.notes li { margin: 4px 0; }
footer { margin-top: 36px; color: #7a8292; font-size: 12px; }
"""

_DIAGNOSTICS = {
    "alignment": ("lower", "Mean squared distance between a query and its positive (unit "
                           "vectors, 0 to 4): how close the pairs sit."),
    "uniformity": ("lower", "log of the mean exp(−2‖x − y‖²) over pairs of different rows "
                            "(at most 0): how evenly the embeddings spread over the sphere."),
    "effective rank": ("higher", "How many dimensions the embeddings really use (RankMe: "
                                 "the entropy of the singular values, at most min(N, d)); "
                                 "small means collapse."),
    "anisotropy": ("near 0", "Mean cosine between two different embeddings; near 1 means "
                             "they all point one way (a narrow cone)."),
    "hubness skewness": ("near 0", "Skewness of how often each candidate is among a query's "
                                   "k best; large means a few hubs are retrieved for "
                                   "everyone."),
    "antihub share": ("lower", "Share of candidates never among any query's k best: "
                               "documents that cannot be found."),
    "ECE": ("lower", "Expected calibration error at this τ: the gap between the softmax's "
                     "top-1 probability and the top-1 accuracy, averaged over bins."),
    "MCE": ("lower", "Maximum calibration error: the largest gap of any bin."),
}


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _general(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _cell(html: str, kind: str = "", span: int = 1) -> str:
    """A table cell of already escaped ``html``, with a class (``num``: a number)."""
    attributes = (f' class="{kind}"' if kind else "") + (f' colspan="{span}"' if span > 1 else "")
    return f"<td{attributes}>{html}</td>"


def _row(cells: list[tuple[str, str]]) -> str:
    """A table row of (class, already escaped html) cells."""
    return "<tr>" + "".join(_cell(html, kind) for kind, html in cells) + "</tr>"


def _table(headings: list[str], rows: list[str], numeric: set[int] | None = None,
           kind: str = "") -> str:
    numeric = numeric or set()
    head = "".join(f'<th class="num">{svg.escape(h)}</th>' if i in numeric
                   else f"<th>{svg.escape(h)}</th>" for i, h in enumerate(headings))
    opening = f'<table class="{kind}">' if kind else "<table>"
    return f"{opening}\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + \
        "\n</tbody>\n</table>"


def _facts(items: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{svg.escape(k)}</dt><dd>{v}</dd>"
                                          for k, v in items) + "</dl>"


def _header(result: ReportResult) -> str:
    score, sweep = result.score, result.sweep
    run = score.run
    inputs = [(role, f"<code>{svg.escape(value)}</code>") for role, value in
              result.inputs.items()]
    candidates = (str(score.num_candidates_min) if score.num_candidates_min ==
                  score.num_candidates_max else
                  f"{score.num_candidates_min} to {score.num_candidates_max}")
    temperature = _general(score.temperature) + (" (fitted)" if score.temperature_fitted
                                                 else "")
    facts = [("pairs", str(run.n)), ("similarity", run.similarity),
             ("negatives", run.negatives), ("candidates per query", candidates),
             ("temperature τ", temperature), ("device", run.device), ("dtype", run.dtype)]
    if run.batch_size is not None:
        facts.append(("batch size", str(run.batch_size)))
    if run.symmetric:
        facts.append(("symmetric", "yes"))
    if score.masked is not None:
        facts.append(("masked negatives", f"{score.masked} ({score.skipped} queries skipped)"))
    rows = sweep.rows
    facts.append(("sweep", f"{len(rows)} temperatures, {_general(rows[0].temperature)} to "
                           f"{_general(rows[-1].temperature)}" if rows else "no temperatures"))
    return ("<header>\n<h1>InfoNCE report</h1>\n"
            f'<div class="muted">infonce-cli {svg.escape(__version__)}</div>\n'
            '<div class="head">\n<div><h3>Inputs</h3>' + _facts(inputs) + "</div>\n"
            "<div><h3>Run</h3>" + _facts([(k, svg.escape(v)) for k, v in facts])
            + "</div>\n</div>\n</header>")


def _aggregate(score: ScoreResult) -> str:
    loss, ranks = score.loss, score.retrieval
    chance = score.mi_ceiling_nats
    rows: list[tuple[str, str, str]] = [
        ("mean loss (nats)", _number(loss.mean),
         f"InfoNCE loss averaged over the pairs; lower is better (log |C| = "
         f"{_number(chance, 3)} is chance)."),
        ("loss std", _number(loss.std), "Spread of the per-sample losses (ddof = 0)."),
        ("loss median", _number(loss.median), "Half the pairs have a lower loss."),
        ("loss p05 · p95", f"{_number(loss.p05)} · {_number(loss.p95)}",
         "The easiest and the hardest 5% of pairs start here."),
        ("accuracy@1", _number(ranks.accuracy_at_1),
         "Share of queries whose positive outscores every negative; higher is better."),
    ]
    rows += [(f"recall@{k}", _number(v), f"Share of positives ranked in the top {k}.")
             for k, v in sorted(ranks.recall_at.items())]
    rows += [
        ("MRR", _number(ranks.mrr), "Mean of 1 / rank of the positive; higher is better."),
        ("nDCG@10", _number(ranks.ndcg_at_10), "1 / log2(1 + rank) within the top 10, "
                                               "averaged; higher is better."),
        ("mean rank", _general(ranks.mean_rank), "Average rank of the positive (1 is best)."),
        ("median rank", _general(ranks.median_rank), "Half the positives rank at or above "
                                                     "this."),
        ("MI lower bound", f"{_number(score.mi_lower_bound_nats, 3)} nats · "
                           f"{_number(score.mi_lower_bound_bits, 3)} bits",
         f"log |C| − loss: a lower bound on the mutual information between queries and "
         f"positives; higher is better, at most {_number(chance, 3)} nats."),
    ]
    body = [_row([("", svg.escape(name)), ("num", svg.escape(value)),
                  ("why", svg.escape(why))]) for name, value, why in rows]
    return ('<section id="aggregate">\n<h2>Aggregate</h2>\n'
            + _table(["metric", "value", "what it means"], body, {1}) + "\n</section>")


def _diagnostics(diagnostics: Diagnostics | None) -> str:
    if diagnostics is None:
        return ('<section id="diagnostics">\n<h2>Diagnostics</h2>\n'
                '<p class="muted">Not computed for this run.</p>\n</section>')
    d = diagnostics
    values: list[tuple[str, float, float | None]] = [
        ("alignment", d.alignment, None),
        ("uniformity", d.uniformity.query, d.uniformity.pos),
        ("effective rank", d.effective_rank.query, d.effective_rank.pos),
        ("anisotropy", d.anisotropy.query, d.anisotropy.pos),
    ]
    if d.hubness is not None:
        values += [("hubness skewness", d.hubness.skewness, None),
                   ("antihub share", d.hubness.antihub_share, None)]
    values += [("ECE", d.calibration.ece, None), ("MCE", d.calibration.mce, None)]
    body = []
    for name, query, pos in values:
        better, why = _DIAGNOSTICS[name]
        if name.startswith(("hubness", "antihub")) and d.hubness is not None:
            why = why.replace("k best", f"{d.hubness.k} best")
        digits = 1 if name == "effective rank" else 4
        cells = (_cell(_number(query, digits), "num") + _cell(_number(pos, digits), "num")
                 if pos is not None else _cell(_number(query), "num", span=2))
        body.append(f"<tr>{_cell(svg.escape(name))}{cells}"
                    f"{_cell(svg.escape(better), 'better')}{_cell(svg.escape(why), 'why')}</tr>")
    return ('<section id="diagnostics">\n<h2>Diagnostics</h2>\n'
            + _table(["diagnostic", "queries", "positives", "better", "what it means"], body,
                     {1, 2}) + "\n</section>")


def sweep_panel(sweep: SweepResult, temperature: float | None = None) -> figures.Panel:
    """The sweep's curve with its optimum, the τ of lowest ECE (when the sweep rated it)
    and ``temperature`` (the scored τ) as a dashed line when it lies inside the grid."""
    panel = figures.sweep_curve(sweep)
    series = list(panel.series)
    calibrated = sweep.calibration_optimum
    if calibrated is not None:
        series.append(Points(f"lowest ECE τ = {calibrated.temperature:.4g}",
                             (calibrated.temperature,), (calibrated.loss_mean,)))
    losses = [row.loss_mean for row in sweep.rows if math.isfinite(row.loss_mean)]
    grid = [row.temperature for row in sweep.rows]
    if temperature is not None and losses and min(grid) <= temperature <= max(grid):
        series.append(Line(f"scored at τ = {temperature:.4g}", (temperature, temperature),
                           (min(losses), max(losses)), dashed=True))
    return replace(panel, series=tuple(series))


def _sweep(result: ReportResult) -> str:
    sweep = result.sweep
    optimum = sweep.optimum
    if optimum.temperature is None:
        facts = [("loss-minimising τ", f"none: {optimum.reason}")]
    else:
        state = "" if optimum.converged else " (not converged)"
        facts = [("loss-minimising τ", f"{optimum.temperature:.4g}{state}"),
                 ("mean loss there", _number(optimum.loss_mean))]
    facts.append(("best grid τ", f"{sweep.best_grid.temperature:.4g}"))
    calibrated = sweep.calibration_optimum
    if calibrated is not None:
        facts += [("lowest ECE at τ", f"{calibrated.temperature:.4g}"),
                  ("ECE there", _number(calibrated.ece))]
    facts.append(("scored at τ", _general(result.score.temperature)))
    panel = sweep_panel(sweep, result.score.temperature)
    return ('<section id="temperature">\n<h2>Temperature</h2>\n<div class="sweep">'
            f"<figure>{svg.panel_svg(panel, width=660, height=330)}</figure>\n"
            + _facts([(k, svg.escape(v)) for k, v in facts]) + "</div>\n</section>")


def _distributions(score: ScoreResult) -> str:
    if score.per_sample is None:
        return ""
    panels = "\n".join(f"<figure>{svg.panel_svg(panel)}</figure>"
                       for panel in figures.score_panels(score))
    return ('<section id="distributions">\n<h2>Distributions</h2>\n'
            f'<div class="figures">\n{panels}\n</div>\n</section>')


def _label(value: object, index: int | None = None) -> str:
    """An id as text; without one, the row number (``#12``) when there is one."""
    if value is None:
        return "—" if index is None else f"#{index}"
    return str(value)


def _worst(score: ScoreResult) -> str:
    if score.worst is None:
        return ""
    body = [_row([("num", str(case.index)), ("id", svg.escape(_label(case.id))),
                  ("num", _number(case.loss)), ("num", _number(case.positive_score)),
                  ("id", svg.escape(_label(case.hardest_negative_id,
                                           case.hardest_negative_index))),
                  ("num", _number(case.hardest_negative_score)), ("num", str(case.rank))])
            for case in score.worst]
    return ('<section id="worst">\n<h2>Worst cases</h2>\n'
            '<p class="muted">The pairs with the highest loss, and the negative that scored '
            "highest against each.</p>\n"
            + _table(["index", "id", "loss", "positive score", "hardest negative",
                      "its score", "rank"], body, {0, 2, 3, 5, 6}, "compact") + "\n</section>")


def _notes(result: ReportResult) -> str:
    notes: list[str] = []
    for note in (*result.score.notes, *result.sweep.notes):
        text = note.for_command_line() if isinstance(note, Note) else str(note)
        if text not in notes:
            notes.append(text)
    items = "\n".join(f"<li>{svg.escape(text)}</li>" for text in notes) or \
        "<li>None: nothing in these results looked surprising.</li>"
    return f'<section id="notes">\n<h2>Notes</h2>\n<ul class="notes">\n{items}\n</ul>\n</section>'


def report_html(result: ReportResult) -> str:
    """The whole page, as text (UTF-8 when written)."""
    parts = [_header(result), _aggregate(result.score), _diagnostics(result.score.diagnostics),
             _sweep(result), _distributions(result.score), _worst(result.score),
             _notes(result)]
    body = "\n".join(part for part in parts if part)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>InfoNCE report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"{body}\n<footer>Written by infonce-cli {svg.escape(__version__)}.</footer>\n"
            "</main>\n</body>\n</html>\n")
