"""infonce: score precomputed embeddings with the InfoNCE contrastive loss.

``score``, ``sweep`` and ``compare`` take arrays, tensors or paths and every option of
the command line (named as its flags in snake_case) and return its results;
``info_nce`` is the differentiable loss. The public API is imported lazily, so that
``infonce --help`` never loads torch:

>>> import torch
>>> from infonce_cli import info_nce
>>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
>>> round(info_nce(q, q, temperature=1.0).item(), 4)
0.3133
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "info_nce": "api",
    "score": "api",
    "sweep": "api",
    "compare": "api",
    "retrieval": "api",
    "compare_retrieval": "api",
    "report": "api",
    "report_html": "html_report",
    "run_report": "runs",
    "ReportRequest": "requests",
    "ReportResult": "results",
    "run_retrieval": "runs",
    "RetrievalRequest": "requests",
    "RetrievalResult": "results",
    "run_score": "runs",
    "run_sweep": "runs",
    "run_compare": "runs",
    "ScoreRequest": "requests",
    "SweepRequest": "requests",
    "CompareRequest": "requests",
    "Inputs": "requests",
    "EngineSettings": "requests",
    "Masking": "requests",
    "Report": "requests",
    "Gates": "requests",
    "Grid": "requests",
    "ScoreResult": "results",
    "SweepResult": "results",
    "CompareResult": "results",
    "InfonceError": "errors",
    "GateFailed": "errors",
    "EngineOptions": "engine",
    "Similarity": "similarity",
}

__all__ = [
    "CompareRequest",
    "CompareResult",
    "EngineOptions",
    "EngineSettings",
    "GateFailed",
    "Gates",
    "Grid",
    "InfonceError",
    "Inputs",
    "Masking",
    "Report",
    "ScoreRequest",
    "ScoreResult",
    "Similarity",
    "SweepRequest",
    "SweepResult",
    "__version__",
    "ReportRequest",
    "ReportResult",
    "RetrievalRequest",
    "RetrievalResult",
    "compare",
    "compare_retrieval",
    "info_nce",
    "report",
    "report_html",
    "retrieval",
    "run_retrieval",
    "run_compare",
    "run_report",
    "run_score",
    "run_sweep",
    "score",
    "sweep",
]

if TYPE_CHECKING:
    from .api import compare, compare_retrieval, info_nce, report, retrieval, score, sweep
    from .engine import EngineOptions
    from .errors import GateFailed, InfonceError
    from .html_report import report_html
    from .requests import (
        CompareRequest,
        EngineSettings,
        Gates,
        Grid,
        Inputs,
        Masking,
        Report,
        ReportRequest,
        RetrievalRequest,
        ScoreRequest,
        SweepRequest,
    )
    from .results import CompareResult, ReportResult, RetrievalResult, ScoreResult, SweepResult
    from .runs import run_compare, run_report, run_retrieval, run_score, run_sweep
    from .similarity import Similarity


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
