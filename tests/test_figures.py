"""Figures drawn from panels: SVG written by the tool itself, PNG by matplotlib, text bars for
the terminal, and the checks on a figure's file name."""

from __future__ import annotations

import math
import sys
from xml.etree import ElementTree

import pytest

from infonce_cli import plots, svg
from infonce_cli.errors import InfonceError, UsageError
from infonce_cli.figures import Bars, Line, Panel, Points

HOSTILE = "<script>alert('x')</script> & \"co\" \x00"


def parse(text: str) -> ElementTree.Element:
    root = ElementTree.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def bar_rects(root: ElementTree.Element) -> list[dict[str, float]]:
    return [{k: float(rect.get(k)) for k in ("x", "y", "width", "height")}
            for rect in root.iter("{http://www.w3.org/2000/svg}rect")
            if rect.get("class") == "bar"]


def test_one_bar_per_non_empty_bin_with_heights_proportional_to_the_counts():
    heights = (3.0, 0.0, 6.0, 1.5, 0.0, 12.0)
    panel = Panel("counts", "x", "pairs", (Bars("pairs", (0, 1, 2, 3, 4, 5, 6), heights),))
    rects = bar_rects(parse(svg.panel_svg(panel)))
    assert len(rects) == 4
    drawn = [h for h in heights if h]
    scale = rects[-1]["height"] / 12.0
    for rect, value in zip(rects, drawn, strict=True):
        assert rect["height"] == pytest.approx(value * scale, abs=0.1)
    bottoms = {round(r["y"] + r["height"], 1) for r in rects}
    assert len(bottoms) == 1  # every bar stands on the same baseline (zero)
    widths = {round(r["width"], 1) for r in rects}
    assert len(widths) == 1
    lefts = [r["x"] for r in rects]  # bins 0, 2, 3, 5
    assert lefts[1] - lefts[0] == pytest.approx(2 * rects[0]["width"], abs=0.2)
    assert lefts[3] - lefts[2] == pytest.approx(2 * rects[0]["width"], abs=0.2)


def test_bars_on_a_log_axis_span_their_edges_in_log_space():
    edges = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    panel = Panel("ranks", "rank", "pairs", (Bars("pairs", edges, (9, 4, 2, 1, 1)),), log_x=True)
    rects = bar_rects(parse(svg.panel_svg(panel, width=500)))
    assert len(rects) == 5
    width = rects[0]["width"]
    for left, right in zip(rects, rects[1:], strict=False):
        assert right["width"] == pytest.approx(width, abs=0.1)  # each bin doubles: equal in log
        assert right["x"] == pytest.approx(left["x"] + width, abs=0.1)  # contiguous
    # the axis spans [1, 32]: the plot area's width is 5 doublings
    span = rects[-1]["x"] + width - rects[0]["x"]
    assert span == pytest.approx(5 * width, abs=0.3)
    panel = Panel("ranks", "rank", "pairs", (Bars("pairs", (1.0, 10.0, 1000.0), (1, 1)),),
                  log_x=True)
    first, second = bar_rects(parse(svg.panel_svg(panel)))
    assert second["width"] == pytest.approx(2 * first["width"], abs=0.1)  # 2 decades vs 1


def test_log_ticks_are_powers_of_ten():
    panel = Panel("sweep", "τ", "loss",
                  (Line("loss", (0.01, 0.1, 1.0), (2.0, 1.0, 1.5)),), log_x=True)
    root = parse(svg.panel_svg(panel))
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"0.01", "0.1", "1"} <= set(labels)


def test_hostile_labels_are_escaped():
    panel = Panel(HOSTILE, HOSTILE, HOSTILE,
                  (Bars(HOSTILE, (0.0, 1.0), (1.0,)), Line("&amp;", (0.0, 1.0), (0.0, 1.0)),
                   Points("<b>", (0.5,), (0.5,))))
    text = svg.panel_svg(panel)
    assert "<script>" not in text
    assert "<b>" not in text
    root = parse(text)
    shown = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    visible = "<script>alert('x')</script> & \"co\" \\x00"
    assert shown.count(visible) == 4  # title, both axis labels, the legend
    assert "&amp;" in shown
    assert "<b>" in shown
    parse(svg.figure_svg([panel, panel]))


