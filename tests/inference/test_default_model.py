"""The embedded default model on real voxels: a 48^3 crop of the bundled sample (the 2 mm MNI152 T1).

The template is part of the model's training data, so this is no benchmark (held-out figures live in
docs/benchmarks.md); it checks that what ships restores real anatomy, and that the mirrored test-time views
denoising averages by default are better than one view, not just different. Measured when written (seeds
0-2): noisy 20.2 dB; one view 28.49-28.58, two views 28.60-28.70, eight views 28.70-28.80 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medidiff
from medidiff.io import read_volume
from medidiff.metrics import psnr, ssim


@pytest.fixture(scope="module")
def case(sample_nifti: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(clean 48^3 crop through the brain, the crop with Gaussian noise of 10% of p99.5, that sigma)."""
    volume = read_volume(sample_nifti)
    clean = volume.data[14:62, 20:68, 16:64].astype(np.float64)
    sigma = 0.1 * float(np.percentile(volume.data, 99.5))
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)
    return clean, noisy.astype(np.float32), sigma


def test_default_denoising_restores_real_anatomy_and_two_views_beat_one(
    case: tuple[np.ndarray, np.ndarray, float],
) -> None:
    clean, noisy, sigma = case
    peak = float(clean.max() - clean.min())
    one = medidiff.restore(noisy, views=1, progress=False, full_result=True)
    two = medidiff.restore(noisy, progress=False, full_result=True)  # the default: 2 views
    assert one.info["views"] == 1 and two.info["views"] == 2
    assert two.info["sigma"] == pytest.approx(sigma, rel=0.1)  # sigma auto
    before = psnr(clean, noisy, data_range=peak)
    p1, p2 = (psnr(clean, r.volume.data, data_range=peak) for r in (one, two))
    s1, s2 = (ssim(clean, r.volume.data, data_range=peak) for r in (one, two))
    assert p1 > before + 7.5 and s1 > 0.89
    assert p2 > p1 + 0.05 and s2 > s1


def test_shipped_model_names_its_training_data_portably() -> None:
    """The embedded model's provenance names files as the training config does (``pkg:`` or relative to
    the repository), so the JSON says what it was trained on without the build machine's paths."""
    import json

    from medidiff.nets.checkpoint import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME

    training = json.loads((DEFAULT_MODEL_DIR / f"{DEFAULT_MODEL_NAME}.json").read_text())["training"]
    assert training["steps"] > 0 and training["files"]
    for spec in training["files"]:
        assert spec.startswith("pkg:") or not Path(spec).is_absolute(), spec
