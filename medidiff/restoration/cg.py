"""The one conjugate-gradient solver: symmetric positive (semi-)definite systems given as a function.

Used by the noise-aware projection (``(r2 A A^T + sigma_y^2 I) z = r`` in measurement space) and by the
regularised pseudo-inverse of operators without a closed form (``(A^T A + damping I) x = A^T y``). Built from
torch ops, so it is differentiable where its ``apply`` is. torch has no matrix-free CG of its own, and
scipy's works on flat float64 numpy vectors, off the device and outside autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    rhs: Tensor,
    iterations: int,
    rtol: float,
    atol: float = 0.0,
) -> Tensor:
    """Solve ``S z = rhs`` from ``z = 0``, where ``apply(v) = S v`` (the whole batch is one system).

    Args:
        apply: the symmetric positive semi-definite map, on tensors shaped like ``rhs``.
        rhs: the right-hand side, any shape (e.g. (B, 1, I, J, K)); it must lie in the range of S.
        iterations: at most this many iterations.
        rtol, atol: stop once ``||residual||^2 <= rtol ||rhs||^2 + atol``.

    Returns:
        z, shaped like rhs.
    """
    z = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rs = (residual * residual).sum()
    tol = rtol * float(rs) + atol
    for _ in range(iterations):
        q = apply(direction)
        step = rs / (direction * q).sum().clamp_min(1e-30)
        z = z + step * direction
        residual = residual - step * q
        rs_new = (residual * residual).sum()
        if float(rs_new) <= tol:
            break
        direction = residual + (rs_new / rs) * direction
        rs = rs_new
    return z
