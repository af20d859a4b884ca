"""The one sampler interface: a time grid, a denoiser, a per-step update and three conditioning hooks.

A **denoiser** is any callable ``denoiser(x, t) -> Prediction`` with x_t (B, ...) (volumes: (B, C, I, J, K))
and t (B,) continuous times in [0, 1]; it returns eps and x0 estimates (the network wrapper, the patch
wrapper of :mod:`medidiff.inference.patches` and the exact denoisers of :mod:`medidiff.diffusion.gaussian`
all qualify).

**Time grid.** ``steps`` evaluation times ``t_0 = t_start > t_1 > ... > t_{steps-1} = sde.t_min``, spaced
uniformly in t ("time"), in log-SNR ("logsnr") or by Karras' rho = 7 rule on sigma/alpha ("karras"),
followed by a terminal 0. Step k evaluates the denoiser at (x, t_k) and moves x to t_{k+1}; the last step
(t_min -> 0) returns the x0-prediction at t_min (a final denoise), so with ``steps == N``, ``t_start = 1`` and
``t_min = 1/N`` the ``ddpm`` sampler is exactly DDPM's chain. ``t_start < 1`` with a given ``x_start`` starts
the chain part-way (restoration).

**Conditioning hooks** (:class:`Conditioning`; every method defaults to "do nothing", so a rule overrides
only what it needs and no sampler is forked):

1. ``wrap(denoiser) -> denoiser``: change eps/x0 before the sampler sees them (DDNM's range-null-space
   projection, GDP). The wrapped denoiser is used for every evaluation, including a sampler's inner ones.
2. ``after_step(ctx) -> x_next``: replace the proposal ``ctx.x_next`` for time ``ctx.t_next`` (RePaint's
   replacement of known voxels by the noised measurement, DPS's gradient step). With
   ``requires_grad = True`` the step's own evaluation is recorded by autograd: ``ctx.x`` requires grad and
   ``ctx.pred`` carries the graph, so ``torch.autograd.grad(loss(ctx.pred.x0), ctx.x)`` costs no extra
   network call (a rule may still call ``ctx.denoiser`` itself). ``after_step`` runs with grad enabled then.
   At the last step ``t_next = 0`` and ``x_next`` is the final x0-prediction.
3. ``repeats(index, t, t_next) -> int``: run a step that many times; between repeats, ``x_next`` is
   re-noised from ``t_next`` back to ``t`` with the exact forward kernel (:func:`renoise`); this is
   RePaint's resampling with jump length 1. A repeat starts off the multistep solver's trajectory, so it
   runs without memory (DPM-Solver++ takes a first-order step there).

A progress ``callback(ctx)`` runs once per step after the hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.diffusion.sde import SDE
from medidiff.errors import ConfigError

SPACINGS: tuple[str, ...] = ("time", "logsnr", "karras")
Memory = dict[str, Any]


class Denoiser(Protocol):
    """``denoiser(x, t) -> Prediction``: x (B, ...) at times t (B,); returns eps and x0 like x."""

    def __call__(self, x: Tensor, t: Tensor) -> Prediction: ...


@dataclass
class StepContext:
    """What a conditioning rule and the progress callback see after the sampler's update of one step.

    Attributes:
        index: step number k, 0-based; ``total``: number of steps.
        t, t_next: the step's times (``t_next = 0`` at the last step).
        x: x_t the step started from, (B, ...). Requires grad iff the rule's ``requires_grad``.
        pred: the denoiser's output at (x, t), with autograd graph iff ``requires_grad``.
        x_next: the proposal for x at t_next (at the last step, the final x0-prediction).
        denoiser: the (wrapped) denoiser, for rules that evaluate it themselves.
        sde, generator: the sampler's SDE and random generator.
        repeat: which repetition of this step (0-based), see :meth:`Conditioning.repeats`.
    """

    index: int
    total: int
    t: float
    t_next: float
    x: Tensor
    pred: Prediction
    x_next: Tensor
    denoiser: Denoiser
    sde: SDE
    generator: torch.Generator | None
    repeat: int = 0


class Conditioning:
    """Base of conditioning rules; every hook is a no-op, so the plain instance means "unconditional"."""

    requires_grad: bool = False

    def wrap(self, denoiser: Denoiser) -> Denoiser:
        """Return the denoiser the sampler should use (default: unchanged)."""
        return denoiser

    def after_step(self, ctx: StepContext) -> Tensor:
        """Return the x to carry to ``ctx.t_next`` (default: the sampler's proposal)."""
        return ctx.x_next

    def repeats(self, index: int, t: float, t_next: float) -> int:
        """How many times to run step ``index`` (default 1: no resampling)."""
        return 1


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise like x.

    Drawn in float32 on the generator's device, then cast and moved: one seed then gives the same path in
    float32 and float64, and a CPU generator can drive a GPU run.
    """
    device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=device)
    return z.to(device=x.device, dtype=x.dtype)


def renoise(sde: SDE, x: Tensor, t_from: float, t_to: float, generator: torch.Generator | None) -> Tensor:
    """Draw x_{t_to} ~ q(x_{t_to} | x_{t_from}) for t_to >= t_from: the exact forward transition.

    ``x_to = (a_to / a_from) x + sqrt(s_to^2 - (a_to / a_from)^2 s_from^2) z``; with ``t_from = 0`` this is
    ``alpha x_0 + sigma z`` (diffusing clean data, e.g. to start a restoration at t*).
    """
    a_from, s_from = sde.scalar_coefficients(t_from) if t_from > 0 else (1.0, 0.0)
    a_to, s_to = sde.scalar_coefficients(t_to)
    ratio = a_to / a_from
    std = max(s_to**2 - (ratio * s_from) ** 2, 0.0) ** 0.5
    return ratio * x + std * randn_like(x, generator)


def time_grid(
    sde: SDE, steps: int, t_start: float | None = None, spacing: str = "time", rho: float = 7.0
) -> Tensor:
    """Evaluation times from t_start down to sde.t_min, then a terminal 0; (steps + 1,) float64.

    With ``t_start <= sde.t_min`` (nothing left to integrate) the grid is ``[t_start, 0]``: one denoise.
    """
    t0 = sde.T if t_start is None else float(t_start)
    if t0 > sde.T:
        raise ValueError(f"t_start {t0} is beyond the SDE's end time {sde.T}")
    t_end = sde.t_min
    if steps == 1 or t0 <= t_end:
        times = torch.tensor([t0], dtype=torch.float64)
    elif spacing == "time":
        times = torch.linspace(t0, t_end, steps, dtype=torch.float64)
    else:
        ratios = sde.noise_ratio(torch.tensor([t0, t_end], dtype=torch.float64))
        u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        if spacing == "logsnr":
            ratio = torch.exp(torch.log(ratios[0]) + u * (torch.log(ratios[1]) - torch.log(ratios[0])))
        else:
            ends = ratios ** (1.0 / rho)
            ratio = (ends[0] + u * (ends[1] - ends[0])) ** rho
        times = sde.t_from_noise_ratio(ratio)
        times[0], times[-1] = t0, t_end  # exact ends despite the bisection's rounding
    return torch.cat([times, torch.zeros(1, dtype=torch.float64)])


def _detached(pred: Prediction) -> Prediction:
    return Prediction(eps=pred.eps.detach(), x0=pred.x0.detach())


class Sampler(ABC):
    """A reverse-process sampler; subclasses implement :meth:`step` (one move from t to t_next > 0).

    Args:
        sde: the forward SDE (VP, sub-VP or VE).
        steps: number of denoiser evaluation times (>= 1).
        spacing: "time", "logsnr" or "karras"; defaults to the sampler's recommended one.
    """

    name: ClassVar[str] = ""
    default_spacing: ClassVar[str] = "time"
    #: denoiser evaluations per non-final step (the final denoise costs one)
    evaluations_per_step: int = 1

    def __init__(self, sde: SDE, steps: int, spacing: str | None = None) -> None:
        if int(steps) < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        spacing = spacing or self.default_spacing
        if spacing not in SPACINGS:
            raise ConfigError(f"unknown time spacing {spacing!r} (expected one of {', '.join(SPACINGS)})")
        self.sde = sde
        self.steps = int(steps)
        self.spacing = spacing

    # ------------------------------------------------------------------ configuration
    def settings(self) -> dict[str, Any]:
        """The sampler's own settings (JSON-serialisable); subclasses extend it."""
        return {"spacing": self.spacing}

    def config(self) -> dict[str, Any]:
        """``{"name", "steps", **settings}``: ``get_sampler(sde=..., **config)`` rebuilds the sampler."""
        return {"name": self.name, "steps": self.steps, **self.settings()}

    def time_grid(self, t_start: float | None = None) -> Tensor:
        """(steps + 1,) float64: the evaluation times and a terminal 0 (see :func:`time_grid`)."""
        return time_grid(self.sde, self.steps, t_start, self.spacing)

    def evaluations(self, t_start: float | None = None) -> int:
        """Denoiser evaluations of one unconditioned run (without repeats)."""
        return (len(self.time_grid(t_start)) - 2) * self.evaluations_per_step + 1

    # ------------------------------------------------------------------ the update
    @abstractmethod
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
        """Move x from t to t_next (0 < t_next < t) given ``pred = denoiser(x, t)``.

        Returns the new x and the memory for the next step (multistep solvers: the previous x0 and
        log-SNR; stateless samplers return ``{}``). Return a new dict rather than modifying ``memory``.
        """

    # ------------------------------------------------------------------ the loop
    def sample(
        self,
        denoiser: Denoiser,
        shape: Sequence[int] | None = None,
        *,
        x_start: Tensor | None = None,
        t_start: float | None = None,
        generator: torch.Generator | None = None,
        conditioning: Conditioning | None = None,
        callback: Callable[[StepContext], None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Run the reverse process and return the final x0-prediction, like x.

        Args:
            denoiser: see :class:`Denoiser`.
            shape: (B, C, I, J, K) (or any (B, ...)) when starting from the prior at T.
            x_start: x at ``t_start`` instead of a prior draw (e.g. a noised measurement).
            t_start: start time (default T = 1); ``t_start < T`` needs ``x_start``.
            generator: makes the run reproducible (prior draw and all noise).
            conditioning: hooks of a conditioning rule; ``None`` samples unconditionally.
            callback: called with the :class:`StepContext` after every step.
            device, dtype: of the prior draw (ignored with ``x_start``).
        """
        if x_start is None:
            if shape is None:
                raise ValueError("sample() needs a shape or an x_start")
            if t_start is not None and t_start < self.sde.T:
                raise ValueError("t_start < T needs an x_start (the prior is only known at T)")
            gen_device = generator.device if generator is not None else device
            x = self.sde.prior_sampling(tuple(shape), generator=generator, device=gen_device)
            x = x.to(device=device, dtype=dtype)
        else:
            x = x_start.detach()
        rule = conditioning or Conditioning()
        model = rule.wrap(denoiser)
        grid = [float(t) for t in self.time_grid(t_start)]
        total = len(grid) - 1
        memory: Memory = {}
        with torch.no_grad():
            for index in range(total):
                t, t_next = grid[index], grid[index + 1]
                n_repeats = max(1, int(rule.repeats(index, t, t_next)))
                for repeat in range(n_repeats):
                    x_in, pred = self._evaluate(model, x, t, rule.requires_grad)
                    if index == total - 1:
                        x_next, next_memory = pred.x0.detach(), memory
                    else:
                        # a re-noised x is off the trajectory the multistep memory came from: restart
                        step_memory = memory if repeat == 0 else {}
                        x_next, next_memory = self.step(
                            model, x_in.detach(), _detached(pred), t, t_next, generator, step_memory
                        )
                    ctx = StepContext(
                        index, total, t, t_next, x_in, pred, x_next, model, self.sde, generator, repeat
                    )
                    with torch.set_grad_enabled(rule.requires_grad):
                        x_next = rule.after_step(ctx).detach()
                    ctx.x_next = x_next
                    if repeat < n_repeats - 1:
                        x = renoise(self.sde, x_next, t_next, t, generator)
                x, memory = x_next, next_memory
                if callback is not None:
                    callback(ctx)
        return x

    @staticmethod
    def _evaluate(model: Denoiser, x: Tensor, t: float, requires_grad: bool) -> tuple[Tensor, Prediction]:
        """Evaluate the denoiser at (x, t); with ``requires_grad`` the graph from x is recorded."""
        t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        if not requires_grad:
            return x, model(x, t_vec)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            return x_in, model(x_in, t_vec)

    @staticmethod
    def evaluate(model: Denoiser, x: Tensor, t: float) -> Prediction:
        """``model(x, t)`` at one scalar time for the whole batch (for a step's inner evaluations)."""
        return model(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))


@dataclass
class CountingDenoiser:
    """A denoiser that counts its evaluations (``calls``) and records their times (tests, benchmarks)."""

    denoiser: Denoiser
    calls: int = 0
    times: list[float] = field(default_factory=list)

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        self.calls += 1
        self.times.append(float(t.reshape(-1)[0]))
        return self.denoiser(x, t)
