"""Panels drawn as SVG, written by hand with the standard library (no matplotlib).

:func:`panel_svg` draws one :class:`~infonce_cli.figures.Panel` (axes with round ticks,
log axes where the panel asks for them, title, axis labels, a legend when more than one
series has a label); :func:`figure_svg` sets several panels in a grid as one standalone
document. Values that are not finite (or not positive on a log axis) are left out, and
every text is XML-escaped, so any label can be drawn.

>>> from infonce_cli.figures import Bars, Panel
>>> panel = Panel("counts", "x", "pairs", (Bars("pairs", (0.0, 1.0, 2.0), (3.0, 1.0)),))
>>> panel_svg(panel).count('class="bar"')
2
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .figures import Bars, Line, Panel, Points

WIDTH, HEIGHT = 480, 300
COLORS = ("#3a6ea5", "#e07b39", "#4a9a5b", "#c94f4f", "#7d5ba6", "#8c6d46")
FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Helvetica, Arial, sans-serif"
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 18, 30, 44
_LEGEND_ROW = 18
_CHAR_WIDTH = 6.4  # of an 11px sans-serif character, on average: enough to lay out a legend
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def escape(text: object) -> str:
    """Text safe inside an XML or HTML element or a quoted attribute; characters XML cannot
    hold (control characters, lone surrogates) are shown as escapes.

    >>> escape('<script>"a" & \\x00')
    '&lt;script&gt;&quot;a&quot; &amp; \\\\x00'
    """
    shown = _UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()):02x}"
                             if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}",
                             str(text))
    return (shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def number(value: float) -> str:
    """A number in a few characters: 4 significant digits, no exponent padding.

    >>> number(0.30000000000000004), number(1e-05), number(-0.0), number(12500.0)
    ('0.3', '1e-5', '0', '1.25e+4')
    """
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{'+' if int(exponent) > 0 else ''}{int(exponent)}"
    return "0" if text == "-0" else text


def _coordinate(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class _Axis:
    """A data range mapped onto pixels [start, stop], linearly or in log space."""

    low: float
    high: float
    start: float
    stop: float
    log: bool

    def _t(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        low, high, at = self._t(self.low), self._t(self.high), self._t(value)
        if math.isinf(high - low):  # a span beyond float range: halve everything first
            low, high, at = low / 2, high / 2, at / 2
        return self.start + (at - low) / (high - low) * (self.stop - self.start)

    def ticks(self) -> list[float]:
        if self.log:
            decades = [10.0 ** e for e in range(math.floor(math.log10(self.low)),
                                                 math.ceil(math.log10(self.high)) + 1)]
            for steps in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
                ticks = [d * s for d in decades for s in steps
                         if self.low * (1 - 1e-9) <= d * s <= self.high * (1 + 1e-9)]
                if len(ticks) >= 3:
                    return ticks
            return ticks if len(ticks) >= 2 else _linear_ticks(self.low, self.high)
        return _linear_ticks(self.low, self.high)


def _nice_step(span: float, count: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` ticks."""
    raw = span / count
    if not (math.isfinite(raw) and raw > 0):
        return math.nan
    power = 10.0 ** math.floor(math.log10(raw))
    return next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= raw)


def _linear_ticks(low: float, high: float) -> list[float]:
    step = _nice_step(high - low)
    if math.isnan(step):  # a span beyond float range or below its resolution: the ends
        return [low, high]
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [k * step for k in range(first, last + 1)]


def _usable(values: Iterable[float], log: bool) -> list[float]:
    return [v for v in values if math.isfinite(v) and (v > 0 or not log)]


def _extent(values: list[float], log: bool, pad: bool) -> tuple[float, float]:
    """A range holding ``values`` that is never empty, with round ends on a linear axis
    when ``pad``."""
    if not values:
        return (1.0, 10.0) if log else (0.0, 1.0)
    low, high = min(values), max(values)
    if log:
        return (low / 2, min(high * 2, sys.float_info.max)) if high <= low else (low, high)
    if high <= low:
        half = abs(low) * 0.1 or 0.5
        return low - half, high + half
    step = _nice_step(high - low)
    if pad and not math.isnan(step):
        return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    return low, high


