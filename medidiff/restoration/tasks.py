"""The three restoration tasks in model units: denoise, inpaint, and restore (GDP with unknown phi).

Each task takes the measurement ``y`` (1, 1, I, J, K) in model units and a whole-volume denoiser (the patch
path) and returns a :class:`TaskResult`. Reading, intensity normalisation and writing live in
:mod:`medidiff.inference.pipeline`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from medidiff.diffusion.sde import SDE
from medidiff.restoration.conditioning import GDP, Projection, is_pointwise
from medidiff.restoration.fill import biharmonic_fill
from medidiff.restoration.operators import BiasField, Compose, GaussianBlur, Mask, Operator, SliceProfile
from medidiff.samplers import Conditioning, Denoiser, Sampler, StepContext, get_sampler
from medidiff.samplers.base import renoise

Callback = Callable[[StepContext], None]


@dataclass
class TaskResult:
    """x0: (1, 1, I, J, K) estimate; std: voxel-wise std over samples or None; info: what was done."""

    x0: Tensor
    std: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _scalar_t(sde: SDE, t: float) -> tuple[float, float]:
    alpha, sigma = sde.coefficients(torch.tensor(t, dtype=torch.float64))
    return float(alpha), float(sigma)


def start_time(sde: SDE, ratio: float) -> float:
    """The diffusion time at which sigma/alpha equals ``ratio`` (never below the SDE's t_min)."""
    return max(float(sde.t_from_noise_ratio(ratio)), sde.t_min)


def _chains(
    run: Sampler,
    denoiser: Denoiser,
    sde: SDE,
    init: Tensor,
    t_start: float,
    samples: int,
    rule: Conditioning,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> list[Tensor]:
    """``max(1, samples)`` conditioned chains, each from ``init`` (1, 1, I, J, K) freshly diffused to
    ``t_start``; returns their x0, each (1, 1, I, J, K)."""
    return [
        run.sample(
            denoiser,
            x_start=renoise(sde, init, 0.0, t_start, generator),
            t_start=t_start,
            generator=generator,
            conditioning=rule,
            callback=callback,
        )
        for _ in range(max(1, samples))
    ]


def _mean_std(samples: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    stack = torch.stack(samples)
    std = stack.std(dim=0, unbiased=True) if len(samples) > 1 else None
    return stack.mean(dim=0), std


def denoise(
    y: Tensor,
    denoiser: Denoiser,
    sde: SDE,
    noise_sigma: float,
    samples: int = 1,
    steps: int = 10,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> TaskResult:
    """Gaussian denoising of ``y = x0 + noise_sigma * n`` (model units).

    ``alpha(t*) y`` has exactly the law of x_{t*} when ``sigma(t*) / alpha(t*) = noise_sigma``, so the
    diffusion time matched to the noise level turns the measurement into a point of the reverse process.
    With ``samples == 1`` the result is Tweedie's posterior mean E[x0 | y] (one network evaluation). With
    ``samples > 1`` it is the mean of stochastic posterior samples, each the reverse process run from t*
    with ``steps`` steps, and the voxel-wise std of those samples.
    """
    t_star = start_time(sde, max(noise_sigma, 1e-8))
    alpha, _ = _scalar_t(sde, t_star)
    x_t = alpha * y
    info: dict[str, Any] = {"t_star": t_star, "noise_sigma_model": noise_sigma}
    if samples <= 1:
        pred = denoiser(x_t, torch.full((y.shape[0],), t_star, dtype=torch.float64, device=y.device))
        info.update(method="tweedie", network_evaluations=1)
        return TaskResult(pred.x0, None, info)
    run = get_sampler(sampler, sde, steps)
    draws = [
        run.sample(denoiser, x_start=x_t, t_start=t_star, generator=generator, callback=callback)
        for _ in range(samples)
    ]
    mean, std = _mean_std(draws)
    info.update(
        method=f"posterior samples ({sampler})",
        samples=samples,
        network_evaluations=samples * run.evaluations(t_star),
    )
    return TaskResult(mean, std, info)


def inpaint(
    y: Tensor,
    known: Tensor,
    denoiser: Denoiser,
    sde: SDE,
    steps: int = 50,
    start_ratio: float = 12.0,
    sampler: str = "ddim",
    samples: int = 1,
    prior_variance: float = 0.3,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> TaskResult:
    """Fill voxels where ``known`` is False, consistently with the known ones (which stay exactly y).

    The missing region starts from a biharmonic fill (:mod:`medidiff.restoration.fill`), diffused to the
    time where the noise ratio sigma/alpha is ``start_ratio`` (SDEdit), so a short chain (``steps``
    evaluations) suffices. At every step the x0-estimate is projected onto the known voxels (DDNM's
    range-null-space rule with A = mask). With ``samples > 1`` the result is the mean of independent chains
    (closer to the posterior mean, which is what PSNR rewards) and ``std`` their spread.
    """
    t_start = start_time(sde, start_ratio)
    known = known.bool()
    missing = ~known[0, 0].cpu().numpy()
    fill = torch.from_numpy(biharmonic_fill(y[0, 0].cpu().numpy(), missing)).to(y)[None, None]
    init = torch.where(known, y, fill)
    rule = Projection(Mask(known), torch.where(known, y, torch.zeros_like(y)), sde, 0.0, prior_variance)
    run = get_sampler(sampler, sde, steps)
    draws = _chains(run, denoiser, sde, init, t_start, samples, rule, generator, callback)
    mean, std = _mean_std([torch.where(known, y, x0) for x0 in draws])
    info = {
        "method": f"DDNM projection + {sampler}",
        "t_start": t_start,
        "steps": steps,
        "network_evaluations": max(1, samples) * run.evaluations(t_start),
    }
    return TaskResult(mean, std, info)


class Shifted(Operator):
    """``A(x) = inner(x + offset) - offset``: a multiplicative degradation of intensities that are 0 in air,
    acting on model units where air is ``-offset``. ``transpose`` is that of the linear part (inner's)."""

    kind = "shifted"

    def __init__(self, inner: Operator, offset: float) -> None:
        super().__init__()
        self.inner = inner
        self.offset = float(offset)

    @property
    def pointwise(self) -> bool:
        """The shift keeps a pointwise inner operator pointwise (the projection's exact solve applies)."""
        return is_pointwise(self.inner)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x + self.offset) - self.offset

    def transpose(self, y: Tensor) -> Tensor:
        return self.inner.transpose(y)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "offset": self.offset, "inner": self.inner.spec()}


@dataclass
class DegradationModel:
    """The operator A_phi for a list of degradation kinds, its trainable phi and their constraints."""

    operator: Operator
    parameters: list[Tensor]
    constrain: Callable[[], None]
    parts: dict[str, Operator]


def build_degradation(
    kinds: list[str],
    air_offset: float,
    slice_axis: int | None = None,
    factor: int = 1,
    slice_sigma: float | None = None,
) -> DegradationModel:
    """A_phi for ``kinds`` (subset of bias, blur, slices) applied in the order bias -> blur -> slices.

    ``slice_sigma`` fixes the slice-profile width (fine voxels), e.g. to the spectral estimate of
    :func:`~medidiff.restoration.slice_profile_estimate.estimate_slice_sigma`; GDP then leaves it alone.
    Without it GDP fits the width from FWHM = factor, but that fit is biased toward narrow profiles: the
    chain starts from an interpolation that already reproduces the thick slices with no blur (measured on
    IXI015: 0.4-0.7 fitted for 2.0 true, and a start at 1.7 drifted back to 0.7).
    """
    ops: list[Operator] = []
    params: list[Tensor] = []
    parts: dict[str, Operator] = {}
    bounds: list[tuple[Tensor, float, float]] = []
    if "bias" in kinds:
        bias = BiasField(degree=3)
        parts["bias"] = bias
        ops.append(Shifted(bias, air_offset))
        params.append(bias.coefficients)
    if "blur" in kinds:
        blur = GaussianBlur(sigma=1.0)
        parts["blur"] = blur
        ops.append(blur)
        params.append(blur.sigma)
        bounds.append((blur.sigma, 0.3, 4.0))
    if "slices" in kinds:
        if slice_axis is None or factor < 2:
            from medidiff.errors import InputError

            raise InputError(
                "--degradation slices needs a thick-slice input (one axis coarser than the target)"
            )
        profile = SliceProfile(axis=slice_axis, factor=factor, sigma=slice_sigma)  # None: FWHM = factor
        parts["slices"] = profile
        ops.append(profile)
        if slice_sigma is None:
            params.append(profile.sigma)
            bounds.append((profile.sigma, 0.3, 2.0 * factor))

    def constrain() -> None:
        for tensor, lo, hi in bounds:
            tensor.clamp_(lo, hi)

    operator = ops[0] if len(ops) == 1 else Compose(ops)
    return DegradationModel(operator, params, constrain, parts)


def restore_unknown(
    y: Tensor,
    init: Tensor,
    degradation: DegradationModel,
    denoiser: Denoiser,
    sde: SDE,
    noise_sigma: float,
    steps: int = 50,
    start_ratio: float = 6.0,
    samples: int = 1,
    sampler: str = "ddim",
    prior_variance: float = 0.3,
    fit_steps: int = 5,
    lr: float = 0.05,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> TaskResult:
    """GDP: sample x0 while fitting the unknown phi of A_phi to ``y`` (see :class:`conditioning.GDP`).

    ``init`` (the shape of the output) is a classical first guess (for thick slices, an interpolation onto
    the fine grid) that is diffused to the noise ratio ``start_ratio`` to start the chain; when A is known
    (no parameters to fit) it is first made consistent with ``y`` (:meth:`Projection.project`). With
    ``samples > 1``, independent chains are averaged (phi keeps being refined across them).
    """
    t_start = start_time(sde, start_ratio)
    degradation.operator.to(y.device)  # in place: the Parameters listed in degradation.parameters move too
    rule = GDP(
        degradation.operator,
        y,
        sde,
        degradation.parameters,
        noise_sigma=noise_sigma,
        prior_variance=prior_variance,
        fit_steps=fit_steps,
        lr=lr,
        constrain=degradation.constrain,
    )
    if not degradation.parameters:
        # A is known (e.g. a slice profile estimated beforehand): start from the first guess made consistent
        # with y (its posterior mean under a white prior of the projection's variance). For thick slices the
        # cubic interpolation is blurrier than the slices it came from. Measured on the development volumes,
        # x4 along array axis 2, profile sigma 2, 27,500-step model (docs/benchmarks.md): IXI012 (sagittal,
        # estimate 1.8) 28.00 -> 28.03 dB, the bundled sample (axial, estimate 2.0) 26.76 -> 26.92 (cubic
        # 27.07 / 24.46).
        with torch.no_grad():
            init = rule.projection.project(init, prior_variance)
    run = get_sampler(sampler, sde, steps)
    try:
        draws = _chains(run, denoiser, sde, init, t_start, samples, rule, generator, callback)
    finally:
        for p in degradation.parameters:  # hand the fitted operator back frozen, as operators are built
            p.requires_grad_(False)
    params = {name: op.spec() for name, op in degradation.parts.items()}
    info = {
        "method": f"GDP ({sampler})",
        "t_start": t_start,
        "steps": steps,
        "parameters": params,
        "network_evaluations": max(1, samples) * run.evaluations(t_start),
        "fit_loss": rule.history[-1] if rule.history else math.nan,
    }
    mean, std = _mean_std(draws)
    return TaskResult(mean, std, info)
