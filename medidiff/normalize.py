"""Invertible intensity scaling between a volume's own units and the model's [-1, 1].

The model works on intensities scaled to [-1, 1] by robust percentiles of the volume: the
``lower_percentile`` maps to -1 and the ``upper_percentile`` to +1 (values beyond are not clipped).
The percentiles are taken on a lightly smoothed copy so that measurement noise (which is what we
restore) barely moves them: a noisy and a clean scan of the same anatomy get nearly the same scaling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class Normalizer:
    """Robust affine intensity map ``model = 2 (x - low) / (high - low) - 1`` and its inverse.

    Attributes:
        lower_percentile, upper_percentile: percentiles (0-100) that map to -1 and +1.
        smooth_sigma: Gaussian smoothing (voxels) applied before taking percentiles; 0 disables.
        low, high: fitted intensities in input units (None until :meth:`fit`).
    """

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    smooth_sigma: float = 1.0
    low: float | None = None
    high: float | None = None

    def fit(self, data: np.ndarray) -> Normalizer:
        """Fit low/high on ``data`` (I, J, K), in place; returns self."""
        from scipy.ndimage import gaussian_filter

        arr = np.asarray(data, dtype=np.float32)
        if self.smooth_sigma > 0:
            arr = gaussian_filter(arr, self.smooth_sigma, mode="nearest")
        # A strided subsample keeps fitting fast on large volumes; percentiles are robust to it.
        step = max(1, round((arr.size / 4_000_000) ** (1 / 3)))
        sample = arr[::step, ::step, ::step]
        low, high = np.percentile(sample, [self.lower_percentile, self.upper_percentile])
        if not np.isfinite([low, high]).all() or high <= low:
            high = low + 1.0
        self.low, self.high = float(low), float(high)
        return self

    def _check(self) -> tuple[float, float]:
        if self.low is None or self.high is None:
            raise RuntimeError("Normalizer used before fit()")
        return self.low, self.high

    @property
    def scale(self) -> float:
        """Model units per input unit (2 / (high - low))."""
        low, high = self._check()
        return 2.0 / (high - low)

    def forward(self, data: np.ndarray) -> np.ndarray:
        """Input units -> model units, float32, same shape."""
        low, _ = self._check()
        return ((np.asarray(data, dtype=np.float32) - low) * self.scale - 1.0).astype(np.float32)

    def invert(self, model: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Model units -> input units. Integer ``dtype`` results are rounded and clipped to its range."""
        low, _ = self._check()
        out = (np.asarray(model, dtype=np.float64) + 1.0) / self.scale + low
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(dtype)

    def sigma_to_model(self, sigma: float) -> float:
        """A noise standard deviation in input units, in model units."""
        return float(sigma) * self.scale

    def sigma_from_model(self, sigma: float) -> float:
        return float(sigma) / self.scale

    def config(self) -> dict[str, Any]:
        return asdict(self)