def test_escape_is_safe_in_text_and_attributes():
    assert svg.escape("<a href=\"x\">'&'</a>") == \
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    assert svg.escape("\ud800\x07") == "\\ud800\\x07"  # nothing XML or UTF-8 cannot hold


DEGENERATE = [
    Panel("no bars", "x", "y", (Bars("pairs", (), ()),)),
    Panel("one edge", "x", "y", (Bars("pairs", (1.0,), ()),)),
    Panel("zeros", "x", "y", (Bars("pairs", (0.0, 1.0, 2.0), (0.0, 0.0)),)),
    Panel("zeros, log", "x", "y", (Bars("pairs", (1.0, 2.0, 4.0), (0.0, 0.0)),), log_x=True,
          log_y=True),
    Panel("one point", "x", "y", (Points("p", (3.0,), (3.0,)),)),
    Panel("one point, log", "x", "y", (Points("p", (3.0,), (3.0,)),), log_x=True, log_y=True),
    Panel("flat", "x", "y", (Line("l", (2.0, 2.0, 2.0), (5.0, 5.0, 5.0)),)),
    Panel("one-point line", "x", "y", (Line("l", (1.0,), (1.0,)),)),
    Panel("not finite", "x", "y",
          (Bars("b", (0.0, math.nan, 2.0, 3.0, math.inf), (1.0, 2.0, math.nan, 4.0)),
           Line("l", (0.0, 1.0, math.nan, 3.0), (1.0, math.inf, 2.0, 2.0)),
           Points("p", (math.nan,), (1.0,)))),
    Panel("not positive on log axes", "x", "y",
          (Line("l", (-1.0, 0.0), (0.0, -2.0)), Bars("b", (0.0, 1.0), (3.0,))),
          log_x=True, log_y=True),
    Panel("nothing", "x", "y", ()),
    Panel("negative", "x", "y", (Bars("b", (0.0, 1.0, 2.0), (-2.0, 3.0)),)),
    Panel("huge", "x", "y", (Line("l", (-1e308, 1e308), (-1e308, 1e308)),)),
    Panel("tiny", "x", "y", (Line("l", (1e-300, 2e-300), (0.0, 5e-324)),)),
]


@pytest.mark.parametrize("panel", DEGENERATE, ids=[p.title for p in DEGENERATE])
def test_degenerate_panels_draw(panel):
    text = svg.panel_svg(panel)
    root = parse(text)
    for element in root.iter():
        for name in ("x", "y", "width", "height", "cx", "cy", "x1", "y1", "x2", "y2"):
            value = element.get(name)
            if value is not None:
                assert math.isfinite(float(value)), (name, value)
                assert name not in ("width", "height") or float(value) >= 0, (name, value)
    assert "nan" not in text.lower().replace("not finite", "")
    assert plots.text_histogram(panel)


def test_figure_is_a_grid_of_panels():
    panels = DEGENERATE[:5]
    root = parse(svg.figure_svg(panels, columns=2))
    assert (root.get("width"), root.get("height")) == ("960", "900")
    inner = root.findall("{http://www.w3.org/2000/svg}svg")
    assert [(p.get("x"), p.get("y")) for p in inner] == [
        ("0", "0"), ("480", "0"), ("0", "300"), ("480", "300"), ("0", "600")]
    assert [p.find("{http://www.w3.org/2000/svg}title").text for p in inner] == \
        [p.title for p in panels]
    parse(svg.figure_svg([]))


def test_legend_only_with_several_labelled_series():
    one = Panel("t", "x", "y", (Bars("pairs", (0.0, 1.0), (1.0,)),))
    two = Panel("t", "x", "y", (Bars("positive", (0.0, 1.0), (1.0,)),
                                Bars("hardest negative", (0.0, 1.0), (2.0,))))

    def texts(panel):
        return [t.text for t in parse(svg.panel_svg(panel)).iter(
            "{http://www.w3.org/2000/svg}text")]

    assert "pairs" not in texts(one)
    assert {"positive", "hardest negative"} <= set(texts(two))


