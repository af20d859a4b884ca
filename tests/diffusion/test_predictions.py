"""eps / v / x0 / score conversions are exact inverses for VP, sub-VP and VE."""

from __future__ import annotations

import pytest
import torch

from medidiff.diffusion import SDE, VESDE, VPSDE, SubVPSDE, expand_like, split_prediction, training_target
from medidiff.diffusion.predictions import PREDICTION_TYPES, eps_from_score, score_from_eps

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}


def _noisy_batch(sde: SDE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 3, 4, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(8, 1, 3, 4, 5, generator=gen, dtype=torch.float64)
    t = torch.linspace(sde.t_min, 1.0, 8, dtype=torch.float64)
    alpha, sigma = sde.coefficients(t)
    x = expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * eps
    return x0, eps, x, alpha, sigma


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("name", list(SDES))
def test_prediction_round_trip(name: str, kind: str) -> None:
    x0, eps, x, alpha, sigma = _noisy_batch(SDES[name])
    target = training_target(x0, eps, alpha, sigma, kind)
    pred = split_prediction(target, x, alpha, sigma, kind)
    torch.testing.assert_close(pred.eps, eps, rtol=0, atol=1e-5)
    torch.testing.assert_close(pred.x0, x0, rtol=0, atol=1e-5)
    # and back: the target of the recovered pair is the network output we started from
    torch.testing.assert_close(
        training_target(pred.x0, pred.eps, alpha, sigma, kind), target, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("name", list(SDES))
def test_v_target_is_alpha_eps_minus_sigma_x0(name: str) -> None:
    x0, eps, _, alpha, sigma = _noisy_batch(SDES[name])
    v = training_target(x0, eps, alpha, sigma, "v")
    torch.testing.assert_close(v, expand_like(alpha, x0) * eps - expand_like(sigma, x0) * x0)


@pytest.mark.parametrize("name", list(SDES))
def test_score_and_tweedie(name: str) -> None:
    x0, eps, x, alpha, sigma = _noisy_batch(SDES[name])
    score = score_from_eps(eps, sigma)
    torch.testing.assert_close(eps_from_score(score, sigma), eps, rtol=0, atol=1e-12)
    # Tweedie written with the score gives back x0 when the score is the conditional one
    tweedie = (x + expand_like(sigma, x) ** 2 * score) / expand_like(alpha, x)
    torch.testing.assert_close(tweedie, x0, rtol=0, atol=1e-5)


def test_unknown_prediction_type_is_rejected() -> None:
    x = torch.zeros(2, 1, 2, 2, 2)
    one = torch.ones(2)
    with pytest.raises(ValueError, match="unknown prediction type"):
        split_prediction(x, x, one, one, "score")
    with pytest.raises(ValueError, match="unknown prediction type"):
        training_target(x, x, one, one, "score")


@pytest.mark.parametrize("shape", [(3,), (3, 2), (3, 1, 4, 4, 4), (3, 2, 1, 1, 1, 1)])
def test_expand_like_broadcasts_per_sample_values_at_any_rank(shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape, dtype=torch.float64)
    t = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32)
    out = expand_like(t, x)
    assert out.dtype == torch.float64 and out.ndim == x.ndim
    assert torch.equal((out + x).reshape(3, -1)[:, 0], t.double())
    assert expand_like(torch.tensor(2.0), x).ndim == 0
