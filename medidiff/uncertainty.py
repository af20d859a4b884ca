"""Calibrated uncertainty maps: the chains' spread, pooled and scaled per band, fitted on development volumes.

The spread of a few posterior chains understates the error (issue 28), for three reasons:

* **Few chains, even perfect ones.** With K exact posterior samples (mean m, sample std s) and the truth a
  draw from the same posterior, ``(truth - m) / (s sqrt(1 + 1/K))`` is Student-t with K - 1 degrees of
  freedom: with the default K = 4, ``|error| <= 2 s`` holds for only 82.9% of voxels, and the scale that
  restores 95.4% is 1.84 (tests/test_uncertainty.py checks both). The per-voxel std of 4 draws is itself
  noisy (chi with 3 degrees of freedom: about 40% relative error), which blurs the map's ranking.
* **The prior's own bias and chains that share a start** (inpainting's chains start from the same fill,
  diffused only to noise ratio 0.2): errors that no chain shows. They are mostly systematic.
* **The systematic part grows away from the data.** Inside a 16^3 hole the chains' spread stays flat or
  shrinks towards the centre while the error grows: on the development volumes the mean |error| / std is
  about 1.2-1.5 in a missing slice (both neighbours known), 2-3 on a hole's shell and 5-9 in its centre.

So a map is reported as :class:`Calibration` describes it: the chains' variance averaged over a few
neighbouring voxels of the restored region (``pool``, voxels: a steadier estimate of the local spread than
4 draws give per voxel), times a scale per band of a feature the task knows without the truth (inpainting:
the distance to the nearest known voxel; :meth:`medidiff.tasks.base.Task.calibration_strata`). Each band's
scale is fitted conformal style on development volumes only: the smallest ``s`` for which
``|error| <= 2 s std`` holds for 95.4% of the band's restored voxels (a calibrated Gaussian's ±2 std
coverage), pooled over the development cases (``python -m benchmarks.calibrate_uncertainty``). This is
group-conditional ("Mondrian") split conformal calibration: coverage holds per band, and because the scale
grows with the distance the map ranks the voxels by how far the data are, which the raw spread did not.

Calibrations live in the model's JSON (``"uncertainty_scale": {"inpaint": {...}, "restore:thick-slices":
4.5}``; a bare number is one scale, no pooling), because they belong to one model's prior: a new model needs
new ones, and a model without them reports the raw spread, marked uncalibrated in the result info.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COVERAGE = 0.954  # of ±2 std for a Gaussian
WIDTH = 2.0
MIN_BAND_VOXELS = 1000  # a band with fewer development voxels takes the scale of all bands together


@dataclass(frozen=True)
class Strata:
    """What a task tells the calibration about its output grid (all arrays (I', J', K')).

    Attributes:
        region: bool, the voxels the task restored (the spread is pooled within them); None: every voxel.
        features: name -> float per-voxel feature that a calibration may band its scales by.
    """

    region: np.ndarray | None = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """A task's calibration: ``scales[b] x`` the pooled spread where ``feature`` falls in band ``b``.

    Attributes:
        scales: one scale per band (``len(edges) + 1`` of them).
        edges: ascending band edges of ``feature`` (``np.digitize``: band b holds edges[b-1] <= v < edges[b]).
        feature: the :class:`Strata` feature the bands are of; None for a single scale.
        pool: Gaussian width (voxels) over which the chains' variance is averaged within the restored
            region before scaling; 0: per voxel.
    """

    scales: tuple[float, ...]
    edges: tuple[float, ...] = ()
    feature: str | None = None
    pool: float = 0.0

    def __post_init__(self) -> None:
        if len(self.scales) != len(self.edges) + 1 or (self.edges and self.feature is None):
            raise ValueError(f"a calibration needs one scale per band and a feature to band by: {self}")

    @classmethod
    def from_config(cls, value: float | Mapping[str, Any]) -> Calibration:
        """From the model JSON: a number (one scale, no pooling) or a dict of this class's fields."""
        if isinstance(value, Mapping):
            return cls(
                tuple(float(s) for s in value["scales"]),
                tuple(float(e) for e in value.get("edges", ())),
                value.get("feature"),
                float(value.get("pool", 0.0)),
            )
        return cls((float(value),))

    def to_config(self) -> float | dict[str, Any]:
        """The JSON form (a bare number when it is one scale without pooling)."""
        if not self.edges and not self.pool:
            return self.scales[0]
        record: dict[str, Any] = {"scales": list(self.scales), "pool": self.pool}
        if self.edges:
            record.update(edges=list(self.edges), feature=self.feature)
        return record

    def apply(self, std: np.ndarray, strata: Strata | None = None) -> np.ndarray:
        """The calibrated map (float64, std's shape) of the chains' std (I', J', K')."""
        strata = strata or Strata()
        spread = pool_spread(std, strata.region, self.pool) if self.pool else np.asarray(std, np.float64)
        return spread * self.scale_at(strata.features)

    def scale_at(self, features: Mapping[str, np.ndarray]) -> np.ndarray | float:
        """The scale per voxel (an array of the feature's shape), or the one scale when there are no bands."""
        if self.feature is None:
            return self.scales[0]
        if self.feature not in features:
            raise ValueError(f"this calibration bands by {self.feature!r}, which the task does not provide")
        return np.asarray(self.scales)[np.digitize(features[self.feature], self.edges)]


def pool_spread(std: np.ndarray, region: np.ndarray | None, sigma: float) -> np.ndarray:
    """The chains' variance Gaussian-averaged (width ``sigma`` voxels) over ``region``, as a std.

    Args:
        std: (I, J, K) per-voxel std of the chains.
        region: (I, J, K) bool, the voxels averaged over (None: all); voxels outside keep their std.
        sigma: Gaussian width, voxels.

    Returns:
        float64 (I, J, K).
    """
    # medidiff.restoration.fill's normalised convolution: an average that ignores the voxels outside the
    # region (known voxels have std 0 and would pull a hole's border down).
    from medidiff.restoration.fill import normalized_convolution

    raw = np.asarray(std, np.float64)
    weight = np.ones_like(raw) if region is None else np.asarray(region, bool).astype(np.float64)
    average, _ = normalized_convolution(raw**2, weight, sigma)
    return np.where(weight > 0, np.sqrt(np.maximum(average, 0.0)), raw)


def distance_to_known(missing: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) from each missing voxel to the nearest known one; 0 where known.

    Args:
        missing: (I, J, K) bool, True = missing.
    """
    from scipy.ndimage import distance_transform_edt

    return np.asarray(distance_transform_edt(np.asarray(missing, bool)), np.float64)


def calibration_key(task: str, degradation: Sequence[str] | str | None = None) -> str:
    """The name a task's scale is stored under: the task, and for ``restore`` its degradations
    (``restore:thick-slices``, ``restore:bias+blur``)."""
    if task == "restore" and degradation:
        kinds = [degradation] if isinstance(degradation, str) else list(degradation)
        return f"restore:{'+'.join(kinds)}"
    return task


def calibration_for(config: Mapping[str, Any], key: str) -> Calibration | None:
    """The model's stored calibration for ``key`` (None when the model has none for it)."""
    value = dict(config.get("uncertainty_scale") or {}).get(key)
    return Calibration.from_config(value) if value is not None else None


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


def fit_bands(
    error: np.ndarray,
    spread: np.ndarray,
    feature: np.ndarray | None = None,
    edges: Sequence[float] = (),
    coverage: float = COVERAGE,
    width: float = WIDTH,
) -> tuple[float, ...]:
    """One conformal scale (:func:`fit_scale`) per band of ``feature``.

    Args:
        error, spread: (N,) errors of development voxels and their (pooled) spread.
        feature: (N,) the banding feature (None: one band).
        edges: the bands' edges (``np.digitize``).

    Returns:
        ``len(edges) + 1`` scales; a band with fewer than :data:`MIN_BAND_VOXELS` voxels gets the scale of
        all voxels together.
    """
    whole = fit_scale(error, spread, coverage, width)
    if feature is None or not len(edges):
        return (whole,)
    band = np.digitize(np.asarray(feature), np.asarray(edges, np.float64))
    scales = []
    for b in range(len(edges) + 1):
        inside = band == b
        few = int(np.count_nonzero(inside & (np.asarray(spread) > 0))) < MIN_BAND_VOXELS
        scales.append(whole if few else fit_scale(error[inside], spread[inside], coverage, width))
    return tuple(scales)