def _ranges(panel: Panel) -> tuple[tuple[float, float], tuple[float, float]]:
    xs: list[float] = []
    ys: list[float] = []
    has_bars = False
    for series in panel.series:
        if isinstance(series, Bars):
            xs += _usable(series.edges, panel.log_x)
            ys += _usable(series.heights, panel.log_y)
            has_bars = has_bars or bool(series.heights)
        else:
            pairs = [(x, y) for x, y in zip(series.x, series.y, strict=False)
                     if _usable((x,), panel.log_x) and _usable((y,), panel.log_y)]
            xs += [x for x, _ in pairs]
            ys += [y for _, y in pairs]
    if has_bars and not panel.log_y:
        ys.append(0.0)  # bars stand on zero
    return _extent(xs, panel.log_x, pad=False), _extent(ys, panel.log_y, pad=True)


def _text(x: float, y: float, content: str, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{_coordinate(x)}" y="{_coordinate(y)}" text-anchor="{anchor}"{extra}>'
            f"{escape(content)}</text>")


def _legend(panel: Panel, width: int) -> list[list[tuple[int, str]]]:
    """The labelled series in rows that fit the width: (series index, label)."""
    labelled = [(i, s.label) for i, s in enumerate(panel.series) if s.label]
    if len(labelled) < 2:
        return []
    rows: list[list[tuple[int, str]]] = [[]]
    used = 0.0
    for item in labelled:
        size = 24 + len(item[1]) * _CHAR_WIDTH
        if rows[-1] and used + size > width - _LEFT - _RIGHT:
            rows.append([])
            used = 0.0
        rows[-1].append(item)
        used += size
    return rows


def _legend_key(series: Bars | Line | Points, color: str, x: float, y: float) -> str:
    if isinstance(series, Bars):
        return (f'<rect x="{_coordinate(x)}" y="{_coordinate(y - 5)}" width="14" height="10" '
                f'fill="{color}" fill-opacity="0.55" stroke="{color}"/>')
    if isinstance(series, Line):
        dash = ' stroke-dasharray="4 3"' if series.dashed else ""
        return (f'<line x1="{_coordinate(x)}" y1="{_coordinate(y)}" x2="{_coordinate(x + 14)}" '
                f'y2="{_coordinate(y)}" stroke="{color}" stroke-width="2"{dash}/>')
    return f'<circle cx="{_coordinate(x + 7)}" cy="{_coordinate(y)}" r="4" fill="{color}"/>'


