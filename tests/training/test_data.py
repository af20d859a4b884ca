"""The training patch pipeline: air cleaning keeps the head and removes white noise around it."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medidiff.training.data import smooth_air


def test_smooth_air_removes_air_noise_and_keeps_the_head() -> None:
    rng = np.random.default_rng(0)
    grid = np.indices((40, 40, 40)).astype(np.float32)
    head = ((grid - 20) ** 2).sum(0) < 12**2
    data = np.where(head, 1000.0, 0.0) + 20.0 * rng.standard_normal(head.shape)
    data = data.astype(np.float32)
    cleaned = smooth_air(data)
    assert np.array_equal(cleaned[head], data[head])
    far = ((grid - 20) ** 2).sum(0) > 17**2
    high_freq = lambda a: float((a - gaussian_filter(a, 1.0))[far].std())  # noqa: E731
    assert high_freq(data) > 10.0 and high_freq(cleaned) < 0.1 * high_freq(data)
    assert abs(float(cleaned[far].mean()) - float(data[far].mean())) < 2.0  # the air level is kept
