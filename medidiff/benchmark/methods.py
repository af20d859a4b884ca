"""Run one method on one prepared case: medidiff or a classical baseline, timed the same way.

:func:`run_method` is what a benchmark worker does (in a fresh process, or in the harness's own process): it
loads what the method needs *before* the clock starts (the case's volumes, and for medidiff the model), then
times only the restoration call. Every method sees the same degraded volume; the baselines also get the
true degradation parameters they need (noise sigma, slice axis and factor), medidiff gets nothing but its
own options (``sigma: auto`` by default).

BM4D is the one baseline whose library is not a dependency of medidiff (the ``bm4d`` package is installed
with the repository's development extra): the method exists only where that package is installed, and a run
that selects it elsewhere stops before any work with one line saying so (:func:`require_packages`).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medidiff.benchmark import baselines
from medidiff.benchmark.cases import CaseData
from medidiff.errors import ConfigError


@dataclass
class MethodResult:
    """A method's output on the reference grid, and what it cost.

    Attributes:
        output: (I, J, K) float32 restored volume (reference grid).
        uncertainty: (I, J, K) float32 std over posterior samples, or None.
        seconds: wall-clock time of the restoration call alone.
        network_evaluations: whole-volume network evaluations (0 for classical methods).
        info: method-specific details (medidiff's restore info, settings used).
    """

    output: np.ndarray
    uncertainty: np.ndarray | None = None
    seconds: float = 0.0
    network_evaluations: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _true_sigma(case: CaseData, method: str) -> float:
    if "sigma" not in case.truth:
        raise ConfigError(f"{method} needs a noise step (gaussian or rician) in the degradation")
    return float(case.truth["sigma"])


def _denoiser(function: Callable[[np.ndarray, float], np.ndarray], name: str) -> Callable[..., Any]:
    """A baseline denoiser given the true sigma; Rician outputs get medidiff's own bias correction."""

    def prepare(case: CaseData, options: dict[str, Any]) -> Callable[[], tuple[np.ndarray, dict[str, Any]]]:
        sigma = _true_sigma(case, name)
        noisy = np.asarray(case.degraded.data, dtype=np.float64)
        rician = case.truth.get("noise") == "rician"

        def call() -> tuple[np.ndarray, dict[str, Any]]:
            out = function(noisy, sigma)
            if rician:
                out = baselines.rician_corrected(out, sigma)
            return out, {"sigma": sigma, "rician_correction": rician}

        return call

    return prepare


def _biharmonic(case: CaseData, options: dict[str, Any]) -> Callable[[], tuple[np.ndarray, dict[str, Any]]]:
    if case.missing is None:
        raise ConfigError("biharmonic needs a holes or slices step in the degradation")
    data, missing = np.asarray(case.degraded.data, dtype=np.float64), case.missing
    return lambda: (baselines.biharmonic(data, missing), {"margin": baselines.BIHARMONIC_MARGIN})


def _n4(case: CaseData, options: dict[str, Any]) -> Callable[[], tuple[np.ndarray, dict[str, Any]]]:
    data, spacing = np.asarray(case.degraded.data, dtype=np.float64), case.degraded.spacing
    return lambda: (baselines.n4(data, spacing), {"shrink": baselines.N4_SHRINK})


def _cubic(case: CaseData, options: dict[str, Any]) -> Callable[[], tuple[np.ndarray, dict[str, Any]]]:
    if "factor" not in case.truth:
        raise ConfigError("cubic needs a thick step in the degradation")
    axis, factor = int(case.truth["axis"]), int(case.truth["factor"])
    data = np.asarray(case.degraded.data, dtype=np.float64)
    return lambda: (baselines.cubic_slices(data, axis, factor), {"axis": axis, "factor": factor})


BASELINES: dict[str, Callable[..., Any]] = {
    "bm4d": _denoiser(baselines.bm4d_denoise, "bm4d"),
    "nlm": _denoiser(baselines.nlm, "nlm"),
    "tv": _denoiser(baselines.tv, "tv"),
    "biharmonic": _biharmonic,
    "n4": _n4,
    "cubic": _cubic,
}


# Methods whose library is an optional package (not a dependency of medidiff): method -> package.
OPTIONAL_PACKAGES: dict[str, str] = {"bm4d": "bm4d"}


def require_packages(methods: Iterable[str]) -> None:
    """Check that every method in ``methods`` can run here (the optional packages it needs are installed).

    Raises:
        ConfigError: a method needs a package that is not installed; the message names it and the methods
            that can run.
    """
    methods = list(dict.fromkeys(methods))
    # find_spec rather than importing: whether the package is there, without loading its code.
    missing = {
        m: OPTIONAL_PACKAGES[m]
        for m in methods
        if m in OPTIONAL_PACKAGES and importlib.util.find_spec(OPTIONAL_PACKAGES[m]) is None
    }
    if missing:
        needs = ", ".join(f"{m} needs the {p} package (pip install {p})" for m, p in missing.items())
        rest = [m for m in methods if m not in missing]
        hint = f"; to run without it: --methods {','.join(rest)}" if rest else ""
        raise ConfigError(f"benchmark method {needs}, which is not installed{hint}")


def medidiff_kwargs(case: CaseData, task: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`medidiff.inference.pipeline.restore` for a case (``sigma: true`` means
    the true sigma; the default is ``auto``)."""
    kwargs = {k: v for k, v in options.items() if k not in ("model", "device")}
    if str(kwargs.get("sigma", "auto")) == "true":
        kwargs["sigma"] = _true_sigma(case, "medidiff with sigma: true")
    if "axis" in case.truth and "target_spacing" not in kwargs:
        # Thick slices: the output grid is the reference's (geometry the user chooses, not a fitted
        # parameter); the CLI's default, the in-plane spacing, is not a divisor of the slice spacing on
        # every anisotropic grid (4 mm slices over 0.87 mm pixels).
        kwargs["target_spacing"] = float(case.reference.spacing[int(case.truth["axis"])])
    if task == "inpaint":
        if case.missing is None:
            raise ConfigError("the inpaint task needs a holes or slices step in the degradation")
        kwargs["mask"] = case.missing.astype(np.uint8)
    return {"task": task, **kwargs}


def run_medidiff(
    case: CaseData, task: str, options: dict[str, Any], model: str, device: str = "cpu"
) -> MethodResult:
    """medidiff.restore on the degraded volume; the model is loaded before the clock starts."""
    from medidiff.inference.pipeline import get_model, resolve_device, restore

    kwargs = medidiff_kwargs(case, task, options)
    get_model(model, resolve_device(device))
    start = time.perf_counter()
    result = restore(case.degraded, model=model, device=device, progress=False, full_result=True, **kwargs)
    seconds = time.perf_counter() - start
    info = {k: v for k, v in result.info.items() if isinstance(v, (int, float, str, bool, list, dict))}
    evaluations = int(result.info.get("network_evaluations", 0))
    uncertainty = None if result.uncertainty is None else np.asarray(result.uncertainty.data, np.float32)
    return MethodResult(
        np.asarray(result.volume.data, dtype=np.float32), uncertainty, seconds, evaluations, info
    )


def run_method(
    method: str, case: CaseData, task: str, options: dict[str, Any], model: str, device: str = "cpu"
) -> MethodResult:
    """Run ``method`` on ``case``; returns its output on the reference grid and its cost.

    Args:
        method: ``medidiff`` or a key of :data:`BASELINES`.
        case: the prepared case.
        task: the degradation's task (denoise, inpaint, restore).
        options: medidiff's restore options (ignored by the baselines).
        model: medidiff model spec.
        device: medidiff device.
    """
    if method == "medidiff":
        result = run_medidiff(case, task, options, model, device)
    elif method in BASELINES:
        call = BASELINES[method](case, options)
        start = time.perf_counter()
        output, info = call()
        result = MethodResult(
            np.asarray(output, dtype=np.float32), None, time.perf_counter() - start, 0, info
        )
    else:
        raise ConfigError(f"unknown benchmark method {method!r}")
    if result.output.shape != case.reference.shape:
        raise ConfigError(
            f"{method} returned shape {result.output.shape}, the reference has {case.reference.shape}"
        )
    return result
