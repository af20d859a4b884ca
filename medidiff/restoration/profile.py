"""The primitive under blur and slice profiles: a strided Gaussian profile along one axis, and its adjoint.

``y[s] = sum_i w(i - c_s) x[i]`` with ``c_s = s * stride + centre``, on tensors ``(B, C, I, J, K)``. The
adjoint is exact (``<A x, y> == <x, A^T y>`` to rounding) for replicate or zero padding, and both are
differentiable in x and in the width sigma.
"""

from __future__ import annotations

import math

import torch

PADDINGS = ("replicate", "zeros")
_TAPER_START = 0.75


class _AxisProfile:
    """Geometry of ``y[s] = sum_i w(i - c_s) x[i]``, ``c_s = s * stride + centre``, along one axis.

    ``w`` is a Gaussian of width ``sigma`` (voxels) on ``truncate * sigma`` voxels either side, tapered to 0
    over the outer quarter, normalised to sum 1; samples outside the volume are replicated edge voxels or
    zeros. Output length ``n // stride`` (whole slabs only).
    """

    def __init__(self, n: int, stride: int, centre: float, sigma: torch.Tensor, truncate: float) -> None:
        radius = max(1, math.ceil(truncate * float(sigma.detach().abs())))
        self.lo = min(math.floor(centre - radius), 0)
        hi = max(math.ceil(centre + radius), stride - 1)
        self.length = hi - self.lo + 1
        self.n, self.stride = n, stride
        self.m = n // stride
        self.pad_lo = -self.lo
        self.pad_hi = (self.m - 1) * stride + self.length - n - self.pad_lo  # < 0: crop the unused tail
        offsets = torch.arange(self.length, dtype=sigma.dtype, device=sigma.device) + self.lo - centre
        # Below 0.1 voxel the kernel is a delta anyway; the floor keeps the normalisation away from 0/0.
        width = sigma.abs().clamp_min(0.1)
        # The number of taps follows sigma, so a hard cut at `truncate` sigmas would make A jump (and its
        # finite-difference gradient explode) whenever a tap is added. A C1 smoothstep taper from 0.75 to 1
        # times the radius (3 to 4 sigma by default, < 1.1% of the peak) keeps A and dA/dsigma continuous.
        edge = ((offsets.abs() / (truncate * width) - _TAPER_START) / (1 - _TAPER_START)).clamp(0, 1)
        taper = 1 - edge**2 * (3 - 2 * edge)
        gauss = torch.exp(-0.5 * (offsets / width) ** 2) * taper
        self.weights = gauss / gauss.sum()


def _taps(dim: int, first: int, count: int, stride: int) -> tuple[slice, ...]:
    """Index of ``count`` samples ``first, first + stride, ...`` along tensor dimension ``dim``."""
    index = [slice(None)] * 5
    index[dim] = slice(first, first + (count - 1) * stride + 1, stride)
    return tuple(index)


def _pad(x: torch.Tensor, dim: int, lo: int, hi: int, mode: str) -> torch.Tensor:
    if hi < 0:
        x = x.narrow(dim, 0, x.shape[dim] + hi)
        hi = 0
    parts = []
    for count, index in ((lo, 0), (hi, x.shape[dim] - 1)):
        edge = x.narrow(dim, index, 1)
        sizes = list(x.shape)
        sizes[dim] = count
        parts.append(edge.expand(sizes) if mode == "replicate" else x.new_zeros(sizes))
    return torch.cat([parts[0], x, parts[1]], dim=dim)


def _pad_adjoint(p: torch.Tensor, dim: int, lo: int, hi: int, n: int, mode: str) -> torch.Tensor:
    core_len = p.shape[dim] - lo - max(hi, 0)
    core = p.narrow(dim, lo, core_len)
    if mode == "replicate":
        # Replicate padding copies the edge voxel; its adjoint adds the padded cotangents back onto it.
        head = p.narrow(dim, 0, lo).sum(dim, keepdim=True)
        tail = p.narrow(dim, lo + core_len, max(hi, 0)).sum(dim, keepdim=True)
        first = core.narrow(dim, 0, 1) + head
        if core_len == 1:
            core = first + tail
        else:
            last = core.narrow(dim, core_len - 1, 1) + tail
            core = torch.cat([first, core.narrow(dim, 1, core_len - 2), last], dim=dim)
    if hi < 0:  # the forward cropped the tail: those voxels received no weight
        sizes = list(core.shape)
        sizes[dim] = n - core_len
        core = torch.cat([core, core.new_zeros(sizes)], dim=dim)
    return core


def _check_rank(x: torch.Tensor) -> None:
    if x.ndim != 5:
        raise ValueError(f"operators expect (B, C, I, J, K) tensors, got shape {tuple(x.shape)}")


# The correlation is a sum of shifted, strided views: on CPU this is several times faster than conv3d with a
# (L, 1, 1) kernel, and much faster than conv_transpose3d for the adjoint.


def profile_forward(
    x: torch.Tensor, axis: int, sigma: torch.Tensor, stride: int, centre: float, padding: str, truncate: float
) -> torch.Tensor:
    """Gaussian profile along spatial ``axis`` (0, 1, 2) then keep every ``stride``-th sample.

    Args:
        x: (B, C, I, J, K).
        axis: spatial axis.
        sigma: 0-d tensor, profile width in voxels.
        stride: decimation factor (1 = plain blur).
        centre: position of output sample 0 on the input grid, in voxels.
        padding: "replicate" or "zeros".
        truncate: kernel radius in sigmas.

    Returns:
        (B, C, ..., n // stride, ...).
    """
    _check_rank(x)
    dim = 2 + axis
    geo = _AxisProfile(x.shape[dim], stride, centre, sigma, truncate)
    if geo.m == 0:
        raise ValueError(f"axis {axis} has {x.shape[dim]} voxels, fewer than the factor {stride}")
    padded = _pad(x, dim, geo.pad_lo, geo.pad_hi, padding)
    weights = geo.weights.to(x.dtype)
    out = weights[0] * padded[_taps(dim, 0, geo.m, stride)]
    for tap in range(1, geo.length):
        out = out + weights[tap] * padded[_taps(dim, tap, geo.m, stride)]
    return out


def profile_adjoint(
    y: torch.Tensor,
    axis: int,
    n: int,
    sigma: torch.Tensor,
    stride: int,
    centre: float,
    padding: str,
    truncate: float,
) -> torch.Tensor:
    """Exact adjoint of :func:`profile_forward` for an input of length ``n`` along ``axis``."""
    _check_rank(y)
    dim = 2 + axis
    geo = _AxisProfile(n, stride, centre, sigma, truncate)
    if y.shape[dim] != geo.m:
        raise ValueError(f"expected {geo.m} samples along axis {axis} for n={n}, got {y.shape[dim]}")
    weights = geo.weights.to(y.dtype)
    sizes = list(y.shape)
    sizes[dim] = (geo.m - 1) * stride + geo.length
    out = y.new_zeros(sizes)
    for tap in range(geo.length):
        out[_taps(dim, tap, geo.m, stride)] += weights[tap] * y
    return _pad_adjoint(out, dim, geo.pad_lo, geo.pad_hi, n, padding)