def test_numbers_are_compact():
    assert [svg.number(v) for v in (0.1 + 0.2, 1e-5, 2.5e-7, 123456.0, -0.0, 3.0)] == \
        ["0.3", "1e-5", "2.5e-7", "1.235e+5", "0", "3"]


def test_figure_files(tmp_path):
    panels = (Panel("sweep", "τ", "loss", (Line("loss", (0.01, 0.1, 1.0), (2.0, 1.0, 1.5)),
                                           Points("optimum", (0.1,), (1.0,))), log_x=True),
              DEGENERATE[0])
    plots.write_figure(panels, str(tmp_path / "f.svg"))
    parse((tmp_path / "f.svg").read_text(encoding="utf-8"))
    plots.write_figure(panels, str(tmp_path / "f.html"))
    page = (tmp_path / "f.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.html", "f.svg"]


def test_png_figure(tmp_path):
    pytest.importorskip("matplotlib")
    drawable = [p for p in DEGENERATE if p.title != "huge"]  # matplotlib cannot tick ±1e308
    panels = (*drawable, Panel(HOSTILE + " $x^2$ $", "x", "y",
                                 (Bars("a", (1.0, 2.0, 4.0), (1.0, 2.0)),
                                  Bars("b $", (1.0, 2.0, 4.0), (2.0, 0.0))), log_x=True))
    plots.write_figure(panels, str(tmp_path / "f.png"))
    content = (tmp_path / "f.png").read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    assert (width, height) == (2 * svg.WIDTH, math.ceil(len(panels) / 2) * svg.HEIGHT)


def test_check_figure_target():
    plots.check_figure_target("plot", None)
    for name in ("a.svg", "b.HTML", "dir/c.png"):
        plots.check_figure_target("plot", name)
    with pytest.raises(UsageError) as caught:
        plots.check_figure_target("figure_file", "curve.pdf")
    assert str(caught.value) == "figure_file curve.pdf: use a .png, .svg or .html file name"
    assert caught.value.for_command_line() == \
        "--figure-file curve.pdf: use a .png, .svg or .html file name"
    with pytest.raises(UsageError, match="^plot curve: use a"):
        plots.check_figure_target("plot", "curve")


def test_png_without_matplotlib_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(InfonceError) as caught:
        plots.check_figure_target("plot", "curve.png")
    assert type(caught.value) is InfonceError
    assert caught.value.for_command_line() == (
        "--plot needs matplotlib for .png, which is not installed: pip install "
        "'infonce-cli[plot]' (or write .svg or .html)")
    plots.check_figure_target("plot", "curve.svg")
    plots.check_figure_target("plot", "curve.html")


def test_text_histogram_shape():
    edges = tuple(float(e) for e in range(11))
    heights = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 8.0, 4.0, 0.0, 1.0)
    panel = Panel("per-sample loss", "loss (nats)", "pairs", (Bars("pairs", edges, heights),))
    text = plots.text_histogram(panel, width=40, rows=3)
    lines = text.splitlines()
    assert len(lines) == 1 + 3 + 1
    assert lines[0] == "per-sample loss"
    bars = lines[1:4]
    assert bars[0].endswith("max 16 pairs")
    assert len(bars[2]) == 40  # 10 bins of 4 columns
    assert set("".join(bars)) - set(" max16pairs") <= set(plots.BLOCKS)
    assert bars[2][:4] == "    "
    assert bars[2][36:] == "▂▂▂▂"
    assert bars[0][20:24] == "████"  # the highest bin fills every row
    assert lines[4].startswith("0 ")
    assert lines[4].endswith("10  loss (nats)")
    many = Panel("t", "x", "y", (Bars("y", tuple(range(101)), (1.0,) * 100),))
    assert {len(line) for line in plots.text_histogram(many, width=30).splitlines()[2:4]} \
        <= {25}  # 100 bins merged 4 by 4
    empty = Panel("t", "x", "y", (Bars("y", (), ()),))
    assert plots.text_histogram(empty) == "t\n(no data)"
    zeros = Panel("t", "x", "y", (Bars("y", (0.0, 1.0, 2.0), (0.0, 0.0)),))
    assert "max 0 y" in plots.text_histogram(zeros)
