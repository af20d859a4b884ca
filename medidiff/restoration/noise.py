"""Measurement-noise models (Gaussian, Rician), Rician bias correction, and noise-level estimation.

The models act on torch tensors of any shape (typically ``(B, 1, I, J, K)``) and give a differentiable
negative log-likelihood, so a conditioning rule can use ``nll(y, A(x0_hat))`` as its guidance loss.

Estimation works on numpy arrays ``(I, J, K)`` in the volume's own intensity units:

- :func:`estimate_sigma_gaussian`: Donoho's MAD of the finest diagonal (HHH) wavelet sub-band, restricted to
  flat regions so that anatomical texture does not inflate it.
- :func:`estimate_sigma_rician`: the air background of a magnitude image is Rayleigh distributed; a
  truncated-Rayleigh fixed point started from the background histogram peak.

Rician bias correction: a denoiser that averages magnitudes (a posterior mean, or the mean of K samples)
estimates the Rician *mean* E[M] = sigma*sqrt(pi/2)*L_{1/2}(-A^2 / (2 sigma^2)), not the true amplitude A.
:func:`rician_correct_mean` inverts that mean exactly (monotone in A), which is unbiased at every SNR; the
classical second-moment correction sqrt(max(M^2 - 2 sigma^2, 0)) (:func:`rician_correct_second_moment`)
suits estimates of E[M^2] instead. We do not ship a variance-stabilising transform: the exact-unbiased VSTs
for Rician data (Foi 2011) are numerically optimised lookup tables, and since our denoisers output a mean,
inverting the mean directly removes the bias with no extra approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from medidiff.errors import ConfigError, InputError
from medidiff.io.volume import Volume
from medidiff.registry import Registry

# Daubechies-2 orthonormal low-pass filter (the wavelet scikit-image's estimate_sigma uses). PyWavelets is not
# a dependency, and skimage.restoration.estimate_sigma needs it; a 4-tap filter is all we use from it.
_DB2_LOW = np.array([0.48296291314469025, 0.836516303737469, 0.22414386804185735, -0.12940952255092145])
_DB2_HIGH = np.array([(-1) ** n * _DB2_LOW[len(_DB2_LOW) - 1 - n] for n in range(len(_DB2_LOW))])
_MAD_TO_STD = 1.0 / 0.6744897501960817  # median(|N(0, 1)|) = 0.6745

# Truncated-Rayleigh constants: for M ~ Rayleigh(sigma), E[M^2 | M < tau*sigma] = _TRUNC_M2 * sigma^2.
_TAU = 2.0
_TRUNC_M2 = 2.0 - _TAU**2 * math.exp(-(_TAU**2) / 2) / (1.0 - math.exp(-(_TAU**2) / 2))
_MAX_KS = 0.1  # largest KS distance from the truncated Rayleigh law still accepted as air
_RAYLEIGH_STD = math.sqrt(2.0 - math.pi / 2.0)  # std of Rayleigh(1)
_MIN_COEFFICIENTS = 500  # wavelet coefficients a restricted estimate must rest on
_FLAT_FRACTION = 0.3  # of the sub-band, the flattest coefficients the Gaussian estimate keeps
_DENSE_BELOW = 10_000  # decimated sub-band coefficients under which the undecimated band is used
AIR_RATIO_MIN = 0.8  # air whose fine-scale noise is at least this fraction of a Rayleigh fit's is air
AGREEMENT = 0.3  # air and tissue estimates within 30% of each other agree
_TISSUE_SNR = 4.0  # bright tissue: smoothed intensity above this many sigma
_TISSUE_FLAT = 0.15  # of bright tissue, the flattest part (white matter, not fat or vessels)


class NoiseModel(torch.nn.Module):
    """Base class: ``y = noise(clean)`` with a known likelihood ``p(y | clean)``.

    Attributes:
        sigma: noise standard deviation (of each Gaussian component), a 0-d tensor in the data's units.
    """

    kind: str = ""

    def __init__(self, sigma: float | torch.Tensor) -> None:
        super().__init__()
        sigma_t = torch.as_tensor(sigma, dtype=torch.get_default_dtype())
        if sigma_t.ndim != 0 or not bool(sigma_t.detach() > 0):
            raise ConfigError(f"noise sigma must be a positive number, got {sigma}")
        self.sigma: torch.Tensor
        self.register_buffer("sigma", sigma_t)

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a noisy measurement ``y ~ p(y | clean)`` (same shape as ``clean``)."""
        raise NotImplementedError

    def nll(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-log p(y | x)`` summed over all voxels: a 0-d tensor, differentiable in x (guidance loss)."""
        raise NotImplementedError

    def log_likelihood(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(y | x)`` summed over all voxels."""
        return -self.nll(y, x)

    def spec(self) -> dict[str, object]:
        """JSON-able description, e.g. ``{"type": "gaussian", "sigma": 0.05}``."""
        return {"type": self.kind, "sigma": float(self.sigma)}


class Gaussian(NoiseModel):
    """Additive white Gaussian noise: ``y = x + sigma * n``, ``n ~ N(0, I)``."""

    kind = "gaussian"

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        return clean + self.sigma.to(clean) * noise

    def nll(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma.to(x)
        residual = ((y - x) ** 2).sum() / (2 * sigma**2)
        return residual + y.numel() * (torch.log(sigma) + 0.5 * math.log(2 * math.pi))


class Rician(NoiseModel):
    """Magnitude of a complex signal with Gaussian noise in both channels: ``y = |x + sigma*(n1 + i n2)|``.

    The amplitude ``x`` is assumed non-negative (magnitude MRI).
    """

    kind = "rician"

    def sample(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = self.sigma.to(clean)
        n1 = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        n2 = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
        return torch.sqrt((clean + sigma * n1) ** 2 + (sigma * n2) ** 2)

    def nll(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # p(y|x) = y/s^2 exp(-(y^2 + x^2)/2s^2) I0(xy/s^2); log I0(z) = log(i0e(z)) + |z| never overflows.
        sigma = self.sigma.to(x)
        y_pos = y.clamp_min(torch.finfo(y.dtype).tiny)
        z = x * y / sigma**2
        log_i0 = torch.log(torch.special.i0e(z)) + z.abs()
        nll = -torch.log(y_pos / sigma**2) + (y**2 + x**2) / (2 * sigma**2) - log_i0
        return nll.sum()


NOISE_MODELS: Registry[type[NoiseModel]] = Registry("noise model")
NOISE_MODELS.register(Gaussian.kind, Gaussian)
NOISE_MODELS.register(Rician.kind, Rician)


def noise_model_from_spec(spec: dict[str, object]) -> NoiseModel:
    """Build a noise model from ``{"type": "gaussian"|"rician", "sigma": float}``."""
    return NOISE_MODELS.build(str(spec.get("type", "")), float(spec["sigma"]))  # type: ignore[arg-type,no-any-return]


# --- Rician bias correction -------------------------------------------------------------------------------


def rician_mean(amplitude: np.ndarray | float, sigma: float) -> np.ndarray:
    """Rician mean E[M] for amplitude ``A`` and noise ``sigma``: sigma*sqrt(pi/2)*L_{1/2}(-A^2/2s^2).

    Args:
        amplitude: true signal amplitude(s) A >= 0, any shape.
        sigma: noise standard deviation (> 0).

    Returns:
        E[M], same shape as ``amplitude``.
    """
    from scipy.special import i0e, i1e

    x = -0.5 * (np.asarray(amplitude, dtype=np.float64) / sigma) ** 2
    # L_{1/2}(x) = e^{x/2} [(1-x) I0(-x/2) - x I1(-x/2)] and e^{x/2} I_n(-x/2) = i_ne(-x/2) for x <= 0.
    laguerre = (1 - x) * i0e(-x / 2) - x * i1e(-x / 2)
    return np.asarray(sigma * math.sqrt(math.pi / 2) * laguerre)


def rician_correct_mean(mean_magnitude: np.ndarray, sigma: float) -> np.ndarray:
    """Invert :func:`rician_mean`: the amplitude A whose Rician mean equals ``mean_magnitude``.

    Use it on estimates of E[M] (posterior means, averages of samples). Values below the noise floor
    ``sigma*sqrt(pi/2)`` (the mean of pure noise) map to 0.

    Args:
        mean_magnitude: estimated E[M], any shape, in the data's units.
        sigma: noise standard deviation (> 0), same units.

    Returns:
        Bias-corrected amplitude, same shape, float64.
    """
    from scipy.special import i0e, i1e

    m = np.asarray(mean_magnitude, dtype=np.float64) / sigma
    # E[M]/sigma is smooth and increasing in A/sigma: interpolate a table for a start, then polish with Newton
    # steps (dE/dA = sqrt(pi/2) (A/2) e^{-A^2/4} [I0 + I1](A^2/4), sigma = 1), which the table's flat start
    # near A = 0 needs. Beyond the table, E[M] ~ sqrt(A^2 + sigma^2) to O(sigma^4 / A^3).
    snr = np.linspace(0.0, 40.0, 4001)
    table = rician_mean(snr, 1.0)
    floor = table[0]
    theta = np.where(m <= table[-1], np.interp(m, table, snr), np.sqrt(np.maximum(m**2 - 1.0, 0.0)))
    for _ in range(3):
        slope = math.sqrt(math.pi / 2) * (theta / 2) * (i0e(theta**2 / 4) + i1e(theta**2 / 4))
        step = (rician_mean(theta, 1.0) - m) / np.maximum(slope, 1e-12)
        theta = np.where((m > floor) & (m <= table[-1]), np.maximum(theta - step, 0.0), theta)
    return np.asarray(np.where(m <= floor, 0.0, theta) * sigma)


FLOOR_SMOOTHING_VOXELS = 1.0
FLOOR_THRESHOLD = 1.5  # in units of sigma, on the locally averaged E[M] estimate


def rician_correct_estimate(estimate: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`rician_correct_mean` for a denoised 3D magnitude volume, with its noise floor averaged first.

    The inverse Rician mean has an unbounded slope at the floor ``sigma*sqrt(pi/2)``, so it amplifies any
    residual fluctuation of an estimate in air and other signal-free regions (0.05 sigma above the floor
    maps to an amplitude of about 0.35 sigma). Where the estimate, averaged with a Gaussian of
    ``FLOOR_SMOOTHING_VOXELS``, is below ``FLOOR_THRESHOLD`` sigma (amplitudes below about sigma), that
    local average replaces the voxel's estimate before the inversion; brighter voxels are inverted as they
    are. Chosen on the bundled sample with Rician noise at 5% / 10% (PSNR 30.54 -> 32.87 / 25.07 -> 27.56 dB
    against plain inversion; thresholds 2 and 2.5 sigma and wider averaging were worse).

    Args:
        estimate: (I, J, K) estimate of E[M] in the data's units.
        sigma: noise standard deviation (> 0), same units.

    Returns:
        (I, J, K) bias-corrected amplitude, float64.
    """
    from scipy.ndimage import gaussian_filter

    m = np.asarray(estimate, dtype=np.float64)
    local = gaussian_filter(m, FLOOR_SMOOTHING_VOXELS)
    return rician_correct_mean(np.where(local < FLOOR_THRESHOLD * sigma, local, m), sigma)


# Rician data are denoised by the Gaussian prior at RICIAN_NETWORK_SCALE x sigma, not sigma. A magnitude
# spreads less than sigma about its mean where the signal is weak (0.66 sigma with no signal, 0.77 at an
# amplitude of sigma, 0.92 at 2 sigma), so the Gaussian noise level matched to the data is below sigma; the
# bias correction and the background step keep using sigma itself. Chosen on the development volumes only
# (the bundled sample and IXI012, both training subjects; Rician noise at 5% and 10%): with sigma auto, PSNR
# +0.06 to +0.14 dB (mean +0.12) and SSIM +0.0008 to +0.0037 against 1.0, every case gaining, and 0.9 at least
# as good as 0.95 in 3 of 4; with the true sigma, mean +0.077 / +0.080 dB at 0.9 / 0.95. Gaussian noise stays
# at 1.0 (0.95 lost 0.04-0.08 dB on the sample). docs/benchmarks.md has the table.
RICIAN_NETWORK_SCALE = 0.9


def network_noise_level(sigma: float, noise: str) -> float:
    """The Gaussian noise level (data units) the prior removes from data with ``noise`` of ``sigma``."""
    return sigma * RICIAN_NETWORK_SCALE if noise == "rician" else sigma


def rician_correct_second_moment(mean_square: np.ndarray, sigma: float) -> np.ndarray:
    """Amplitude from an estimate of E[M^2] = A^2 + 2 sigma^2: ``sqrt(max(E[M^2] - 2 sigma^2, 0))``."""
    return np.sqrt(np.maximum(np.asarray(mean_square, dtype=np.float64) - 2.0 * sigma**2, 0.0))


# --- noise-level estimation -------------------------------------------------------------------------------


def _finest_diagonal_subband(data: np.ndarray, step: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    """The HHH sub-band of a one-level db2 transform (boundary-free), and its grid indices per axis.

    ``step`` 2 is the decimated (orthogonal) transform, whose coefficients are independent under white
    noise; ``step`` 1 keeps every position (undecimated): each coefficient is still N(0, sigma^2) under
    white noise (the filter has unit norm), neighbours are correlated, and there are 8 times as many.
    """
    coeffs = data
    taps = len(_DB2_HIGH)
    grid = []
    for axis in range(3):
        coeffs = ndimage.correlate1d(coeffs, _DB2_HIGH, axis=axis, mode="reflect")
        # Drop positions whose filter support touches the boundary: reflected samples are not independent
        # noise and would pull the median down.
        keep = np.arange(taps, coeffs.shape[axis] - taps, step)
        grid.append(keep)
        coeffs = np.take(coeffs, keep, axis=axis)
    return coeffs, grid


def estimate_sigma_gaussian(
    data: np.ndarray | Volume, flat_fraction: float = _FLAT_FRACTION, mask: np.ndarray | None = None
) -> float:
    """Standard deviation of additive white Gaussian noise in a 3D volume.

    Donoho's MAD estimate on the finest diagonal wavelet sub-band (HHH of db2), restricted to the
    ``flat_fraction`` of coefficients where the smoothed image gradient is lowest. Plain MAD over the whole
    sub-band is biased upward by anatomy (on a 2 mm MNI brain crop, +17% at 2% noise and +6% at 5%); the flat
    regions (background, white matter) carry almost no texture at the finest scale, and the selection uses the
    low-pass image, which is nearly independent of the HHH coefficients under noise.

    On small volumes (fewer than :data:`_DENSE_BELOW` decimated coefficients, about 50^3 voxels) every
    position of the sub-band is used (undecimated). The median of a few hundred flat coefficients scatters
    too much: on 20^3 crops of the bundled sample (6 places, 4 seeds, 5% and 10%, Gaussian and Rician) the
    decimated estimate was up to 30% off and the undecimated one at most 14%; on 32^3 crops 17% vs 6%; at
    48^3 and 64^3 both are within 6%. Larger volumes keep the decimated band (their estimates are unchanged).

    Args:
        data: (I, J, K) array or Volume, each side >= 10 voxels.
        flat_fraction: fraction of sub-band coefficients kept, in (0, 1].
        mask: (I, J, K) bool, the voxels that may be used (e.g. bright tissue); None: all.

    Returns:
        The noise standard deviation in the data's units.
    """
    if not 0 < flat_fraction <= 1:
        raise ConfigError(f"flat_fraction must be in (0, 1], got {flat_fraction}")
    return _WaveletBand(data).sigma(flat_fraction, mask)


class _WaveletBand:
    """The finest diagonal sub-band of a volume and the smoothed gradient at its positions, computed once
    for several estimates on the same data (:func:`estimate_sigma_tissue` makes four)."""

    def __init__(self, data: np.ndarray | Volume) -> None:
        data = np.asarray(data.data if isinstance(data, Volume) else data, dtype=np.float64)
        if data.ndim != 3 or min(data.shape) < 10:
            raise InputError(
                f"noise estimation needs a 3D volume of at least 10 voxels per side, got {data.shape}"
            )
        taps = len(_DB2_HIGH)  # the positions _finest_diagonal_subband keeps at step 2
        decimated = math.prod(len(range(taps, n - taps, 2)) for n in data.shape)
        self.step = 1 if decimated < _DENSE_BELOW else 2
        self.coeffs, self.grid = _finest_diagonal_subband(data, self.step)
        self.gradient = ndimage.gaussian_gradient_magnitude(data, sigma=1.5)[np.ix_(*self.grid)]

    def sigma(self, flat_fraction: float, mask: np.ndarray | None = None) -> float:
        """MAD sigma of the ``flat_fraction`` flattest coefficients among those where ``mask`` (I, J, K)."""
        if mask is None:
            eligible = np.ones(self.coeffs.shape, dtype=bool)
        else:
            eligible = np.asarray(mask)[np.ix_(*self.grid)]
        # The minimum counts independent coefficients: an undecimated band holds 8 per decimated one.
        if mask is not None and eligible.sum() < _MIN_COEFFICIENTS * (8 if self.step == 1 else 1):
            raise InputError("cannot estimate the noise level: too few usable voxels; give --sigma")
        flat = eligible & (self.gradient <= np.quantile(self.gradient[eligible], flat_fraction))
        return float(np.median(np.abs(self.coeffs[flat])) * _MAD_TO_STD)


def estimate_sigma_tissue(data: np.ndarray | Volume, snr: float = _TISSUE_SNR) -> float:
    """Noise sigma of a magnitude (Rician) image from its bright tissue, where Rician noise is Gaussian.

    Where the amplitude is well above sigma a magnitude is nearly Gaussian with std sigma (at 4 sigma: 0.98
    sigma), so :func:`estimate_sigma_gaussian` restricted to voxels whose smoothed intensity exceeds
    ``snr`` times the current estimate reads sigma itself; two passes from the unrestricted estimate (which
    air, whose spread is 0.66 sigma, pulls low) converge. Needs no air at all.

    Raises:
        InputError: fewer than 500 usable wavelet coefficients in bright tissue.
    """
    data = np.asarray(data.data if isinstance(data, Volume) else data, dtype=np.float64)
    smooth = ndimage.gaussian_filter(data, 1.5)
    band = _WaveletBand(data)
    sigma = band.sigma(_FLAT_FRACTION)  # estimate_sigma_gaussian's own estimate
    for _ in range(3):
        bright = ndimage.binary_erosion(smooth > snr * sigma, iterations=2)
        sigma = band.sigma(_TISSUE_FLAT, bright)
    return sigma


def air_noise_ratio(data: np.ndarray | Volume, sigma: float) -> float:
    """How much of the Rayleigh fit's spread is white noise: fine-scale std in its "air" / 0.655 sigma.

    Pure Rayleigh(sigma) air has std sqrt(2 - pi/2) sigma = 0.655 sigma, all of it white, so the finest
    wavelet sub-band over the air reads 0.655 sigma (ratio 1). When the darkest voxels are tissue (a crop
    without air), the fit's sigma is inflated by anatomy while the fine-scale noise is not: the ratio drops
    (0.1-0.5 on the development volumes' air-free crops). NaN when the "air" is too small to tell.
    """
    data = np.asarray(data.data if isinstance(data, Volume) else data, dtype=np.float64)
    air = ndimage.binary_erosion(ndimage.gaussian_filter(data, 1.0) < _TAU * sigma, iterations=2)
    coeffs, grid = _finest_diagonal_subband(data)
    inside = air[np.ix_(*grid)]
    if inside.sum() < _MIN_COEFFICIENTS:
        return math.nan
    return float(np.median(np.abs(coeffs[inside])) * _MAD_TO_STD / (_RAYLEIGH_STD * sigma))


def _background_peak(magnitude: np.ndarray) -> float:
    """Location of the first prominent histogram peak of a magnitude image (the Rayleigh mode = sigma)."""
    positive = magnitude[magnitude > 0]
    top = float(np.percentile(positive, 99.5)) if positive.size else 0.0
    if top <= 0:
        raise InputError("cannot estimate Rician noise: the volume has no positive voxels")
    hist, edges = np.histogram(positive, bins=512, range=(0.0, top))
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), 2.0)
    floor = 0.1 * smooth.max()
    for i in range(1, len(smooth) - 1):
        if smooth[i] >= floor and smooth[i] >= smooth[i - 1] and smooth[i] >= smooth[i + 1]:
            return float(0.5 * (edges[i] + edges[i + 1]))
    i = int(np.argmax(smooth))
    return float(0.5 * (edges[i] + edges[i + 1]))


def estimate_sigma_rician(data: np.ndarray | Volume, min_background_fraction: float = 0.01) -> float:
    """Noise sigma of a magnitude (Rician) image from its air background.

    In air the magnitude is Rayleigh(sigma). The histogram's first peak (the Rayleigh mode, = sigma) starts a
    fixed point on the voxels below ``2 sigma``: sigma^2 = mean(M^2 | M < 2 sigma) / c with c = 1.374 the
    truncated-Rayleigh second moment; the low cut keeps tissue voxels out of the fit. Needs some air in the
    field of view (skull-stripped or head volumes are fine).

    Args:
        data: (I, J, K) magnitude array or Volume (non-negative).
        min_background_fraction: the fit must rest on at least this fraction of the voxels.

    Returns:
        The noise sigma (of each Gaussian component) in the data's units.
    """
    magnitude = np.abs(np.asarray(data.data if isinstance(data, Volume) else data, dtype=np.float64)).ravel()
    integer_valued = bool(np.all(magnitude[:: max(1, magnitude.size // 100_000)] % 1 == 0))
    if integer_valued:
        # Integer scans (DICOM int16...) quantise a background of a few units into a handful of values, which
        # breaks the histogram peak and the KS check; a fixed uniform dither restores a continuous law. On the
        # MNI test brain the result stays within 5% from sigma = 1.2 units up (1% from 3 units); at 1 unit the
        # KS check refuses.
        magnitude = magnitude + np.random.default_rng(0).uniform(-0.5, 0.5, magnitude.size)
    sigma = _background_peak(magnitude)
    for _ in range(100):
        below = magnitude[magnitude < _TAU * sigma]
        if below.size < min_background_fraction * magnitude.size:
            raise InputError("cannot estimate Rician noise: no air background found; give --sigma explicitly")
        updated = math.sqrt(float(np.mean(below**2)) / _TRUNC_M2)
        if abs(updated - sigma) <= 1e-7 * sigma:
            sigma = updated
            break
        sigma = updated
    # Without air the fixed point still converges, onto dark tissue; a Kolmogorov-Smirnov check against the
    # truncated Rayleigh law tells the two apart (MNI brain: ~0.001 with air, > 0.15 on a brain-only crop).
    if _truncated_rayleigh_ks(magnitude[magnitude < _TAU * sigma], sigma) > _MAX_KS:
        raise InputError(
            "cannot estimate Rician noise: the darkest voxels are not Rayleigh-distributed air; give --sigma"
        )
    return sigma


def _truncated_rayleigh_ks(samples: np.ndarray, sigma: float) -> float:
    """Kolmogorov-Smirnov distance between ``samples`` (all < 2 sigma) and Rayleigh(sigma) truncated there."""
    x = np.sort(samples)
    cdf = -np.expm1(-(x**2) / (2 * sigma**2)) / -math.expm1(-(_TAU**2) / 2)
    steps = np.arange(1, x.size + 1) / x.size
    return float(np.max(np.maximum(np.abs(cdf - steps), np.abs(cdf - (steps - 1 / x.size)))))


@dataclass(frozen=True)
class NoiseEstimate:
    """A noise level and where it came from.

    Attributes:
        sigma: the noise std in the data's units.
        source: ``given``, ``percent``, ``wavelet`` (Gaussian: finest wavelet band, flat regions), ``air``
            (Rician: Rayleigh fit of the background) or ``tissue`` (Rician: bright tissue).
        note: one line for the user when the choice needs saying (an estimate refused or disagreeing).
        candidates: every estimate that was made, by source (for the result's record).
    """

    sigma: float
    source: str
    note: str | None = None
    candidates: dict[str, float] = field(default_factory=dict)


def estimate_rician(data: np.ndarray | Volume) -> NoiseEstimate:
    """Rician sigma with or without air: the air's Rayleigh fit, cross-checked against bright tissue.

    * The air fit (:func:`estimate_sigma_rician`) is used when its "air" is white noise
      (:func:`air_noise_ratio` >= :data:`AIR_RATIO_MIN`), or, where there is too little of it to tell, when
      the tissue estimate agrees within :data:`AGREEMENT`.
    * Otherwise (no air, a background clipped to a constant, a crop inside the head) bright tissue gives
      sigma (:func:`estimate_sigma_tissue`), and the note says why.

    Chosen on the development volumes (docs/benchmarks.md, "Noise level without air"): the air ratio is
    0.95-0.99 on real air and 0.19-0.34 on air-free crops, whose air fit read 4-9x the true sigma.

    Raises:
        InputError: neither estimate can be trusted (no air and too little bright tissue).
    """
    candidates: dict[str, float] = {}
    air: float | None = None
    air_problem = ""
    try:
        air = estimate_sigma_rician(data)
        candidates["air"] = air
    except InputError as exc:
        air_problem = str(exc).removeprefix("cannot estimate Rician noise: ").split(";")[0]
    tissue: float | None = None
    try:
        tissue = estimate_sigma_tissue(data)
        candidates["tissue"] = tissue
    except InputError:
        pass
    if air is not None:
        ratio = air_noise_ratio(data, air)
        candidates["air_noise_ratio"] = ratio
        agrees = tissue is not None and abs(air / tissue - 1.0) <= AGREEMENT
        if ratio >= AIR_RATIO_MIN or (math.isnan(ratio) and (agrees or tissue is None)):
            note = None
            if tissue is not None and not agrees:
                note = f"noise level from the air ({air:.4g}); bright tissue suggests {tissue:.4g}"
            return NoiseEstimate(air, "air", note, candidates)
        air_problem = (
            f"the darkest voxels are not air (their fine-scale noise is {ratio:.2f} of a Rayleigh fit's)"
            if not math.isnan(ratio)
            else f"too little air to check, and it disagrees with bright tissue ({air:.4g})"
        )
    if tissue is None:
        raise InputError(
            f"cannot estimate Rician noise: {air_problem or 'no air'}, and too little bright tissue; "
            "give --sigma"
        )
    return NoiseEstimate(
        tissue, "tissue", f"noise level from bright tissue ({tissue:.4g}): {air_problem}", candidates
    )


def resolve_noise(value: str | float, data: np.ndarray | Volume, noise: str = "gaussian") -> NoiseEstimate:
    """A user's ``--sigma`` as a :class:`NoiseEstimate` in the data's units (see :func:`resolve_sigma`)."""
    text = str(value).strip()
    if text == "auto":
        if noise == "gaussian":
            return NoiseEstimate(estimate_sigma_gaussian(data), "wavelet")
        if noise == "rician":
            return estimate_rician(data)
        raise ConfigError(f"unknown noise model {noise!r}; expected gaussian or rician")
    try:
        if text.endswith("%"):
            values = data.data if isinstance(data, Volume) else data
            sigma = float(text[:-1]) / 100.0 * float(np.percentile(np.asarray(values), 99.5))
        else:
            sigma = float(text)
    except ValueError:
        raise ConfigError(f"--sigma must be auto, a number or a percentage like 5%, got {text!r}") from None
    if not math.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"--sigma must give a positive noise level, got {text!r} -> {sigma}")
    return NoiseEstimate(sigma, "percent" if text.endswith("%") else "given")


def resolve_sigma(value: str | float, data: np.ndarray | Volume, noise: str = "gaussian") -> float:
    """Turn a user's ``--sigma`` into a number in the data's units.

    Args:
        value: ``"auto"`` (estimate for the given noise model), ``"5%"`` (percent of the volume's 99.5th
            percentile), or a positive number in the data's own units.
        data: (I, J, K) array or Volume the sigma refers to.
        noise: ``"gaussian"`` or ``"rician"`` (used by ``auto``).

    Returns:
        sigma > 0 in the data's units.
    """
    return resolve_noise(value, data, noise).sigma
