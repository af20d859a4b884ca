"""Degradation operators A for restoration, on torch tensors ``(B, C, I, J, K)``.

Each operator is a small :class:`torch.nn.Module` with ``forward(x)`` (= ``A(x)``), ``transpose(y)`` (the
adjoint of its linear part) and ``pinv(y)`` (a pseudo-inverse), and keeps its parameters phi as
:class:`torch.nn.Parameter` (``requires_grad=False`` by default; ``op.requires_grad_(True)`` makes them
fittable by gradient descent, as GDP does). Passing a tensor that already requires grad keeps it as is, so
gradients flow back to the caller's tensor (``gradcheck`` uses this). Everything is built from torch ops,
hence differentiable in x and in phi.

Along one axis the blur and the slice profile share one exact strided-correlation primitive
(:mod:`medidiff.restoration.profile`), so ``<A x, y> == <x, A^T y>`` holds to rounding for either padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from medidiff.errors import ConfigError
from medidiff.registry import Registry
from medidiff.restoration.cg import conjugate_gradient
from medidiff.restoration.profile import PADDINGS as _PADDINGS
from medidiff.restoration.profile import profile_adjoint, profile_forward


def _param(value: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A Parameter (frozen by default) or, when ``value`` already requires grad, the tensor itself."""
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return value
    tensor = torch.as_tensor(value).detach().clone()
    if (
        not tensor.is_floating_point()
    ):  # Python numbers and lists: the default dtype; float arrays keep theirs
        tensor = tensor.to(torch.get_default_dtype())
    return torch.nn.Parameter(tensor, requires_grad=False)


def _to_list(value: torch.Tensor) -> Any:
    return value.detach().cpu().double().tolist()


# --- operators ----------------------------------------------------------------------------------------------


class Operator(torch.nn.Module):
    """A degradation ``y = A(x)``, x: (B, C, I, J, K). Subclasses set ``kind`` and implement ``forward``.

    ``pointwise`` is True when A's linear part is diagonal (one factor per voxel): the projection's solve is
    then exact and pointwise (:func:`medidiff.restoration.conditioning.solve_gram`).
    """

    kind: str = ""
    pointwise: bool = False

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint of the (linear part of the) operator: ``<A x, y> = <x, A^T y>``."""
        raise NotImplementedError(f"{type(self).__name__} has no transpose")

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A pseudo-inverse: maps a measurement back to the input space (see each operator)."""
        raise NotImplementedError(f"{type(self).__name__} has no pseudo-inverse")

    def spec(self) -> dict[str, Any]:
        """JSON-able description, inverted by :func:`operator_from_spec`."""
        return {"type": self.kind}


