"""Inference: the patch-based whole-volume denoiser (``patches``) and the restore() orchestration.

Submodules are imported on use so that ``import medidiff.inference`` stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"PatchDenoiser": "medidiff.inference.patches", "PatchStats": "medidiff.inference.patches"}

__all__ = ["PatchDenoiser", "PatchStats"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medidiff.inference' has no attribute {name!r}")
