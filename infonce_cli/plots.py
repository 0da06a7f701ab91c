"""Figures written to files (.svg, .html, .png) and drawn as text for the terminal.

The panels come from :mod:`infonce_cli.figures`; .svg and .html are written by
:mod:`infonce_cli.svg` (standard library only), .png by matplotlib, an optional
dependency imported only when a .png is asked for.
"""

from __future__ import annotations

import io as bytesio
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import svg
from .errors import InfonceError, UsageError, arg
from .figures import Bars, Line, Panel
from .io import printable_path, write_atomically

FIGURE_SUFFIXES = (".png", ".svg", ".html")
BLOCKS = " ▁▂▃▄▅▆▇█"


def check_figure_target(argument: str, path: str | None) -> None:
    """Refuse, before any work, a figure file of a kind that cannot be written, or a .png
    when matplotlib is not installed; ``argument`` names the option in the message.

    >>> check_figure_target("plot", "curve.pdf")
    Traceback (most recent call last):
    infonce_cli.errors.UsageError: plot curve.pdf: use a .png, .svg or .html file name
    """
    if path is None:
        return
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise UsageError(f"{arg(argument)} {printable_path(path)}: use a .png, .svg or .html "
                         "file name")
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InfonceError(f"{arg(argument)} needs matplotlib for .png, which is not "
                               "installed: pip install 'infonce-cli[plot]' (or write .svg "
                               "or .html)") from None


def write_figure(panels: Sequence[Panel], path: str) -> None:
    """The panels in a grid, written atomically in the format the file's suffix names."""
    suffix = Path(path).suffix.lower()
    if suffix == ".svg":
        content = svg.figure_svg(panels).encode()
    elif suffix == ".html":
        content = figure_html(panels).encode()
    elif suffix == ".png":
        content = figure_png(panels)
    else:
        raise UsageError(f"{printable_path(path)}: use a .png, .svg or .html file name")

    def write(handle: IO[bytes]) -> None:
        handle.write(content)

    write_atomically(path, write)


def figure_html(panels: Sequence[Panel]) -> str:
    """A page holding the figure as inline SVG: nothing to load, no scripts."""
    title = svg.escape(panels[0].title if panels else "figure")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>body{{margin:24px;background:#fff}}"
            "svg{max-width:100%;height:auto}</style>\n</head>\n<body>\n"
            f"{svg.figure_svg(panels)}</body>\n</html>\n")


def figure_png(panels: Sequence[Panel], columns: int = 2, dpi: int = 100) -> bytes:
    """The panels drawn by matplotlib (Agg), as PNG bytes: the same panel size as the SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, grid = plt.subplots(rows, columns, squeeze=False, dpi=dpi,
                                figsize=(columns * svg.WIDTH / dpi, rows * svg.HEIGHT / dpi))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a glyph missing from the font is not an error
            for axes, panel in zip(grid.flat, panels, strict=False):
                _draw_panel(axes, panel)
            for axes in list(grid.flat)[len(panels):]:
                axes.set_axis_off()
            figure.tight_layout()
            buffer = bytesio.BytesIO()
            figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _plain(text: str) -> str:
    """Text matplotlib shows as written: ``$`` would start mathtext."""
    return text.replace("$", r"\$")


def _finite(xs: Sequence[float], ys: Sequence[float], log_x: bool, log_y: bool
            ) -> tuple[list[float], list[float]]:
    kept = [(x, y) for x, y in zip(xs, ys, strict=False)
            if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
            and (y > 0 or not log_y)]
    return [x for x, _ in kept], [y for _, y in kept]


def _draw_panel(axes: Any, panel: Panel) -> None:
    colors = svg.COLORS
    drawn_x: list[float] = []
    drawn_y: list[float] = []
    labelled = 0
    for index, series in enumerate(panel.series):
        color = colors[index % len(colors)]
        label = _plain(series.label) if series.label else None
        if isinstance(series, Bars):
            lows, highs = series.edges[:-1], series.edges[1:]
            bars = [(low, high, value) for low, high, value
                    in zip(lows, highs, series.heights, strict=False)
                    if all(math.isfinite(v) for v in (low, high, value)) and high > low
                    and value != 0 and (low > 0 or not panel.log_x)
                    and (value > 0 or not panel.log_y)]
            axes.bar([b[0] for b in bars], [b[2] for b in bars],
                     width=[b[1] - b[0] for b in bars], align="edge", color=color, alpha=0.55,
                     edgecolor=color, linewidth=0.6, label=label)
            drawn_x += [v for b in bars for v in b[:2]]
            drawn_y += [b[2] for b in bars]
        else:
            x, y = _finite(series.x, series.y, panel.log_x, panel.log_y)
            if isinstance(series, Line):
                axes.plot(x, y, color=color, linestyle="--" if series.dashed else "-",
                          linewidth=1.2 if series.dashed else 2,
                          marker="o" if len(x) == 1 else None, label=label)
            else:
                axes.plot(x, y, "o", color=color, markersize=7, markeredgecolor="white",
                          label=label)
            drawn_x += x
            drawn_y += y
        labelled += bool(series.label)
    if panel.log_x and drawn_x:
        axes.set_xscale("log")
    if panel.log_y and drawn_y:
        axes.set_yscale("log")
    axes.set_title(_plain(panel.title), fontsize=11, loc="left")
    axes.set_xlabel(_plain(panel.x_label))
    axes.set_ylabel(_plain(panel.y_label))
    axes.grid(True, axis="y", alpha=0.3)
    if labelled > 1:
        axes.legend(fontsize=8)


def text_histogram(panel: Panel, width: int = 48, rows: int = 3) -> str:
    """The first bars of a panel in block characters, ``rows`` lines high and about
    ``width`` columns wide (a bar gets several columns when there are few), with the range
    of x under them and the largest count beside them.

    >>> print(text_histogram(Panel("loss", "nats", "pairs",
    ...                             (Bars("pairs", (0.0, 1.0, 2.0, 3.0), (4.0, 8.0, 1.0)),)),
    ...                      width=6, rows=2))
    loss
      ██      max 8 pairs
    ████▂▂
    0    3  nats
    """
    bars = next((s for s in panel.series if isinstance(s, Bars)), None)
    heights = [h if math.isfinite(h) and h > 0 else 0.0 for h in bars.heights] if bars else []
    if bars is None or not heights:
        return f"{panel.title}\n(no data)"
    if len(heights) > width:  # merge neighbouring bars
        group = math.ceil(len(heights) / width)
        heights = [sum(heights[i:i + group]) for i in range(0, len(heights), group)]
    repeat = max(1, width // len(heights))
    top = max(heights)
    levels = [round(h / top * rows * 8) if top else 0 for h in heights]
    levels = [max(level, 1) if h > 0 else level for level, h in zip(levels, heights, strict=True)]
    lines = [panel.title]
    for row in range(rows - 1, -1, -1):
        line = "".join(BLOCKS[min(max(level - row * 8, 0), 8)] * repeat for level in levels)
        if row == rows - 1:
            line += f"    max {svg.number(top)} {panel.y_label}"
        lines.append(line.rstrip())
    low, high = svg.number(bars.edges[0]), svg.number(bars.edges[-1])
    span = len(levels) * repeat
    lines.append(low + " " * max(1, span - len(low) - len(high)) + high + "  " + panel.x_label)
    return "\n".join(lines)
