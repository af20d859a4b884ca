"""Inpainting against closed forms with exact Gaussian priors: known voxels stay, missing ones follow the
posterior (white prior: exactly; correlated: approximately, as DDNM's projection is)."""

from __future__ import annotations

import torch
from exact_priors import DIM, EVENT, N, correlated_prior, diagonal_prior, noisy

from medidiff.diffusion import VPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.samplers import CountingDenoiser
from medidiff.tasks.inpaint import inpaint


# ----------------------------------------------------------------------------- inpaint
def _known() -> torch.Tensor:
    return (torch.rand(EVENT, generator=torch.Generator().manual_seed(5)) > 0.4)[None]


def test_inpaint_keeps_known_voxels_and_samples_the_white_posterior() -> None:
    """Independent voxels: the posterior of a missing voxel is its prior. Default settings (smooth-fill
    start at t = 0.7, DDIM 50 steps), N = 4000 chains.

    Known voxels are bit-exact. Missing voxels: measured largest mean error 0.04 (Monte Carlo 5 standard
    errors: 0.05; the smooth-fill start adds a small pull) and variance ratio 0.92 (DDIM's discretisation);
    asserted within 0.06 and [0.85, 1.05].
    """
    sde = VPSDE()
    prior = DiagonalGaussian(diagonal_prior(sde).mean, torch.full(EVENT, 0.25, dtype=torch.float64), sde)
    known = _known()
    y = torch.where(known, noisy(prior, 0.0), torch.zeros(()))
    counted = CountingDenoiser(prior)
    result = inpaint(
        y.expand(N, *EVENT).clone(), known, counted, sde, generator=torch.Generator().manual_seed(6)
    )
    x = result.x0
    assert torch.equal(x[known.expand_as(x)], y.expand_as(x)[known.expand_as(x)])
    missing = ~known[0]
    assert float((x.mean(0) - prior.mean)[missing].abs().max()) <= 0.06
    ratio = float((x.var(0)[missing] / 0.25).mean())
    assert 0.85 <= ratio <= 1.05, ratio
    assert counted.calls <= 50


def test_inpaint_of_a_correlated_prior_is_near_the_posterior_mean() -> None:
    """Correlated prior: the DDNM projection is approximate (see test_conditioning). Measured largest
    posterior-mean error 0.29 against the prior mean's 1.20; asserted below 0.36 and 30% of the prior's."""
    sde = VPSDE()
    prior = correlated_prior(sde)
    known = _known()
    y = noisy(prior, 0.0)
    rows = known.reshape(-1)
    exact = prior.observe(torch.eye(DIM, dtype=torch.float64)[rows], y.reshape(-1)[rows], 0.0)
    y = torch.where(known, y, torch.zeros(()))
    x = inpaint(y.expand(N, *EVENT).clone(), known, prior, sde, generator=torch.Generator().manual_seed(7)).x0
    err = float((x.reshape(N, DIM).mean(0) - exact.mean).abs().max())
    prior_err = float((prior.mean - exact.mean).abs().max())
    assert err <= 0.36 and err < 0.3 * prior_err, f"{err:.3f} vs prior {prior_err:.3f}"
