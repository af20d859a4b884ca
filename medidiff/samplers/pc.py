"""Reverse-SDE samplers: Euler–Maruyama and predictor–corrector with a Langevin corrector (Song et al. 2021).

As in score_sde_pytorch, predictors and correctors are small interchangeable pieces and a do-nothing
predictor or corrector makes PC, predictor-only and corrector-only (annealed Langevin) one code path. Each
step first corrects at t, then predicts from t to t_next; the last grid time is followed by the final denoise.

* ``euler_maruyama`` predictor: ``x + (f x - g^2 score) dt + g sqrt(|dt|) z`` with dt = t_next - t < 0.
* ``reverse_diffusion`` predictor: the reverse of the exact forward transition t_next -> t written as
  ``x_t = x + (m - 1) x + sqrt(v) z`` (m = a_t/a_next, v = s_t^2 - m^2 s_next^2):
  ``x_next = (2 - m) x + v score + sqrt(v) z``. For VP this is score_sde's discretised reverse diffusion.
* ``langevin`` corrector: ``x + e score + sqrt(2 e) z`` with ``e = 2 (snr |z| / |score|)^2``, the norms
  averaged over the batch as in score_sde; its factor alpha_i = 1 - beta_i (within 2% of 1) is dropped.

All pieces use only alpha, sigma, f and g, so they hold for VP, sub-VP and VE.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.diffusion.sde import SDE
from medidiff.errors import ConfigError
from medidiff.samplers.base import Denoiser, Memory, Sampler, randn_like

PREDICTORS: tuple[str, ...] = ("reverse_diffusion", "euler_maruyama", "none")
CORRECTORS: tuple[str, ...] = ("langevin", "none")


def _score(pred: Prediction, sigma: float) -> Tensor:
    return -pred.eps / sigma


def predict(
    kind: str,
    sde: SDE,
    x: Tensor,
    pred: Prediction,
    t: float,
    t_next: float,
    generator: torch.Generator | None,
) -> Tensor:
    """One predictor move of x from t to t_next, given ``pred = denoiser(x, t)``."""
    if kind == "none":
        return x
    a_t, s_t = sde.scalar_coefficients(t)
    score = _score(pred, s_t)
    if kind == "euler_maruyama":
        t64 = torch.tensor(t, dtype=torch.float64)
        f, g = float(sde.drift_coefficient(t64)), float(sde.diffusion(t64))
        dt = t_next - t
        return x + (f * x - g**2 * score) * dt + g * (-dt) ** 0.5 * randn_like(x, generator)
    a_n, s_n = sde.scalar_coefficients(t_next)
    m = a_t / a_n
    v = max(s_t**2 - (m * s_n) ** 2, 0.0)
    return (2 - m) * x + v * score + v**0.5 * randn_like(x, generator)


def langevin_correct(
    denoiser: Denoiser,
    x: Tensor,
    pred: Prediction,
    t: float,
    sigma: float,
    snr: float,
    n_steps: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``n_steps`` Langevin moves at fixed t; the first uses ``pred``, later ones re-evaluate the denoiser."""
    for i in range(n_steps):
        if i > 0:
            pred = Sampler.evaluate(denoiser, x, t)
        score = _score(pred, sigma)
        z = randn_like(x, generator)
        # batch means of the norms, as in score_sde: a per-sample step size correlates with that sample's
        # own noise and score and inflates small variances (+7% at D = 64 in tests/samplers)
        grad_norm = score.flatten(1).norm(dim=1).mean()
        noise_norm = z.flatten(1).norm(dim=1).mean()
        step = float(2 * (snr * noise_norm / grad_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2)
        x = x + step * score + (2 * step) ** 0.5 * z
    return x


class PCSampler(Sampler):
    """Predictor–corrector sampling of the reverse SDE.

    Args:
        predictor: "reverse_diffusion", "euler_maruyama" or "none" (corrector-only: annealed Langevin).
        corrector: "langevin" or "none" (predictor-only).
        snr: the Langevin signal-to-noise ratio. score_sde uses 0.16 at 32^2 and 0.075 at 256^2. The
            corrector's step-size bias grows with snr^2: on a Gaussian with per-voxel variances in
            [0.09, 1] (200 steps) 0.16 inflates the smallest variances by ~7%, 0.075 by ~2%; hence 0.075.
        corrector_steps: Langevin moves per time step.
    """

    name = "pc"

    def __init__(
        self,
        sde: SDE,
        steps: int,
        predictor: str = "reverse_diffusion",
        corrector: str = "langevin",
        snr: float = 0.075,
        corrector_steps: int = 1,
        spacing: str | None = None,
    ) -> None:
        super().__init__(sde, steps, spacing)
        if predictor not in PREDICTORS:
            raise ConfigError(f"unknown predictor {predictor!r} (expected one of {', '.join(PREDICTORS)})")
        if corrector not in CORRECTORS:
            raise ConfigError(f"unknown corrector {corrector!r} (expected one of {', '.join(CORRECTORS)})")
        if float(snr) <= 0 or int(corrector_steps) < 0:
            raise ConfigError(f"PC needs snr > 0 and corrector_steps >= 0, got {snr} and {corrector_steps}")
        self.predictor = predictor
        self.corrector = corrector
        self.snr = float(snr)
        self.corrector_steps = int(corrector_steps) if corrector != "none" else 0
        # the corrector's first move reuses the step's evaluation; the predictor then needs a fresh one
        n_corr = self.corrector_steps
        self.evaluations_per_step = max(1, n_corr + (1 if n_corr and predictor != "none" else 0))

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "predictor": self.predictor,
            "corrector": self.corrector,
            "snr": self.snr,
            "corrector_steps": self.corrector_steps,
        }

    def step(
        self,
        denoiser: Denoiser,
        x: Tensor,
        pred: Prediction,
        t: float,
        t_next: float,
        generator: torch.Generator | None,
        memory: Memory,
    ) -> tuple[Tensor, Memory]:
        if self.corrector_steps:
            _, s_t = self.sde.scalar_coefficients(t)
            x = langevin_correct(denoiser, x, pred, t, s_t, self.snr, self.corrector_steps, generator)
            if self.predictor != "none":
                pred = self.evaluate(denoiser, x, t)
        return predict(self.predictor, self.sde, x, pred, t, t_next, generator), {}


class EulerMaruyamaSampler(PCSampler):
    """Euler–Maruyama on the reverse-time SDE ``dx = (f x - g^2 score) dt + g dw`` (PC without corrector)."""

    name = "euler_maruyama"

    def __init__(self, sde: SDE, steps: int, spacing: str | None = None) -> None:
        super().__init__(sde, steps, predictor="euler_maruyama", corrector="none", spacing=spacing)

    def settings(self) -> dict[str, Any]:
        return {"spacing": self.spacing}
