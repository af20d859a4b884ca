"""Prediction parameterisations (eps, v, x0) and their exact conversions to eps, x0 and the score.

With ``x_t = alpha x_0 + sigma eps``:

* eps-prediction: ``x0 = (x - sigma eps) / alpha``.
* x0-prediction: ``eps = (x - alpha x0) / sigma``.
* v-prediction, ``v = alpha eps - sigma x0``: solving the 2x2 system gives
  ``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` and ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``
  (for VP alpha^2 + sigma^2 = 1; the general form also serves sub-VP and VE).
* score: ``grad log p_t(x) = -eps / sigma`` (Tweedie: ``E[x0 | x_t] = (x + sigma^2 score) / alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

PredictionType = Literal["eps", "v", "x0"]
PREDICTION_TYPES: tuple[str, ...] = ("eps", "v", "x0")


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor (B,) or a scalar to broadcast against x (B, ...) of any rank."""
    t = t.to(device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))


@dataclass
class Prediction:
    """A denoiser's output at (x_t, t): the noise estimate and the posterior-mean estimate of x_0.

    Both have the shape of x_t, e.g. (B, 1, I, J, K).
    """

    eps: Tensor
    x0: Tensor


def split_prediction(
    raw: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, kind: PredictionType | str
) -> Prediction:
    """Convert a network output of type ``kind`` into eps and x0.

    Args:
        raw: network output, like x.
        x: x_t, (B, ...).
        alpha, sigma: (B,) or scalars.
        kind: "eps", "v" or "x0".
    """
    a, s = expand_like(alpha, x), expand_like(sigma, x)
    if kind == "eps":
        return Prediction(eps=raw, x0=(x - s * raw) / a)
    if kind == "x0":
        return Prediction(eps=(x - a * raw) / s, x0=raw)
    if kind == "v":
        norm = a**2 + s**2
        return Prediction(eps=(s * x + a * raw) / norm, x0=(a * x - s * raw) / norm)
    raise ValueError(f"unknown prediction type {kind!r}")


def training_target(
    x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, kind: PredictionType | str
) -> Tensor:
    """What a network of type ``kind`` should output for x_t = alpha x0 + sigma eps."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return expand_like(alpha, x0) * eps - expand_like(sigma, x0) * x0
    raise ValueError(f"unknown prediction type {kind!r}")


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    """grad_x log p_t(x) = -eps / sigma."""
    return -eps / expand_like(sigma, eps)


def eps_from_score(score: Tensor, sigma: Tensor) -> Tensor:
    """eps = -sigma * score."""
    return -expand_like(sigma, score) * score
