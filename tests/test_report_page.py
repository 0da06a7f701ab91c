"""The HTML report page: built from a real score and sweep of the sample data, read back as a
parser and as a browser would."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

import infonce_cli
from infonce_cli.figures import score_panels
from infonce_cli.html_report import report_html, sweep_panel
from infonce_cli.results import ReportResult

from .conftest import SAMPLE

HOSTILE_ID = "<script>alert(1)</script> & <b>bold</b> \"quoted\""
SECTIONS = ("InfoNCE report", "Aggregate", "Diagnostics", "Temperature", "Distributions",
            "Worst cases", "Notes")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> ReportResult:
    """A score (worst cases, diagnostics when the library has them) and a sweep of the sample
    pairs, whose ids, read from a Parquet column, are hostile HTML."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(SAMPLE / "pairs.parquet")
    ids = pa.array([f"{HOSTILE_ID} {i}" for i in range(table.num_rows)])
    path = tmp_path_factory.mktemp("report") / "pairs.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("id"), "id", ids), path)
    inputs = {"query": str(path), "query_col": "query", "pos": str(path), "pos_col": "positive",
              "neg": str(SAMPLE / "hard_negatives.npy"), "device": "cpu"}
    score = infonce_cli.score(**inputs, id_col="id", worst=5, diagnostics=True)
    sweep = infonce_cli.sweep(**inputs, steps=30)
    return ReportResult(score, sweep, {"query": f"{path} <query> & co", "pos": str(path),
                                       "neg": "sample_data/hard_negatives.npy"})


class Page(HTMLParser):
    """What a page holds: its start tags with attributes, headings and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._heading: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def test_page_parses_and_has_every_section(report):
    page = report_html(report)
    parsed = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert parsed.headings == list(SECTIONS)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("svg") == 1 + len(score_panels(report.score))
    assert "script" not in tags
    text = " ".join(parsed.text)
    for label in ("mean loss (nats)", "accuracy@1", "recall@5", "MRR", "nDCG@10", "median rank",
                  "MI lower bound", "loss-minimising τ"):
        assert label in text
    assert f"{report.score.loss.mean:.4f}" in text
    assert f"{report.sweep.optimum.temperature:.4g}" in text


def test_page_loads_nothing(report):
    page = report_html(report)
    for tag, attributes in parse(page).tags:
        assert not {"src", "href", "srcset", "action", "data"} & set(attributes), tag
        assert tag not in ("link", "script", "img", "iframe", "object", "embed")
    assert "url(" not in page
    assert "@import" not in page
    assert re.findall(r"https?://[^\s\"'<>]*", page) == [SVG_NAMESPACE] * page.count("<svg")


def test_data_is_escaped(report):
    page = report_html(report)
    assert "<script>" not in page
    assert "<b>bold</b>" not in page
    parsed = parse(page)
    assert "script" not in [tag for tag, _ in parsed.tags]
    assert "b" not in [tag for tag, _ in parsed.tags]
    worst = report.score.worst
    assert worst is not None
    assert len(worst) == 5
    for case in worst:
        assert case.id == f"{HOSTILE_ID} {case.index}"
        assert f"{HOSTILE_ID} {case.index}" in parsed.text  # shown as written
    assert f"{report.inputs['query']}" in parsed.text
    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S):
        ElementTree.fromstring(svg)  # each figure is well-formed XML too


def test_diagnostics_table(report):
    diagnostics = report.score.diagnostics
    assert diagnostics is not None
    text = " ".join(parse(report_html(report)).text)
    for label in ("alignment", "uniformity", "effective rank", "anisotropy", "ECE", "MCE"):
        assert label in text
    assert f"{diagnostics.alignment:.4f}" in text
    assert f"{diagnostics.uniformity.query:.4f}" in text
    assert f"{diagnostics.calibration.ece:.4f}" in text
    assert ("hubness skewness" in text) == (diagnostics.hubness is not None)
    assert "reliability (ECE" in text  # the reliability diagram


def test_page_without_diagnostics_worst_cases_or_notes(report):
    score = replace(report.score, diagnostics=None, worst=None, notes=())
    page = report_html(replace(report, score=score, sweep=replace(report.sweep, notes=())))
    parsed = parse(page)
    assert "Worst cases" not in parsed.headings
    text = " ".join(parsed.text)
    assert "Not computed for this run." in text
    # The reliability diagram is then drawn from the per-sample rows: the same calibration.
    assert f"reliability (ECE {report.score.diagnostics.calibration.ece:.4f})" in text


def test_sweep_panel_marks_the_optimum_the_lowest_ece_and_the_scored_temperature(report):
    panel = sweep_panel(report.sweep, 0.05)
    labels = [series.label for series in panel.series]
    assert labels[0] == "mean loss"
    assert labels[1] == f"optimum τ = {report.sweep.optimum.temperature:.4g}"
    assert labels[-1] == "scored at τ = 0.05"
    calibrated = report.sweep.calibration_optimum
    assert calibrated is not None
    assert f"lowest ECE τ = {calibrated.temperature:.4g}" in labels
    outside = sweep_panel(report.sweep, 5.0)  # beyond the grid: no line
    assert not any(label.startswith("scored") for label in
                   (series.label for series in outside.series))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr")


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def _page_requests(net_log: Path) -> list[str]:
    """The URLs the page itself asked the network for (not the browser's own traffic)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start and "url" in event.get("params", {})
            and ("file://" in event["params"].get("network_isolation_key", "")
                 or event["params"].get("initiator") in ("null", "file://"))]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH (apt-get install chromium)")
def test_page_renders_in_a_headless_browser(report, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    page = tmp_path / "report.html"
    page.write_text(report_html(report), encoding="utf-8")
    shot = tmp_path / "shot.png"
    net_log = tmp_path / "net.json"
    drawn = _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,3000",
                      f"--log-net-log={net_log}")
    assert drawn.returncode == 0, drawn.stderr.decode(errors="replace")[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = image.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 0.05  # text, tables and figures, not a blank page
    top = pixels[:600].reshape(-1, pixels.shape[-1])
    assert len({tuple(p) for p in top[:: 97]}) > 10  # many shades where the header is drawn
    assert _page_requests(net_log) == []
    dumped = _chromium(tmp_path, page, "--dump-dom")
    assert dumped.returncode == 0
    dom = dumped.stdout.decode()
    for heading in SECTIONS:
        assert re.search(rf"<h[12][^>]*>{re.escape(heading)}</h[12]>", dom), heading
    assert dom.count("<svg") == 1 + len(score_panels(report.score))
    assert "<script" not in dom
    for stderr in (drawn.stderr, dumped.stderr):
        lines = stderr.decode(errors="replace").splitlines()
        failed = [line for line in lines
                  if re.search(r"Failed to load|ERR_[A-Z_]+|net::|:CONSOLE", line)
                  and "dbus" not in line]
        assert failed == []