def panel_svg(panel: Panel, width: int = WIDTH, height: int = HEIGHT) -> str:
    """One panel as an ``<svg>`` element of ``width`` × ``height`` pixels."""
    legend = _legend(panel, width)
    top = _TOP + _LEGEND_ROW * len(legend) + (4 if legend else 0)
    (x_low, x_high), (y_low, y_high) = _ranges(panel)
    sx = _Axis(x_low, x_high, _LEFT, width - _RIGHT, panel.log_x)
    sy = _Axis(y_low, y_high, height - _BOTTOM, top, panel.log_y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="{escape(FONT)}" font-size="11" '
           f'fill="#222">',
           f"<title>{escape(panel.title)}</title>",
           f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for tick in sy.ticks():
        y = sy(tick)
        out.append(f'<line x1="{_LEFT}" y1="{_coordinate(y)}" x2="{width - _RIGHT}" '
                   f'y2="{_coordinate(y)}" stroke="#e5e5e5"/>')
        out.append(_text(_LEFT - 6, y + 4, number(tick), "end"))
    for tick in sx.ticks():
        x = sx(tick)
        out.append(f'<line x1="{_coordinate(x)}" y1="{height - _BOTTOM}" x2="{_coordinate(x)}" '
                   f'y2="{height - _BOTTOM + 4}" stroke="#555"/>')
        out.append(_text(x, height - _BOTTOM + 16, number(tick), "middle"))
    for index, series in enumerate(panel.series):
        out += _draw(series, COLORS[index % len(COLORS)], sx, sy)
    out.append(f'<path d="M{_LEFT} {top}V{height - _BOTTOM}H{width - _RIGHT}" fill="none" '
               f'stroke="#555"/>')
    out.append(_text(_LEFT, 18, panel.title, extra=' font-size="13" font-weight="600"'))
    out.append(_text((_LEFT + width - _RIGHT) / 2, height - 8, panel.x_label, "middle"))
    middle = (top + height - _BOTTOM) / 2
    out.append(_text(13, middle, panel.y_label, "middle",
                     f' transform="rotate(-90 13 {_coordinate(middle)})"'))
    for row, items in enumerate(legend):
        x, y = float(_LEFT), _TOP + 6 + _LEGEND_ROW * row
        for index, label in items:
            out.append(_legend_key(panel.series[index], COLORS[index % len(COLORS)], x, y))
            out.append(_text(x + 19, y + 4, label))
            x += 24 + len(label) * _CHAR_WIDTH
    out.append("</svg>")
    return "\n".join(out)


def _draw(series: Bars | Line | Points, color: str, sx: _Axis, sy: _Axis) -> list[str]:
    if isinstance(series, Bars):
        base = sy(sy.low if sy.log else 0.0)  # a linear axis always holds zero with bars
        out = []
        for low, high, value in zip(series.edges, series.edges[1:], series.heights,
                                    strict=False):
            if not (_usable((low, high), sx.log) == [low, high] and high > low
                    and _usable((value,), sy.log) and value != 0):
                continue
            left, top = sx(low), min(sy(value), base)  # a negative bar hangs below zero
            out.append(f'<rect class="bar" x="{_coordinate(left)}" y="{_coordinate(top)}" '
                       f'width="{_coordinate(sx(high) - left)}" '
                       f'height="{_coordinate(abs(base - sy(value)))}" fill="{color}" '
                       f'fill-opacity="0.55" stroke="{color}" stroke-width="0.6">'
                       f"<title>{escape(series.label)} [{number(low)}, {number(high)}): "
                       f"{number(value)}</title></rect>")
        return out
    points = [(sx(x), sy(y)) for x, y in zip(series.x, series.y, strict=False)
              if _usable((x,), sx.log) and _usable((y,), sy.log)]
    if isinstance(series, Line) and len(points) > 1:
        dash = ' stroke-dasharray="5 4"' if series.dashed else ""
        path = " ".join(f"{_coordinate(x)},{_coordinate(y)}" for x, y in points)
        return [f'<polyline class="line" points="{path}" fill="none" stroke="{color}" '
                f'stroke-width="{1.2 if series.dashed else 2}"{dash}/>']
    radius = 4.5 if isinstance(series, Points) else 3
    return [f'<circle class="point" cx="{_coordinate(x)}" cy="{_coordinate(y)}" r="{radius}" '
            f'fill="{color}" stroke="#fff" stroke-width="1"><title>{escape(series.label)}'
            f"</title></circle>" for x, y in points]


def figure_svg(panels: Sequence[Panel], columns: int = 2) -> str:
    """The panels in a grid of ``columns``, as one standalone SVG document."""
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    width, height = columns * WIDTH, max(rows, 1) * HEIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">']
    for index, panel in enumerate(panels):
        inner = panel_svg(panel)
        row, column = divmod(index, columns)
        out.append(inner.replace("<svg ", f'<svg x="{column * WIDTH}" y="{row * HEIGHT}" ', 1))
    out.append("</svg>")
    return "\n".join(out) + "\n"
