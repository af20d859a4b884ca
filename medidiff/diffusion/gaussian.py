"""Exact denoisers for analytic data distributions: the "model" of the closed-form tests.

For data x_0 ~ p and ``x_t = alpha x_0 + sigma eps`` (any :class:`~medidiff.diffusion.sde.SDE`), these classes
return the exact ``E[x_0 | x_t]`` and ``E[eps | x_t]`` (so also the exact score ``-eps / sigma``), the
marginal density of x_t, and draws from p. Samplers and conditioning rules can then be checked against
closed forms with no training.

* :class:`DiagonalGaussian`: independent elements, per-element mean and variance tensors of any shape.
* :class:`FullCovGaussian`: a small full covariance over the flattened sample (D = prod(event_shape)).
* :class:`IsotropicGaussianMixture`: K components ``N(mu_k, tau_k^2 I)`` with weights w_k.

The Gaussian ones also give the exact probability-flow ODE map (:meth:`ode_flow`) and the posterior after a
linear-Gaussian observation (:meth:`observe`), which is the target of inpainting/denoising tests.

Formulas (per eigen-direction of Sigma with variance v; c = alpha^2 v + sigma^2 is the variance of x_t)::

    E[x0 | x_t]   = mu + alpha v / c (x_t - alpha mu)        Var[x0 | x_t] = v sigma^2 / c
    E[eps | x_t]  = sigma / c (x_t - alpha mu)               (written so that sigma = 0 is safe)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction, expand_like
from medidiff.diffusion.sde import SDE


def _coefficients(sde: SDE, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t), sigma(t) for t (B,), broadcast against x (B, ...), in x's dtype."""
    alpha, sigma = sde.coefficients(torch.as_tensor(t, dtype=torch.float64))
    return expand_like(alpha, x), expand_like(sigma, x)


