"""The patch path: a patch-level denoiser evaluated over any volume with random window offsets.

For a per-voxel (diagonal) Gaussian prior the exact denoiser is pointwise, so evaluating it window by
window and blending must reproduce the whole-volume denoiser exactly; sampling through the patch path
must then reproduce the prior's moments.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from medidiff.diffusion import SDE, VPSDE, Prediction
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.inference.patches import FLIPS, PatchDenoiser, window_offsets
from medidiff.samplers import get_sampler

VOLUME = (1, 20, 18, 22)
PATCH = 8


def _prior(sde: SDE, shape: tuple[int, ...] = VOLUME) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(31)
    mean = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    std = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    return DiagonalGaussian(mean, std**2, sde)


class _WindowPrior:
    """The patch-level model: the same Gaussian, reading its mean/variance from the windowed context."""

    def __init__(self, sde: SDE, channels: int = 1) -> None:
        self.sde, self.channels = sde, channels
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: Tensor, t: Tensor, context: Tensor) -> Prediction:
        self.shapes.append(tuple(x.shape))
        c = self.channels
        return DiagonalGaussian(context[:, :c], context[:, c:], self.sde)(x, t)


def _patch_denoiser(prior: DiagonalGaussian, **kwargs: object) -> tuple[PatchDenoiser, _WindowPrior]:
    model = _WindowPrior(prior.sde, prior.mean.shape[0])
    context = torch.cat([prior.mean, prior.var])[None]
    return PatchDenoiser(model, PATCH, context=context, **kwargs), model  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [VOLUME, (2, 9, 12, 17), (1, 5, 12, 3)], ids=["20x18x22", "2ch", "small"])
def test_patch_path_equals_the_whole_volume_denoiser(shape: tuple[int, ...]) -> None:
    sde = VPSDE()
    prior = _prior(sde, shape)
    patched, model = _patch_denoiser(prior, batch_size=16, generator=torch.Generator().manual_seed(0))
    x = 2 * torch.randn((3, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.02, 0.4, 0.95], dtype=torch.float64)  # per-sample times
    direct = prior(x, t)
    for _ in range(3):  # new offsets each call
        got = patched(x, t)
        torch.testing.assert_close(got.eps, direct.eps, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.x0, direct.x0, rtol=0, atol=1e-5)
    assert all(s[0] <= 16 and s[2:] == (PATCH,) * 3 for s in model.shapes)
    assert patched.stats.calls == 3 and patched.stats.max_batch <= 16


@pytest.mark.parametrize("views", [2, 8])
def test_mirrored_views_are_mirrored_back(views: int) -> None:
    """Each view mirrors the window and its context before the network and the prediction after: with a
    voxel-wise prior read from the context, every view is exact, and so is their average."""
    sde = VPSDE()
    prior = _prior(sde)
    patched, _ = _patch_denoiser(prior, batch_size=16, views=views)
    x = 2 * torch.randn((2, *VOLUME), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = torch.tensor([0.1, 0.7], dtype=torch.float64)
    got, direct = patched(x, t), prior(x, t)
    torch.testing.assert_close(got.eps, direct.eps, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.x0, direct.x0, rtol=0, atol=1e-5)
    assert patched.stats.calls == views  # one sweep of the volume per view


class _Lopsided:
    """A patch denoiser that is not flip-equivariant: x0 = w * x with a fixed asymmetric w, eps = x."""

    def __init__(self, patch: int) -> None:
        self.w = torch.rand((patch,) * 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        return Prediction(eps=x, x0=self.w * x)


def test_views_average_the_mirrored_predictions_and_all_eight_are_equivariant() -> None:
    """One window covers the volume, so the result is exact: 2 views give x (w + w mirrored)/2, and the
    average over all 8 mirror images commutes with every mirroring of the input."""
    model = _Lopsided(PATCH)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((1, 1, PATCH, PATCH, PATCH), generator=gen, dtype=torch.float64)
    t = torch.full((1,), 0.3, dtype=torch.float64)
    two = PatchDenoiser(model, PATCH, views=2)(x, t)
    torch.testing.assert_close(two.x0, x * (model.w + model.w.flip(0, 1, 2)) / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(two.eps, x, rtol=0, atol=1e-12)
    eight = PatchDenoiser(model, PATCH, views=8)
    reference = eight(x, t).x0
    for axes in FLIPS[1:]:
        dims = tuple(2 + a for a in axes)
        torch.testing.assert_close(eight(x.flip(dims), t).x0, reference.flip(dims), rtol=0, atol=1e-12)
    one = PatchDenoiser(model, PATCH)(x, t).x0
    assert not torch.allclose(one.flip(2, 3, 4), PatchDenoiser(model, PATCH)(x.flip(2, 3, 4), t).x0)


def test_window_offsets_are_random_reproducible_and_tile_exactly() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    x = torch.zeros((1, *VOLUME), dtype=torch.float64)
    t = torch.full((1,), 0.5, dtype=torch.float64)

    def pads(seed: int) -> list[tuple[tuple[int, int], ...]]:
        patched, _ = _patch_denoiser(prior, overlap=0.25, generator=torch.Generator().manual_seed(seed))
        out = []
        for _ in range(8):
            patched(x, t)
            out.append(patched.last_pads)
        return out

    first = pads(0)
    assert first == pads(0)
    assert first != pads(1)
    assert len(set(first)) >= 6  # a new offset (almost) every call
    stride = int(PATCH * 0.75)
    for call in first:
        for (before, after), size in zip(call, VOLUME[1:], strict=True):
            assert 0 <= before < stride and after >= 0
            assert (before + size + after - PATCH) % stride == 0  # a regular grid, no clamped last window
    # an axis shorter than the patch is padded up to it, at a random place
    offsets = {window_offsets(5, 8, 6, torch.Generator().manual_seed(s)) for s in range(20)}
    assert all(b + a == 3 for b, a in offsets) and len(offsets) > 1


def test_work_is_bounded_by_the_patch_batch() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    patched, model = _patch_denoiser(prior, batch_size=5, overlap=0.5)
    x = torch.randn((2, *VOLUME), dtype=torch.float64)
    patched(x, torch.full((2,), 0.3, dtype=torch.float64))
    stride = PATCH // 2
    per_axis = [
        (b + s + a - PATCH) // stride + 1 for (b, a), s in zip(patched.last_pads, VOLUME[1:], strict=True)
    ]
    assert patched.stats.windows == 2 * math.prod(per_axis) == sum(s[0] for s in model.shapes)
    assert max(s[0] for s in model.shapes) == 5 and patched.stats.batches == len(model.shapes)
    assert all(s[1:] == (1, PATCH, PATCH, PATCH) for s in model.shapes)


def test_windows_without_foreground_are_filled_without_a_network_call() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    foreground = torch.zeros((1, *VOLUME), dtype=torch.bool)
    foreground[..., 2:7, 3:8, 4:9] = True
    background = -0.7
    patched, model = _patch_denoiser(
        prior, batch_size=8, sde=sde, foreground=foreground, background=background
    )
    x = torch.randn((2, *VOLUME), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.1, 0.6], dtype=torch.float64)
    got, direct = patched(x, t), prior(x, t)
    stats = patched.stats
    assert stats.skipped > stats.windows > 0
    assert sum(s[0] for s in model.shapes) == stats.windows
    fg = foreground.expand_as(x)
    # every window covering a foreground voxel was evaluated: exact there
    torch.testing.assert_close(got.x0[fg], direct.x0[fg], rtol=0, atol=1e-10)
    # far from the foreground (> one patch away) every covering window was skipped: the cheap fill
    far = torch.ones_like(fg)
    far[..., : 7 + PATCH, : 8 + PATCH, : 9 + PATCH] = False
    assert bool(far.any())
    alpha, sigma = (c.reshape(2, 1, 1, 1, 1) for c in sde.coefficients(t))
    torch.testing.assert_close(got.x0[far], torch.full_like(got.x0[far], background))
    torch.testing.assert_close(got.eps[far], ((x - alpha * background) / sigma)[far])
    # a predicate can skip too (here: everything at t > 0.5)
    patched_pred, _ = _patch_denoiser(prior, sde=sde, skip=lambda xw, tw: tw > 0.5)
    out = patched_pred(x, t)
    assert patched_pred.stats.windows == patched_pred.stats.skipped  # sample 0 evaluated, sample 1 skipped
    torch.testing.assert_close(out.x0[0], direct.x0[0], rtol=0, atol=1e-10)
    assert bool((out.x0[1] == -1.0).all())


def test_gradients_flow_through_the_patch_path() -> None:
    """Guidance rules (DPS) differentiate x0_hat through the windows: d x0 / d x_t = a v / (a^2 v + s^2)."""
    sde = VPSDE()
    prior = _prior(sde)
    patched, _ = _patch_denoiser(prior)
    x = torch.randn((1, *VOLUME), dtype=torch.float64, requires_grad=True)
    t = torch.full((1,), 0.3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(patched(x, t).x0.sum(), x)
    alpha, sigma = (float(c) for c in sde.coefficients(t))
    torch.testing.assert_close(grad[0], alpha * prior.var / (alpha**2 * prior.var + sigma**2))


def test_sampling_through_the_patch_path_reproduces_the_prior() -> None:
    """DPM-Solver++(2M), 25 steps, 32 draws of a 20x18x22 volume through 8^3 windows.

    The run must equal direct whole-volume sampling from the same seed (the patch path is exact here), and
    the standardised draws z = (x - mean) / sd must be N(0, 1): pooled mean within 4/sqrt(M) + 0.01 and
    variance within 5% (solver bias, see tests/samplers) + 4 sqrt(2/M), M = 253440 values; per voxel,
    32 * mean(zbar^2) (1 when unbiased; a misplaced window would make it >> 1) within [0.85, 1.15].
    """
    sde = VPSDE()
    prior = _prior(sde)
    patched, _ = _patch_denoiser(prior, batch_size=64, generator=torch.Generator().manual_seed(3))
    sampler = get_sampler("dpmpp2m", sde, 25)
    n = 32
    pads: list[tuple[tuple[int, int], ...]] = []
    x = sampler.sample(
        patched,
        (n, *VOLUME),
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
        callback=lambda ctx: pads.append(patched.last_pads),
    )
    direct = sampler.sample(
        prior, (n, *VOLUME), generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    torch.testing.assert_close(x, direct, rtol=0, atol=1e-6)
    assert patched.stats.calls == sampler.evaluations() == 25
    assert len(set(pads)) >= 15  # the window grid moved between steps
    alpha, sigma = (float(c) for c in sde.coefficients(torch.tensor(sde.t_min, dtype=torch.float64)))
    target_var = alpha**2 * prior.var**2 / (alpha**2 * prior.var + sigma**2)
    z = (x - prior.mean) / target_var.sqrt()
    m = z.numel()
    assert abs(float(z.mean())) <= 4 / math.sqrt(m) + 0.01
    assert float(z.var()) == pytest.approx(1.0, abs=0.05 + 4 * math.sqrt(2 / m))
    chi = n * float(z.mean(0).pow(2).mean())
    assert 0.85 <= chi <= 1.15


def test_bad_settings_are_rejected() -> None:
    sde = VPSDE()
    model = _WindowPrior(sde)
    with pytest.raises(ValueError, match="overlap"):
        PatchDenoiser(model, PATCH, overlap=1.0)
    with pytest.raises(ValueError, match="sde"):
        PatchDenoiser(model, PATCH, foreground=torch.ones((1, *VOLUME), dtype=torch.bool))
    with pytest.raises(ValueError, match="patch_size"):
        PatchDenoiser(model, (8, 8))(torch.zeros((1, *VOLUME)), torch.ones(1))
    for views in (0, 9):
        with pytest.raises(ValueError, match="views"):
            PatchDenoiser(model, PATCH, views=views)
    with pytest.raises(ValueError, match="3 spatial axes"):
        PatchDenoiser(_Lopsided(PATCH), PATCH, views=3)(torch.zeros((1, 1, 9, 9)), torch.ones(1))
