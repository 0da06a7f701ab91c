"""infonce: score precomputed embeddings with the InfoNCE contrastive loss.

The public API is imported lazily, so that ``infonce --help`` never loads torch:

>>> import torch
>>> from infonce_cli import info_nce
>>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
>>> round(info_nce(q, q, temperature=1.0).item(), 4)
0.3133
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["EngineOptions", "Similarity", "__version__", "info_nce", "score", "sweep"]

if TYPE_CHECKING:
    from .api import info_nce, score, sweep
    from .engine import EngineOptions
    from .similarity import Similarity

_LAZY = {
    "info_nce": "api",
    "score": "api",
    "sweep": "api",
    "EngineOptions": "engine",
    "Similarity": "similarity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
