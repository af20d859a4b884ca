"""Degradation operators: adjoints (dot-product test), pseudo-inverses, gradients in phi, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medidiff.errors import ConfigError
from medidiff.restoration.operators import (
    BiasField,
    Compose,
    GaussianBlur,
    Identity,
    IntensityAffine,
    Mask,
    Operator,
    Shifted,
    SliceProfile,
    legendre_terms,
    operator_from_spec,
)

SHAPE = (2, 1, 9, 10, 11)


def _x(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _transpose(op: Operator, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(op, SliceProfile):
        return op.transpose(y, n=x.shape[2 + op.axis])
    return op.transpose(y)


LINEAR_OPERATORS = {
    "identity": lambda: Identity(),
    "mask": lambda: Mask(torch.rand(9, 10, 11, generator=torch.Generator().manual_seed(3)) > 0.4),
    "blur replicate": lambda: GaussianBlur([1.0, 0.5, 2.2]),
    "blur zeros": lambda: GaussianBlur(1.3, padding="zeros"),
    "slices axis0 k3": lambda: SliceProfile(0, 3),
    "slices axis2 k4 zeros": lambda: SliceProfile(2, 4, sigma=1.0, padding="zeros"),
    "slices axis1 k2 (even, half-voxel centre)": lambda: SliceProfile(1, 2),
    "slices k5 narrow, tail cropped": lambda: SliceProfile(2, 5, sigma=0.3),
    "slices k1 = through-plane blur": lambda: SliceProfile(2, 1, sigma=0.8),
    "bias": lambda: BiasField(2, 0.2 * torch.randn(10, generator=torch.Generator().manual_seed(4))),
    "compose": lambda: Compose([BiasField(1, [0.1, 0.2, -0.1, 0.3]), GaussianBlur(0.9), SliceProfile(2, 2)]),
}


@pytest.mark.parametrize("name", list(LINEAR_OPERATORS))
def test_transpose_passes_the_dot_product_test(name: str) -> None:
    op = LINEAR_OPERATORS[name]().double()
    x = _x(0)
    ax = op(x)
    y = _x(1, tuple(ax.shape))
    if isinstance(op, Compose):  # only the last part changes the shape: give the adjoint its input length
        last = op.operators[-1]
        at_y = y
        for part in reversed(op.operators):
            at_y = part.transpose(at_y, n=x.shape[4]) if part is last else part.transpose(at_y)
    else:
        at_y = _transpose(op, y, x)
    assert at_y.shape == x.shape
    lhs, rhs = float((ax * y).sum()), float((x * at_y).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_zero_padded_symmetric_blur_is_self_adjoint() -> None:
    x = _x(0)
    for op in (
        GaussianBlur([1.1, 0.6, 1.7], padding="zeros"),
        SliceProfile(1, 1, sigma=1.3, padding="zeros"),
    ):
        op = op.double()
        assert torch.allclose(_transpose(op, x, x), op(x), atol=1e-12)
    replicate = GaussianBlur(1.1).double()  # replicate padding is not: its adjoint folds the margins back
    assert not torch.allclose(replicate.transpose(x), replicate(x), atol=1e-6)


def test_intensity_affine_transpose_is_the_adjoint_of_its_linear_part() -> None:
    op = IntensityAffine(2.5, -1.0).double()
    x, y = _x(0), _x(1)
    linear = op(x) - op(torch.zeros_like(x))
    assert float((linear * y).sum()) == pytest.approx(float((x * op.transpose(y)).sum()), rel=1e-12)
    assert torch.allclose(op.pinv(op(x)), x)


def test_mask_pinv_zero_fills_and_is_a_right_inverse() -> None:
    known = torch.rand(9, 10, 11, generator=torch.Generator().manual_seed(0)) > 0.5
    op = Mask(known).double()
    y = op(_x(0))
    filled = op.pinv(y)
    assert torch.equal(op(filled), y)
    assert torch.all(filled[:, :, ~known] == 0)


@pytest.mark.parametrize(("axis", "factor", "sigma"), [(2, 3, None), (0, 2, 1.5), (1, 4, 0.7)])
def test_slice_profile_pinv_is_the_moore_penrose_inverse(axis: int, factor: int, sigma: float | None) -> None:
    op = SliceProfile(axis, factor, sigma).double()
    x = _x(0)
    n = x.shape[2 + axis]
    y = _x(1, tuple(op(x).shape))  # any measurement, not only one in the range
    restored = op.pinv(y, n=n)
    assert torch.allclose(op(restored), y, atol=1e-10)  # A A+ y = y
    projector = op.pinv(op(x), n=n)  # A+ A is an orthogonal projector: idempotent
    assert torch.allclose(op.pinv(op(projector), n=n), projector, atol=1e-10)
    # ...onto the row space, so the residual x - A+ A x is orthogonal to it (and in the null space of A)
    assert torch.allclose(op(x - projector), torch.zeros_like(y), atol=1e-10)
    assert abs(float(((x - projector) * projector).sum())) < 1e-9


def test_bias_and_compose_pinv_invert_the_forward() -> None:
    bias = BiasField(3, 0.1 * torch.randn(20, generator=torch.Generator().manual_seed(0))).double()
    x = _x(0)
    assert torch.allclose(bias.pinv(bias(x)), x)
    chain = Compose(
        [IntensityAffine(1.7, 0.3), BiasField(1, [0.0, 0.2, 0.1, -0.1]), SliceProfile(2, 3)]
    ).double()
    y = _x(2, tuple(chain(x).shape))
    # each part's pinv is a right inverse, so the chain's is (11 slices -> 3 thick -> 9, its default length)
    assert torch.allclose(chain(chain.pinv(y)), y, atol=1e-10)


def test_blur_pinv_is_regularised_least_squares_that_inverts_a_smooth_blur() -> None:
    grid = torch.linspace(-1, 1, 16, dtype=torch.float64)
    smooth = (torch.sin(3 * grid)[:, None, None] * torch.cos(2 * grid)[None, :, None] * grid[None, None, :])[
        None, None
    ]
    op = GaussianBlur(1.0).double()
    blurred = op(smooth)
    restored = op.pinv(blurred, damping=1e-6, iterations=200)
    before = float((blurred - smooth).norm() / smooth.norm())
    after = float((restored - smooth).norm() / smooth.norm())
    assert after < 0.2 * before


def test_blur_matches_scipy_gaussian_filter() -> None:
    volume = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(20, 21, 22)), 1.0)
    sigma = (1.2, 0.8, 2.0)
    ours = GaussianBlur(sigma).double()(torch.from_numpy(volume)[None, None])[0, 0].numpy()
    expected = ndimage.gaussian_filter(volume, sigma, mode="nearest", truncate=4.0)  # nearest = replicate
    # Only the smooth taper between 3 and 4 sigma differs from a hard-truncated Gaussian.
    assert np.abs(ours - expected).max() < 2e-3 * np.abs(volume).max()


def test_slice_profile_geometry_and_centres() -> None:
    ramp = torch.arange(24, dtype=torch.float64)[None, None, None, None, :].expand(1, 1, 4, 5, 24)
    op = SliceProfile(2, 4, sigma=1.0, padding="zeros").double()
    thick = op(ramp)
    assert thick.shape == (1, 1, 4, 5, 6)
    # A symmetric profile keeps a ramp's value at the profile centre: slice s sits at 4 s + 1.5.
    interior = thick[0, 0, 0, 0, 1:-1]
    assert torch.allclose(interior, 4 * torch.arange(1, 5, dtype=torch.float64) + 1.5, atol=1e-9)
    affine = np.array([[0.0, 0, 1.2, -10], [1.0, 0, 0, 5], [0, 1.1, 0, 7], [0, 0, 0, 1]])
    out = op.output_affine(affine)
    assert np.allclose(out[:3, 2], 4 * affine[:3, 2])  # spacing along the axis x 4
    assert np.allclose(out[:3, 3], affine[:3, 3] + 1.5 * affine[:3, 2])  # origin at the first slab's centre
    assert np.allclose(out[:3, :2], affine[:3, :2])


def test_bias_field_matches_numpy_legendre_in_monai_order() -> None:
    degree = 3
    coefficients = np.random.default_rng(0).normal(size=len(legendre_terms(degree))) * 0.1
    shape = (7, 8, 9)
    field = BiasField(degree, coefficients).double().field(shape).numpy()
    matrix = np.zeros((degree + 1,) * 3)
    for c, (i, j, k) in zip(coefficients, legendre_terms(degree), strict=True):
        matrix[i, j, k] = c
    coords = [np.linspace(-1, 1, n) for n in shape]
    expected = np.exp(np.polynomial.legendre.leggrid3d(*coords, matrix))
    assert np.allclose(field, expected, rtol=1e-12)
    assert legendre_terms(1) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]  # MONAI RandBiasField's order


@pytest.mark.parametrize("sigma", [0.75, 1.0, 1.6])  # 0.75 and 1.0: 4 sigma is a whole number of taps
def test_gradients_flow_to_blur_and_slice_profile_widths(sigma: float) -> None:
    x = _x(0, (1, 1, 5, 6, 7))
    width = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: GaussianBlur(s)(x), (width,))
    assert torch.autograd.gradcheck(lambda s: SliceProfile(2, 2, sigma=s)(x), (width,))
    y = _x(1, (1, 1, 5, 6, 3))
    assert torch.autograd.gradcheck(lambda s: SliceProfile(2, 2, sigma=s).transpose(y, n=7), (width,))
    per_axis = torch.tensor([0.7, sigma, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: GaussianBlur(s)(x), (per_axis,))


def test_gradients_flow_to_bias_intensity_and_through_pinv() -> None:
    x = _x(0, (1, 1, 5, 6, 7))
    coefficients = (0.1 * torch.randn(10, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: BiasField(2, c)(x), (coefficients,))
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    offset = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: IntensityAffine(a, b)(x), (scale, offset))
    width = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    y = SliceProfile(2, 2, sigma=0.9).double()(x)
    assert torch.autograd.gradcheck(lambda s: SliceProfile(2, 2, sigma=s).pinv(y, n=7), (width,))
    x_leaf = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: GaussianBlur(1.2).double()(v), (x_leaf,))


def test_blur_width_is_recovered_by_gradient_descent_on_its_parameter() -> None:
    rng = np.random.default_rng(0)
    scene = torch.from_numpy(ndimage.gaussian_filter(rng.normal(size=(20, 20, 20)), 0.7))[None, None]
    measured = GaussianBlur(1.6).double()(scene)
    op = GaussianBlur(1.0).double()
    op.requires_grad_(True)
    optimiser = torch.optim.Adam(op.parameters(), lr=0.05)
    for _ in range(80):
        optimiser.zero_grad()
        loss = ((op(scene) - measured) ** 2).mean()
        loss.backward()
        optimiser.step()
    assert torch.allclose(op.sigma.detach(), torch.full((3,), 1.6, dtype=torch.float64), rtol=0.03)


def test_specs_round_trip_through_operator_from_spec() -> None:
    x = _x(0)
    known = torch.rand(9, 10, 11) > 0.5
    for op in [
        GaussianBlur([1.0, 2.0, 0.5], padding="zeros"),
        SliceProfile(1, 3, sigma=1.2),
        BiasField(2, [0.1 * i for i in range(10)]),
        IntensityAffine(2.0, 1.0),
        Identity(),
        Compose([GaussianBlur(0.8), Mask(known), IntensityAffine(0.5)]),
        Shifted(BiasField(1, [0.1, 0.2, -0.1, 0.05]), 1.0),
    ]:
        rebuilt = operator_from_spec(op.spec(), known=known).double()
        assert rebuilt.spec() == op.spec()
        assert torch.allclose(rebuilt(x), op.double()(x))
    with pytest.raises(ConfigError, match="unknown operator"):
        operator_from_spec({"type": "warp"})
    with pytest.raises(ConfigError, match="invalid blur"):
        operator_from_spec({"type": "blur", "width": 2})
    with pytest.raises(ConfigError, match="needs its mask"):
        operator_from_spec({"type": "mask"})
    with pytest.raises(ConfigError):
        BiasField(2, [0.0] * 3)


def test_shifted_operator_is_pointwise_with_a_right_inverse() -> None:
    """A bias field on intensities that are 0 in air, acting on model units where air is -1."""
    x = _x(3)
    op = Shifted(BiasField(2, [0.1 * i for i in range(10)]).double(), 1.0)
    assert op.pointwise
    y = op(x)
    assert torch.allclose(op(op.pinv(y)), y, atol=1e-10)
    assert torch.allclose(op.pinv(y), x, atol=1e-10)  # the field is invertible: pinv is the inverse
