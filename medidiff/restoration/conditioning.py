"""Conditioning rules: how a measurement ``y = A(x0) + n`` steers a sampler (any operator, any sampler).

Each rule is a :class:`~medidiff.samplers.base.Conditioning` (hooks ``wrap`` / ``after_step`` /
``repeats``), so it works with every sampler without forking it. Tensors are (B, 1, I, J, K) in model units.

* :class:`Projection` (DDNM, generalised to noisy measurements). It replaces the denoiser's x0-estimate by
  ``x0 + r_t^2 A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0)``. Here r_t^2 is the variance of x0 given x_t
  under a prior of variance ``prior_variance``: ``r_t^2 = v s^2 / (s^2 + a^2 v)``. With sigma_y = 0 this is
  DDNM's range-null-space step ``A^+ y + (I - A^+ A) x0``. For a white Gaussian prior it is the exact
  posterior mean E[x0 | x_t, y]. By Tweedie (which holds for the posterior too, since x_t and y are
  independent given x0) the matching eps is then the exact conditional score, so any sampler draws exact
  posterior samples. The closed-form tests rely on that.
* :class:`Replacement` (RePaint): after each step, known voxels are replaced by the measurement diffused
  to t_next, and steps may be repeated with re-noising (``resample``).
* :class:`DPS`: gradient guidance, ``x_next -= zeta * grad_{x_t} ||y - A(x0(x_t))|| ``, differentiating
  through the denoiser (Chung et al. 2023). It is approximate by design.
* :class:`GDP`: the degradation's parameters phi are unknown. At every step they are fitted by gradient
  steps on ``||y - A_phi(x0)||^2`` with x0 held fixed, then the sample is guided by a :class:`Projection`
  with the current A_phi (Fei et al. 2023 guide with a hand-tuned gradient step on x0; the projection
  is its closed-form, scale-free counterpart).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.diffusion.sde import SDE
from medidiff.registry import Registry
from medidiff.restoration.cg import conjugate_gradient
from medidiff.restoration.noise import NoiseModel
from medidiff.restoration.operators import Mask, Operator
from medidiff.samplers.base import Conditioning, Denoiser, StepContext, renoise


def is_pointwise(op: Operator) -> bool:
    """True when A's linear part is diagonal (one factor per voxel): operators that declare
    ``pointwise = True`` (identity, mask, bias field, intensity map, a shift of one of them)."""
    return bool(getattr(op, "pointwise", False))


def _gram_diagonal(op: Operator, like: Tensor) -> Tensor | None:
    """diag(A A^T) for pointwise operators (as a tensor like the measurement), else None."""
    if is_pointwise(op):
        ones = torch.ones_like(like)
        return op.transpose(ones) * op.transpose(ones) if not isinstance(op, Mask) else op(ones)
    return None


def solve_gram(op: Operator, rhs: Tensor, r2: float, noise_var: float, iterations: int = 30) -> Tensor:
    """Solve ``(r2 A A^T + noise_var I) z = rhs`` in measurement space (exact for pointwise operators,
    conjugate gradients otherwise). rhs must lie in the range of A when noise_var = 0."""
    diag = _gram_diagonal(op, rhs)
    if diag is not None:
        denom = r2 * diag + noise_var
        return torch.where(denom > 0, rhs / denom.clamp_min(1e-30), torch.zeros_like(rhs))

    # The Gram matrix is that of A's linear part: for an affine A (intensity offsets, the bias field acting
    # on shifted intensities) op(w) - op(0) removes the constant term.
    offset: Tensor | None = None

    def apply(z: Tensor) -> Tensor:
        nonlocal offset
        w = op.transpose(z)
        if offset is None:
            offset = op(torch.zeros_like(w))
        return r2 * (op(w) - offset) + noise_var * z

    return conjugate_gradient(apply, rhs, iterations, rtol=1e-12, atol=1e-30)


def noise_std(noise: float | NoiseModel | None) -> float:
    """The measurement noise std sigma_y a rule works with: a number, or a noise model's ``sigma`` (the
    projection is the Gaussian-likelihood posterior mean; for Rician data that is its Gaussian limit)."""
    if noise is None:
        return 0.0
    return float(noise.sigma) if isinstance(noise, NoiseModel) else float(noise)


def posterior_variance(prior_variance: float, alpha: float, sigma: float) -> float:
    """Var[x0 | x_t] for a white Gaussian prior of variance v: ``v s^2 / (s^2 + a^2 v)``."""
    return prior_variance * sigma**2 / (sigma**2 + alpha**2 * prior_variance)


class Projection(Conditioning):
    """DDNM-style projection onto the measurement (noise-aware); see the module docstring.

    Args:
        operator: A (linear; ``transpose`` required).
        y: the measurement in A's output space.
        sde: the sampler's SDE (for alpha_t, sigma_t).
        noise_sigma: measurement noise std sigma_y (model units), or the noise model (its sigma); 0 gives
            DDNM's hard projection.
        prior_variance: variance v of the data around the denoiser's estimate, used for r_t^2. Exact for a
            white Gaussian prior; for images the per-voxel variance in model units (about 0.3) works.
    """

    def __init__(
        self,
        operator: Operator,
        y: Tensor,
        sde: SDE,
        noise_sigma: float | NoiseModel = 0.0,
        prior_variance: float = 0.3,
    ) -> None:
        self.operator = operator
        self.y = y
        self.sde = sde
        self.noise_sigma = noise_std(noise_sigma)
        self.prior_variance = float(prior_variance)

    def correct(self, x: Tensor, t: Tensor, pred: Prediction) -> Prediction:
        """E[x0 | x_t, y] from the unconditional prediction, and the eps consistent with it."""
        alpha_t, sigma_t = self.sde.scalar_coefficients(float(t.reshape(-1)[0]))
        x0 = self.project(pred.x0, posterior_variance(self.prior_variance, alpha_t, sigma_t))
        # Python floats keep x's dtype (a float32 tensor here cost float64 runs 1e-7 of precision).
        return Prediction(eps=(x - alpha_t * x0) / sigma_t, x0=x0)

    def project(self, x0: Tensor, r2: float) -> Tensor:
        """``x0 + r2 A^T (r2 A A^T + sigma_y^2 I)^-1 (y - A x0)``: the posterior mean given ``y`` of a
        Gaussian centred on ``x0`` (B, 1, I, J, K) with per-voxel variance ``r2``; same shape as x0."""
        residual = self.y.to(x0) - self.operator(x0)
        return x0 + r2 * self.operator.transpose(solve_gram(self.operator, residual, r2, self.noise_sigma**2))

    def wrap(self, denoiser: Denoiser) -> Denoiser:
        def conditioned(x: Tensor, t: Tensor) -> Prediction:
            return self.correct(x, t, denoiser(x, t))

        return conditioned


class Replacement(Conditioning):
    """RePaint: known voxels come from the measurement diffused to the current time.

    Args:
        known: (1 or B, 1, I, J, K) bool, True where ``y`` is measured.
        y: (B, 1, I, J, K) measurement (model units; values outside ``known`` are ignored).
        resample: how often each of the first ``resample_fraction`` of the steps is run (RePaint's U).
    """

    def __init__(self, known: Tensor, y: Tensor, resample: int = 1, resample_fraction: float = 0.5) -> None:
        self.known = known.bool()
        self.y = y
        self.resample = int(resample)
        self.resample_fraction = float(resample_fraction)

    def after_step(self, ctx: StepContext) -> Tensor:
        y = self.y.to(ctx.x_next)
        target = y if ctx.t_next <= 0 else renoise(ctx.sde, y, 0.0, ctx.t_next, ctx.generator)
        return torch.where(self.known.to(ctx.x_next.device), target, ctx.x_next)

    def repeats(self, index: int, t: float, t_next: float) -> int:
        return self.resample if t_next > 0 and t >= 1.0 - self.resample_fraction else 1


class DPS(Conditioning):
    """Diffusion posterior sampling: a gradient step through the denoiser after every sampler step.

    ``x_next -= step_size * grad_{x_t} ||y - A(x0(x_t))||`` (the norm, not its square, as in the paper).
    """

    requires_grad = True

    def __init__(self, operator: Operator, y: Tensor, step_size: float = 1.0) -> None:
        self.operator = operator
        self.y = y
        self.step_size = float(step_size)

    def after_step(self, ctx: StepContext) -> Tensor:
        if ctx.t_next <= 0:
            return ctx.x_next
        # One norm per sample, summed: the gradient of a sample's own norm is then independent of the batch
        # (a single norm over the batch would shrink every sample's step by ~1/sqrt(B)).
        residual = (self.y.to(ctx.pred.x0) - self.operator(ctx.pred.x0)).flatten(1)
        distance = torch.linalg.vector_norm(residual, dim=1).sum()
        (grad,) = torch.autograd.grad(distance, ctx.x)
        return ctx.x_next - self.step_size * grad


class GDP(Conditioning):
    """Generative Diffusion Prior restoration with unknown degradation parameters.

    Args:
        operator: A_phi; its parameters listed in ``parameters`` are fitted (they are made trainable).
        y: the measurement.
        sde: the sampler's SDE.
        parameters: the tensors phi to fit (e.g. ``[bias.coefficients]``, ``[blur.sigma]``); none: A is
            known (e.g. a slice profile estimated beforehand) and only the misfit is recorded.
        noise_sigma, prior_variance: as in :class:`Projection`.
        fit_steps, lr: Adam steps on phi per sampler step, and their learning rate.
        constrain: optional in-place map applied to phi after each update (bounds, gauge fixing).
        guidance_from: apply the projection only once t <= guidance_from (early x0-estimates are too blurry
            to trust; phi is still fitted from the start).
    """

    def __init__(
        self,
        operator: Operator,
        y: Tensor,
        sde: SDE,
        parameters: list[Tensor],
        noise_sigma: float | NoiseModel = 0.0,
        prior_variance: float = 0.3,
        fit_steps: int = 5,
        lr: float = 0.05,
        constrain: Callable[[], None] | None = None,
        guidance_from: float = 1.0,
    ) -> None:
        self.operator = operator
        self.y = y
        self.parameters = parameters
        for p in parameters:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(parameters, lr=lr) if parameters else None
        self.fit_steps = int(fit_steps)
        self.constrain = constrain
        self.guidance_from = float(guidance_from)
        self.projection = Projection(operator, y, sde, noise_sigma, prior_variance)
        self.history: list[float] = []

    def misfit(self, x0: Tensor) -> Tensor:
        """mean((y - A_phi(x0))^2), differentiable in phi."""
        return torch.mean((self.y - self.operator(x0)) ** 2)

    def fit(self, x0: Tensor) -> float:
        """Adam steps on phi minimising mean((y - A_phi(x0))^2) with x0 fixed; returns the last loss."""
        x0 = x0.detach()
        if self.optimizer is None:
            with torch.no_grad():
                loss = self.misfit(x0)
            self.history.append(float(loss))
            return float(loss)
        loss = torch.zeros(())
        with torch.enable_grad():
            for _ in range(self.fit_steps):
                self.optimizer.zero_grad()
                loss = self.misfit(x0)
                loss.backward()
                self.optimizer.step()
                if self.constrain is not None:
                    with torch.no_grad():
                        self.constrain()
        self.history.append(float(loss))
        return float(loss)

    def wrap(self, denoiser: Denoiser) -> Denoiser:
        def conditioned(x: Tensor, t: Tensor) -> Prediction:
            pred = denoiser(x, t)
            self.fit(pred.x0)
            if float(t.reshape(-1)[0]) > self.guidance_from:
                return pred
            with torch.no_grad():
                return self.projection.correct(x, t, pred)

        return conditioned


CONDITIONING: Registry[type[Conditioning]] = Registry("conditioning rule")
CONDITIONING.register("projection", Projection)
CONDITIONING.register("replacement", Replacement)
CONDITIONING.register("dps", DPS)
CONDITIONING.register("gdp", GDP)
