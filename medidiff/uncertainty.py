"""Calibrated uncertainty maps: a per-task scale on the chains' spread, fitted on development volumes.

The spread of a few posterior chains understates the error (issue 28), for two reasons:

* **Few chains, even perfect ones.** With K exact posterior samples (mean m, sample std s) and the truth a
  draw from the same posterior, ``(truth - m) / (s sqrt(1 + 1/K))`` is Student-t with K - 1 degrees of
  freedom: with the default K = 4, ``|error| <= 2 s`` holds for only 82.9% of voxels, and the scale that
  restores 95.4% is 1.84 (tests/test_uncertainty.py checks both).
* **The prior's own bias and chains that share a start** (inpainting's chains start from the same fill,
  diffused only to noise ratio 0.2): errors that no chain shows. This part is measured per task on the
  development volumes.

 The map a task reports is therefore
``scale x`` the chains' std, where ``scale`` is fitted per task on development volumes only, conformal
style: the smallest ``s`` for which ``|error| <= 2 s std`` holds for 95.4% of the restored voxels (a
calibrated Gaussian's ±2 std coverage), pooled over the development cases
(``python -m benchmarks.calibrate_uncertainty``). Scales live in the model's JSON
(``"uncertainty_scale": {"inpaint": 2.1, ...}``), because they belong to one model's prior: a new model
needs new scales, and a model without them reports the raw spread, marked uncalibrated in the result info.

A scale keeps the map's shape, so it fixes coverage, not ranking: the correlation between std and |error|
is the chains' own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

COVERAGE = 0.954  # of ±2 std for a Gaussian
WIDTH = 2.0


def calibration_key(task: str, degradation: Sequence[str] | str | None = None) -> str:
    """The name a task's scale is stored under: the task, and for ``restore`` its degradations
    (``restore:thick-slices``, ``restore:bias+blur``)."""
    if task == "restore" and degradation:
        kinds = [degradation] if isinstance(degradation, str) else list(degradation)
        return f"restore:{'+'.join(kinds)}"
    return task


def scale_for(config: Mapping[str, Any], key: str) -> float | None:
    """The model's stored scale for ``key`` (None when the model has none for it)."""
    value = dict(config.get("uncertainty_scale") or {}).get(key)
    return float(value) if value is not None else None


def fit_scale(error: np.ndarray, std: np.ndarray, coverage: float = COVERAGE, width: float = WIDTH) -> float:
    """The conformal scale: the smallest ``s`` with ``|error| <= width * s * std`` on a ``coverage`` share.

    Args:
        error: (N,) errors of development voxels (restored - clean).
        std: (N,) the chains' std at those voxels (> 0 where used).
        coverage: the share that must be covered; width: how many stds.

    Returns:
        The scale (the ``ceil((N + 1) coverage) / N`` empirical quantile of ``|error| / (width std)``,
        the split-conformal quantile).
    """
    err, spread = np.abs(np.asarray(error, np.float64)), np.asarray(std, np.float64)
    keep = spread > 0
    ratio = np.sort(err[keep] / (width * spread[keep]))
    if ratio.size == 0:
        raise ValueError("no voxel with a positive std to calibrate on")
    rank = min(ratio.size, math.ceil((ratio.size + 1) * coverage)) - 1
    return float(ratio[rank])
