"""medidiff.normalize: the invertible robust intensity scaling, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medidiff.normalize import Normalizer


def test_importing_the_normalizer_imports_neither_monai_nor_torch() -> None:
    """The Normalizer is used by light code paths; MONAI and torch (seconds to import) stay out."""
    code = "import sys, medidiff.normalize; print('monai' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False False"


# ----------------------------------------------------------------------------- Normalizer
def test_normalizer_maps_percentiles_to_the_model_range_and_back() -> None:
    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 100.0, (20, 20, 20)).astype(np.float32)
    norm = Normalizer(smooth_sigma=0.0).fit(data)
    low, high = np.percentile(data, [0.5, 99.5])
    assert (norm.low, norm.high) == pytest.approx((low, high), rel=1e-5)
    model = norm.forward(data)
    assert model.dtype == np.float32
    assert float(np.percentile(model, 0.5)) == pytest.approx(-1.0, abs=1e-4)
    assert float(np.percentile(model, 99.5)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(norm.invert(model), data, rtol=1e-5, atol=1e-3)
    assert norm.sigma_from_model(norm.sigma_to_model(7.0)) == pytest.approx(7.0)
    assert norm.sigma_to_model(high - low) == pytest.approx(2.0)


def test_normalizer_rounds_and_clips_integer_outputs() -> None:
    norm = Normalizer(smooth_sigma=0.0, low=0.0, high=200.0)
    out = norm.invert(np.array([-2.0, 0.004, 0.5, 400.0]), np.uint8)
    assert out.dtype == np.uint8 and out.tolist() == [0, 100, 150, 255]


def test_normalizer_barely_moves_under_noise(tmp_path: Path, sample_nifti: Path) -> None:
    """Percentiles are taken after light smoothing: 5% noise moves the fitted range by under 3%."""
    brain = np.asarray(nib.load(str(sample_nifti)).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    noisy = brain + np.random.default_rng(4).normal(0, 0.05 * brain.max(), brain.shape).astype(np.float32)
    clean, dirty = Normalizer().fit(brain), Normalizer().fit(noisy)
    assert (
        clean.high is not None and dirty.high is not None and clean.low is not None and dirty.low is not None
    )
    span = clean.high - clean.low
    assert abs(dirty.high - clean.high) < 0.03 * span and abs(dirty.low - clean.low) < 0.03 * span


def test_normalizer_refuses_use_before_fit() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        Normalizer().forward(np.zeros((2, 2, 2)))
