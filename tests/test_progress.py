"""The progress bar: on stderr, only for runs longer than about a second, never with --quiet."""

from __future__ import annotations

import io

from rich.console import Console

from infonce_cli import render


def test_progress_appears_after_the_delay_and_reports_rows(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(render, "stderr_console", Console(file=buffer, force_terminal=True,
                                                          width=100))
    monkeypatch.setattr(render._Progress, "DELAY", 0.0)
    with render.progress(1000, enabled=True) as advance:
        advance(400)
        advance(600)
    assert "1000/1000" in buffer.getvalue() or "400/1000" in buffer.getvalue()


def test_progress_is_silent_when_disabled_or_quick(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(render, "stderr_console", Console(file=buffer, force_terminal=True))
    with render.progress(10, enabled=False) as advance:
        advance(10)
    with render.progress(10, enabled=True) as advance:  # finishes well within the delay
        advance(10)
    assert buffer.getvalue() == ""
