"""Make the Slicer module's Slicer-free library importable as ``MediDiffLib`` (it is not part of medidiff)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "slicer" / "MediDiff"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def module_dir() -> Path:
    """The scripted module's folder: ``slicer/MediDiff``."""
    return MODULE_DIR


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