class DiagonalGaussian:
    """Independent elements: ``x_0 ~ N(mean, diag(var))``.

    Args:
        mean, var: tensors broadcastable against a batch x (B, ...). Usually the shape of one sample,
            e.g. (C, I, J, K); a leading batch dimension is allowed (per-sample priors, e.g. windows).
            ``var`` may be 0 (a deterministic element).
        sde: gives alpha(t), sigma(t).
    """

    def __init__(self, mean: Tensor, var: Tensor, sde: SDE) -> None:
        self.mean = torch.as_tensor(mean)
        self.var = torch.as_tensor(var)
        self.sde = sde

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean.to(x), self.var.to(x)

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        """Exact eps and x0 predictions at x_t: (B, ...), t: (B,)."""
        mean, var = self._params(x)
        alpha, sigma = _coefficients(self.sde, t, x)
        resid = x - alpha * mean
        c = alpha**2 * var + sigma**2
        return Prediction(eps=sigma / c * resid, x0=mean + alpha * var / c * resid)

    def posterior(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of x_0 given x_t, both like x."""
        mean, var = self._params(x)
        alpha, sigma = _coefficients(self.sde, t, x)
        c = alpha**2 * var + sigma**2
        return mean + alpha * var / c * (x - alpha * mean), var * sigma**2 / c

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean and variance of x_t (for a scalar t), shaped like ``mean``/``var`` broadcast."""
        alpha, sigma = self.sde.scalar_coefficients(float(t))
        mean, var = torch.broadcast_tensors(self.mean, self.var)
        return alpha * mean, alpha**2 * var + sigma**2

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) of the marginal at times t (B,); x: (B, ...). Returns (B,)."""
        mean, var = self._params(x)
        alpha, sigma = _coefficients(self.sde, t, x)
        c = (alpha**2 * var + sigma**2).expand_as(x)
        quad = (x - alpha * mean) ** 2 / c
        return -0.5 * (quad + torch.log(2 * math.pi * c)).flatten(1).sum(1)

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """n draws of x_0, shape (n, *broadcast(mean, var).shape)."""
        mean, var = torch.broadcast_tensors(self.mean.to(dtype), self.var.to(dtype))
        z = torch.randn((n, *mean.shape), generator=generator, dtype=dtype)
        return mean + var.sqrt() * z

    def ode_flow(self, x: Tensor, t: float, s: float) -> Tensor:
        """Exact probability-flow ODE map x_t -> x_s (any t, s in the SDE's range).

        The ODE transports N(alpha_t mu, c_t) to N(alpha_s mu, c_s) element-wise by the monotone affine map.
        """
        mean, var = self._params(x)
        (a_t, s_t), (a_s, s_s) = self.sde.scalar_coefficients(t), self.sde.scalar_coefficients(s)
        ratio = torch.sqrt((a_s**2 * var + s_s**2) / (a_t**2 * var + s_t**2))
        return a_s * mean + ratio * (x - a_t * mean)

    def observe(self, gain: Tensor | float, y: Tensor, noise_var: Tensor | float) -> DiagonalGaussian:
        """The posterior of x_0 after observing ``y = gain * x_0 + N(0, noise_var)`` element-wise.

        ``gain = mask`` with ``noise_var = 0`` is inpainting (known elements become deterministic);
        ``gain = 1`` is Gaussian denoising. Elements with ``gain = 0`` keep the prior.
        """
        gain, noise_var = torch.as_tensor(gain).to(y), torch.as_tensor(noise_var).to(y)
        mean, var = self.mean.to(y), self.var.to(y)
        denom = noise_var + gain**2 * var
        safe = torch.where(denom > 0, denom, torch.ones_like(denom))
        post_mean = torch.where(denom > 0, (noise_var * mean + gain * var * y) / safe, mean)
        post_var = torch.where(denom > 0, var * noise_var / safe, var)
        return DiagonalGaussian(post_mean, post_var, self.sde)


class FullCovGaussian:
    """``x_0 ~ N(mean, cov)`` over the flattened sample; for small D (cov is D x D, eigendecomposed once).

    Args:
        mean: (D,) or ``event_shape``.
        cov: (D, D), symmetric positive semi-definite.
        event_shape: shape of one sample, e.g. (1, 2, 2, 2); prod(event_shape) = D.
        sde: gives alpha(t), sigma(t).
    """

    def __init__(self, mean: Tensor, cov: Tensor, event_shape: Sequence[int], sde: SDE) -> None:
        self.event_shape = tuple(int(s) for s in event_shape)
        self.dim = math.prod(self.event_shape)
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(self.dim)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        if self.cov.shape != (self.dim, self.dim):
            raise ValueError(f"cov must be ({self.dim}, {self.dim}) for event shape {self.event_shape}")
        self.cov = 0.5 * (self.cov + self.cov.T)
        eigval, self.eigvec = torch.linalg.eigh(self.cov)
        self.eigval = eigval.clamp_min(0.0)
        self.sde = sde

    def _rotate(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Coordinates of x - alpha mu in the eigenbasis: (B, D), with alpha, sigma (B, 1), eigval, U."""
        u, lam, mean = self.eigvec.to(x), self.eigval.to(x), self.mean.to(x)
        flat = x.reshape(x.shape[0], self.dim)
        alpha, sigma = _coefficients(self.sde, t, flat)
        return (flat - alpha * mean) @ u, alpha, sigma, lam, u

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        """Exact eps and x0 predictions at x_t: (B, *event_shape), t: (B,)."""
        z, alpha, sigma, lam, u = self._rotate(x, t)
        c = alpha**2 * lam + sigma**2
        eps = (sigma / c * z) @ u.T
        x0 = self.mean.to(x) + (alpha * lam / c * z) @ u.T
        return Prediction(eps=eps.reshape(x.shape), x0=x0.reshape(x.shape))

    def posterior(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (like x) and covariance (B, D, D) of x_0 given x_t."""
        z, alpha, sigma, lam, u = self._rotate(x, t)
        c = alpha**2 * lam + sigma**2
        mean = self.mean.to(x) + (alpha * lam / c * z) @ u.T
        cov = (u * (lam * sigma**2 / c)[:, None, :]) @ u.T
        return mean.reshape(x.shape), cov

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) of the marginal, (B,)."""
        z, alpha, sigma, lam, _ = self._rotate(x, t)
        c = alpha**2 * lam + sigma**2
        return -0.5 * (z**2 / c + torch.log(2 * math.pi * c)).sum(1)

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """n draws of x_0, shape (n, *event_shape)."""
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        flat = self.mean + (z * self.eigval.sqrt()) @ self.eigvec.T
        return flat.reshape(n, *self.event_shape).to(dtype)

    def ode_flow(self, x: Tensor, t: float, s: float) -> Tensor:
        """Exact probability-flow ODE map x_t -> x_s (independent per eigen-direction)."""
        (a_t, s_t), (a_s, s_s) = self.sde.scalar_coefficients(t), self.sde.scalar_coefficients(s)
        u, lam, mean = self.eigvec.to(x), self.eigval.to(x), self.mean.to(x)
        z = (x.reshape(x.shape[0], self.dim) - a_t * mean) @ u
        ratio = torch.sqrt((a_s**2 * lam + s_s**2) / (a_t**2 * lam + s_t**2))
        return (a_s * mean + (ratio * z) @ u.T).reshape(x.shape)

    def observe(self, operator: Tensor, y: Tensor, noise_var: float) -> FullCovGaussian:
        """The posterior of x_0 after ``y = A x_0 + N(0, noise_var I)``; A: (M, D), y: (M,).

        ``noise_var = 0`` is allowed when A cov A^T is invertible (e.g. A selects known elements).
        """
        a = torch.as_tensor(operator, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        s_ay = self.cov @ a.T  # Cov(x0, y): (D, M)
        s_yy = a @ s_ay + noise_var * torch.eye(a.shape[0], dtype=torch.float64)
        gain = torch.linalg.solve(s_yy, s_ay.T).T  # (D, M)
        mean = self.mean + gain @ (y - a @ self.mean)
        cov = self.cov - gain @ s_ay.T
        return FullCovGaussian(mean, cov, self.event_shape, self.sde)


class IsotropicGaussianMixture:
    """``x_0 ~ sum_k w_k N(mu_k, tau_k^2 I)``.

    Args:
        weights: (K,), positive (normalised here).
        means: (K, *event_shape).
        stds: (K,) component standard deviations tau_k > 0.
        sde: gives alpha(t), sigma(t).
    """

    def __init__(self, weights: Tensor, means: Tensor, stds: Tensor, sde: SDE) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        self.event_shape = tuple(self.means.shape[1:])
        self.dim = math.prod(self.event_shape)
        self.sde = sde

    def _component_terms(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-component log joint (B, K), residuals (B, K, D), c_k (B, K), alpha, sigma (B, 1, 1)."""
        flat = x.reshape(x.shape[0], 1, self.dim)
        means = self.means.to(x).reshape(1, -1, self.dim)
        alpha, sigma = _coefficients(self.sde, t, flat)
        c = (alpha**2 * self.stds.to(x).reshape(1, -1, 1) ** 2 + sigma**2).squeeze(-1)  # (B, K)
        resid = flat - alpha * means
        log_joint = (
            torch.log(self.weights.to(x))
            - 0.5 * self.dim * torch.log(2 * math.pi * c)
            - 0.5 * (resid**2).sum(-1) / c
        )
        return log_joint, resid, c, alpha, sigma

    def responsibilities(self, x: Tensor, t: Tensor) -> Tensor:
        """P(component k | x_t), (B, K)."""
        log_joint, *_ = self._component_terms(x, t)
        return torch.softmax(log_joint, dim=1)

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        """Exact eps and x0 predictions at x_t: (B, *event_shape), t: (B,)."""
        log_joint, resid, c, alpha, sigma = self._component_terms(x, t)
        resp = torch.softmax(log_joint, dim=1).unsqueeze(-1)  # (B, K, 1)
        c = c.unsqueeze(-1)
        var = self.stds.to(x).reshape(1, -1, 1) ** 2
        eps = (resp * sigma / c * resid).sum(1)
        x0 = (resp * (self.means.to(x).reshape(1, -1, self.dim) + alpha * var / c * resid)).sum(1)
        return Prediction(eps=eps.reshape(x.shape), x0=x0.reshape(x.shape))

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) of the marginal, (B,)."""
        log_joint, *_ = self._component_terms(x, t)
        return torch.logsumexp(log_joint, dim=1)

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[Tensor, Tensor]:
        """n draws of x_0 (n, *event_shape) and their component labels (n,)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=torch.float64)
        x = self.means[labels] + expand_like(self.stds[labels], z) * z
        return x.to(dtype), labels
