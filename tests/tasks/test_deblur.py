"""Deblurring with a known Gaussian kernel: the chains sample the exact posterior of a linear-Gaussian model.

With a white Gaussian prior N(m, v I) and y = B x0 + s n (B the blur), the posterior mean is the closed form
``m + v B^T (v B B^T + s^2 I)^-1 (y - B m)``; the task's projection is exact for that prior, so the mean of
many chains must match it (the task's own logic: the known operator, the start, the guidance).
"""

from __future__ import annotations

import math

import pytest
import torch

from medidiff.diffusion import VPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.tasks.deblur import FWHM_PER_SIGMA, blur_operator, deblur

EVENT = (1, 8, 8, 8)
DIM = 512
N = 300


def _matrix(op: torch.nn.Module) -> torch.Tensor:
    """The (512, 512) matrix of a linear operator on the 8^3 grid."""
    eye = torch.eye(DIM, dtype=torch.float64).reshape(DIM, *EVENT)
    return op(eye).reshape(DIM, DIM).T


def test_deblur_chains_average_to_the_closed_form_posterior_mean() -> None:
    """Blur FWHM 3 voxels, noise 0.05, prior variance 0.1: 300 chains of DDPM, 50 steps from ratio 50.

    Measured (400 chains): largest per-voxel error of the chains' mean 0.035 with a standard error of 0.015,
    against 0.57 for the blurred measurement and 0.76 for the prior mean. Asserted: within 5 standard errors
    sqrt(v_post / N) plus 0.02 (discretisation), and at most a fifth of the measurement's own error.
    """
    sde = VPSDE()
    gen = torch.Generator().manual_seed(0)
    u = torch.linspace(-1, 1, 8, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, u, u, indexing="ij"))
    mean = (0.4 * torch.sign(grid[0]) + 0.3 * torch.cos(3 * grid[1]))[None]  # edges the blur softens
    v, s = 0.1, 0.05
    prior = DiagonalGaussian(mean, torch.full(EVENT, v, dtype=torch.float64), sde)
    op = blur_operator(3.0, (1.0, 1.0, 1.0)).double()
    x_true = prior.sample(1, generator=gen)
    y = op(x_true) + s * torch.randn(x_true.shape, generator=gen, dtype=torch.float64)
    b = _matrix(op)
    gram = v * b @ b.T + s**2 * torch.eye(DIM, dtype=torch.float64)
    residual = y.reshape(-1) - b @ mean.reshape(-1)
    exact = mean.reshape(-1) + v * b.T @ torch.linalg.solve(gram, residual)
    cov = v * torch.eye(DIM, dtype=torch.float64) - v**2 * b.T @ torch.linalg.solve(gram, b)
    result = deblur(
        y.expand(N, *EVENT).clone(),
        op,
        prior,
        sde,
        s,
        steps=50,
        start_ratio=50.0,
        generator=torch.Generator().manual_seed(1),
        sampler="ddpm",
        prior_variance=v,
    )
    err = float((result.x0.reshape(N, DIM).mean(0) - exact).abs().max())
    bound = 5 * math.sqrt(float(cov.diagonal().max()) / N) + 0.02
    assert err <= bound, f"{err:.4f} > {bound:.4f}"
    assert err <= 0.2 * float((y.reshape(-1) - exact).abs().max())
    assert result.info["parameters"]["blur"]["sigma"] == pytest.approx([3.0 / FWHM_PER_SIGMA] * 3)


def test_fwhm_in_mm_becomes_sigma_in_voxels_per_axis() -> None:
    op = blur_operator(2 * FWHM_PER_SIGMA, (2.0, 1.0, 0.5))
    assert op.spec()["sigma"] == pytest.approx([1.0, 2.0, 4.0])


def test_deblur_checks_what_the_known_blur_leaves_unexplained() -> None:
    """``Deblur.removed`` is input - blur(output) in the input's units: the noise itself when the output is
    the truth, and the missing detail when the output is too smooth."""
    import numpy as np

    from medidiff.io.volume import Volume
    from medidiff.normalize import Normalizer
    from medidiff.tasks import get_spec
    from medidiff.tasks.base import Problem
    from medidiff.tasks.spec import TaskOptions

    rng = np.random.default_rng(0)
    clean = 100.0 + 40.0 * rng.standard_normal((24, 24, 24))
    task = get_spec("deblur").load()(TaskOptions(fwhm=2.0))
    task.operator = blur_operator(2.0, (1.0, 1.0, 1.0))
    with torch.no_grad():
        blurred = task.operator(torch.from_numpy(clean)[None, None])[0, 0].numpy()
    noise = 3.0 * rng.standard_normal(clean.shape)
    volume = Volume((blurred + noise).astype(np.float32), np.eye(4), {}, "blurred")
    norm = Normalizer().fit(volume.data)
    problem = Problem(torch.zeros(1, 1, 24, 24, 24), torch.zeros(1, 1, 24, 24, 24), np.eye(4))
    removed, measured = task.removed(problem, clean, volume, norm)
    np.testing.assert_allclose(measured, volume.data, atol=0)
    assert np.abs(removed - noise).max() < 0.05  # float32 model units: ~1e-5 of the range
    flat, _ = task.removed(problem, np.full(clean.shape, clean.mean()), volume, norm)
    # A constant output explains nothing but its level: all the blurred detail is left over.
    assert np.abs(flat - (volume.data - clean.mean())).max() < 0.05
    assert flat.std() > 2.5 * noise.std()