class Identity(Operator):
    """``A = I``."""

    kind = "identity"
    pointwise = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Mask(Operator):
    """Keep the known voxels: ``A x = m * x`` (same shape; missing voxels read 0).

    Args:
        known: boolean/0-1 array broadcastable to x, 1 = known voxel. A CLI mask (nonzero = missing) is
            ``Mask(missing == 0)``.
    """

    kind = "mask"
    pointwise = True

    def __init__(self, known: torch.Tensor) -> None:
        super().__init__()
        self.known: torch.Tensor
        self.register_buffer("known", torch.as_tensor(known).bool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known.to(x.dtype)

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.known.to(y.dtype)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-fill: the Moore-Penrose inverse of a 0/1 diagonal is itself."""
        return y * self.known.to(y.dtype)


class GaussianBlur(Operator):
    """Separable Gaussian blur, sigma per axis in voxels (differentiable in sigma).

    Args:
        sigma: one width, or three (I, J, K), in voxels.
        padding: "replicate" (no dark rim where tissue touches the field of view) or "zeros".
        truncate: kernel radius in sigmas (re-derived from the current sigma at every call); the Gaussian is
            tapered smoothly to 0 over the last quarter of the radius.
    """

    kind = "blur"

    def __init__(
        self,
        sigma: float | Sequence[float] | torch.Tensor = 1.0,
        padding: str = "replicate",
        truncate: float = 4.0,
    ) -> None:
        super().__init__()
        if padding not in _PADDINGS:
            raise ConfigError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        sigma_t = _param(sigma)
        if sigma_t.ndim == 0:
            sigma_t = sigma_t.expand(3) if sigma_t.requires_grad else _param([float(sigma_t)] * 3)
        if sigma_t.shape != (3,):
            raise ConfigError(f"blur sigma must be one value or three, got shape {tuple(sigma_t.shape)}")
        self.sigma = sigma_t
        self.padding, self.truncate = padding, truncate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(3):
            x = profile_forward(x, axis, self.sigma[axis], 1, 0.0, self.padding, self.truncate)
        return x

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        for axis in reversed(range(3)):
            n = y.shape[2 + axis]
            y = profile_adjoint(y, axis, n, self.sigma[axis], 1, 0.0, self.padding, self.truncate)
        return y

    def pinv(self, y: torch.Tensor, damping: float = 1e-3, iterations: int = 50) -> torch.Tensor:
        """Regularised least squares ``argmin ||A x - y||^2 + damping ||x||^2`` by conjugate gradients.

        A Gaussian blur is invertible in exact arithmetic but hopelessly ill-conditioned; the damping plays
        the role of the singular-value cut-off of a truncated pseudo-inverse.
        """
        return conjugate_gradient_pinv(self, y, damping, iterations)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "sigma": _to_list(self.sigma), "padding": self.padding}


class SliceProfile(Operator):
    """Thick-slice acquisition: Gaussian through-plane profile, then keep one slice per slab of ``factor``.

    Output slice ``s`` is centred on input position ``s * factor + (factor - 1) / 2`` (the slab centre) and
    there are ``n // factor`` of them. :meth:`output_affine` gives the matching geometry.

    Args:
        axis: through-plane spatial axis (0, 1 or 2).
        factor: slab thickness k in input slices.
        sigma: profile width in input voxels; default FWHM = k (sigma = k / 2.355).
        padding: "replicate" or "zeros".
        truncate: kernel radius in sigmas.
    """

    kind = "slice_profile"

    def __init__(
        self,
        axis: int,
        factor: int,
        sigma: float | torch.Tensor | None = None,
        padding: str = "replicate",
        truncate: float = 4.0,
    ) -> None:
        super().__init__()
        if axis not in (0, 1, 2) or int(factor) < 1:
            raise ConfigError(
                f"slice profile needs axis in 0..2 and factor >= 1, got axis={axis} factor={factor}"
            )
        if padding not in _PADDINGS:
            raise ConfigError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        self.axis, self.factor = int(axis), int(factor)
        self.sigma = _param(self.factor / (2 * math.sqrt(2 * math.log(2))) if sigma is None else sigma)
        self.padding, self.truncate = padding, truncate

    @property
    def centre(self) -> float:
        return (self.factor - 1) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return profile_forward(
            x, self.axis, self.sigma, self.factor, self.centre, self.padding, self.truncate
        )

    def transpose(self, y: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Zero-insert then blur (adjoint); ``n`` = input length along the axis (default ``m * factor``)."""
        n = y.shape[2 + self.axis] * self.factor if n is None else n
        return profile_adjoint(
            y, self.axis, n, self.sigma, self.factor, self.centre, self.padding, self.truncate
        )

    def matrix(self, n: int) -> torch.Tensor:
        """The (n // factor, n) matrix of the operator along its axis (differentiable in sigma)."""
        eye = torch.eye(n, dtype=self.sigma.dtype, device=self.sigma.device)
        shape = [n, 1, 1, 1, 1]
        shape[2 + self.axis] = n
        rows = profile_forward(
            eye.reshape(shape), self.axis, self.sigma, self.factor, self.centre, self.padding, self.truncate
        )
        return rows.reshape(n, -1).T

    def pinv(self, y: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse along the axis (``A pinv(A) y = y``): SVD of the 1D matrix."""
        n = y.shape[2 + self.axis] * self.factor if n is None else n
        inverse = torch.linalg.pinv(self.matrix(n)).to(y.dtype)  # (n, m)
        moved = y.movedim(2 + self.axis, -1) @ inverse.T
        return moved.movedim(-1, 2 + self.axis)

    def output_affine(self, affine: Any) -> Any:
        """Geometry of the output: spacing along the axis times k, origin moved to the first slab's centre.

        Args:
            affine: (4, 4) numpy array, voxel -> world of the input.

        Returns:
            (4, 4) numpy array for the thick-slice output.
        """
        import numpy as np

        out = np.array(affine, dtype=np.float64, copy=True)
        column = out[:3, self.axis].copy()
        out[:3, 3] += column * self.centre
        out[:3, self.axis] = column * self.factor
        return out

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "axis": self.axis,
            "factor": self.factor,
            "sigma": float(self.sigma),
            "padding": self.padding,
        }


def legendre_terms(degree: int) -> list[tuple[int, int, int]]:
    """Polynomial orders (i, j, k), i + j + k <= degree, in MONAI RandBiasField's order (constant first)."""
    return [
        (i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)
    ]


def _legendre_table(n: int, degree: int, like: torch.Tensor) -> torch.Tensor:
    """(degree + 1, n) Legendre polynomials P_0..P_degree on linspace(-1, 1, n) (Bonnet's recursion)."""
    t = torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)
    rows = [torch.ones_like(t), t]
    for order in range(1, degree):
        rows.append(((2 * order + 1) * t * rows[order] - order * rows[order - 1]) / (order + 1))
    return torch.stack(rows[: degree + 1])


class BiasField(Operator):
    """Smooth multiplicative field: ``A x = x * exp(sum_m c_m P_i(u) P_j(v) P_k(w))``.

    ``P`` are Legendre polynomials on normalised coordinates u, v, w in [-1, 1] along I, J, K, over all
    (i, j, k) with i + j + k <= degree (the parametrisation of MONAI's RandBiasField, constant term first).

    Args:
        degree: maximal total polynomial degree.
        coefficients: ``len(legendre_terms(degree))`` log-field coefficients; zeros (field = 1) by default.
    """

    kind = "bias"
    pointwise = True

    def __init__(self, degree: int = 3, coefficients: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.degree = int(degree)
        self.terms = legendre_terms(self.degree)
        coeffs = _param([0.0] * len(self.terms) if coefficients is None else coefficients)
        if coeffs.shape != (len(self.terms),):
            raise ConfigError(f"bias field of degree {degree} needs {len(self.terms)} coefficients")
        self.coefficients = coeffs

    def log_field(self, shape: Sequence[int]) -> torch.Tensor:
        """The log-field on a grid of spatial ``shape`` (I, J, K)."""
        c = self.coefficients
        index = torch.tensor(self.terms, device=c.device).T
        grid = torch.zeros((self.degree + 1,) * 3, dtype=c.dtype, device=c.device)
        grid = grid.index_put((index[0], index[1], index[2]), c)
        tables = [_legendre_table(int(n), self.degree, c) for n in shape]
        return torch.einsum("abc,ax,by,cz->xyz", grid, *tables)

    def field(self, shape: Sequence[int]) -> torch.Tensor:
        """The multiplicative field ``exp(log_field)``, shape (I, J, K)."""
        return torch.exp(self.log_field(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.field(x.shape[2:]).to(x.dtype)

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.field(y.shape[2:]).to(y.dtype)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.field(y.shape[2:]).to(y.dtype)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "degree": self.degree, "coefficients": _to_list(self.coefficients)}


class IntensityAffine(Operator):
    """``A x = scale * x + offset``; ``transpose`` is the adjoint of the linear part (``scale * y``)."""

    kind = "intensity"
    pointwise = True

    def __init__(self, scale: float | torch.Tensor = 1.0, offset: float | torch.Tensor = 0.0) -> None:
        super().__init__()
        self.scale = _param(scale)
        self.offset = _param(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.to(x.dtype) * x + self.offset.to(x.dtype)

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale.to(y.dtype) * y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset.to(y.dtype)) / self.scale.to(y.dtype)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "scale": float(self.scale), "offset": float(self.offset)}


class Shifted(Operator):
    """``A(x) = inner(x + offset) - offset``: a multiplicative degradation of intensities that are 0 in air,
    acting on model units where air is ``-offset``. ``transpose`` is that of the linear part (inner's)."""

    kind = "shifted"

    def __init__(self, inner: Operator, offset: float) -> None:
        super().__init__()
        self.inner = inner
        self.offset = float(offset)
        # The shift keeps a pointwise inner operator pointwise (the projection's exact solve applies).
        self.pointwise = bool(inner.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.offset) - self.offset

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.transpose(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``inner.pinv(y + offset) - offset``: a right inverse whenever inner's is."""
        return self.inner.pinv(y + self.offset) - self.offset

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "offset": self.offset, "inner": self.inner.spec()}


class Compose(Operator):
    """``A = A_n o ... o A_1`` (applied in list order). ``pinv`` chains the parts' pseudo-inverses in reverse,
    which is a right inverse (``A pinv(A) y = y``) whenever each part's is."""

    kind = "compose"

    def __init__(self, operators: Sequence[Operator]) -> None:
        super().__init__()
        self.operators = torch.nn.ModuleList(operators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.operators:
            x = op(x)
        return x

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.transpose(y)  # type: ignore[operator]
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.pinv(y)  # type: ignore[operator]
        return y

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "operators": [op.spec() for op in self.operators]}  # type: ignore[operator]


def conjugate_gradient_pinv(op: Operator, y: torch.Tensor, damping: float, iterations: int) -> torch.Tensor:
    """Solve ``(A^T A + damping I) x = A^T y`` by conjugate gradients (batch treated as one system)."""

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op.transpose(op(v)) + damping * v

    return conjugate_gradient(normal, op.transpose(y), iterations, rtol=1e-20)


OPERATORS: Registry[type[Operator]] = Registry("operator type")
for _cls in (Identity, Mask, GaussianBlur, SliceProfile, BiasField, IntensityAffine, Shifted, Compose):
    OPERATORS.register(_cls.kind, _cls)


def operator_from_spec(spec: dict[str, Any], known: torch.Tensor | None = None) -> Operator:
    """Build an operator from its :meth:`Operator.spec` dict (the JSON sidecar / ``--params-out`` format).

    Args:
        spec: e.g. ``{"type": "blur", "sigma": [1.2, 1.2, 1.2]}``; ``compose`` holds ``"operators": [...]``.
        known: the known-voxel mask for a ``mask`` operator (masks are data, not parameters).

    Returns:
        The operator.
    """
    kind = str(spec.get("type"))
    OPERATORS.canonical(kind)  # unknown types: one clear error listing the known ones
    args = {key: value for key, value in spec.items() if key != "type"}
    try:
        if kind == "compose":
            return Compose([operator_from_spec(part, known) for part in args["operators"]])
        if kind == "shifted":
            return Shifted(operator_from_spec(args["inner"], known), args["offset"])
        if kind == "mask":
            if known is None:
                raise ConfigError("a mask operator needs its mask (known=...)")
            return Mask(known)
        return OPERATORS.get(kind)(**args)
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"invalid {kind} operator spec {spec}: {exc}") from None
