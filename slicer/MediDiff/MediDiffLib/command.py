"""Build the ``medidiff restore`` command line from the module's parameters.

The CLI contract (DESIGN.md, "CLI contract") is the only interface between the Slicer module and medidiff::

    medidiff restore INPUT OUTPUT --task TASK [--noise ...] [--sigma auto|FLOAT|N%] [--mask MASK]
        [--degradation KIND[,...]] [--target-spacing MM] [--fwhm MM] [--model default|PATH] [--steps N]
        [--samples K] [--uncertainty PATH] [--seed N] [--device auto|cpu|cuda] [--overwrite] [--quiet]

The task names, which options each task takes, the noise models, the degradation kinds and the default number
of samples come from medidiff's registry through a :class:`~MediDiffLib.catalog.Catalog`, never from copies
here. Combinations the CLI would reject are rejected first, with a message a Slicer user can act on, so a
mistake costs no process start (which imports torch: seconds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from MediDiffLib.catalog import Catalog
from MediDiffLib.errors import ParameterError, message

# The module's device choices (the GUI's Device enum has exactly these values; tests/slicer checks it).
# The CLI takes --device as free text, so there is no list in medidiff to read.
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "openvino")  # medidiff restore --backend

# typing.Union rather than `X | Y`: these aliases are evaluated at import time, and this library must
# import on the Python 3.9 of Slicer <= 5.8 to tell those users which Slicer they need.
PathLike = Union[str, os.PathLike]  # noqa: UP007
SigmaLike = Union[str, float, int]  # noqa: UP007


@dataclass(frozen=True)
class RestoreParameters:
    """Everything one ``medidiff restore`` run needs; ``None`` means "the CLI's default".

    Attributes:
        input_path: the volume to restore (the module writes a temporary NRRD).
        output_path: where medidiff writes the result (a temporary NRRD, loaded back by the module).
        task: ``denoise``, ``inpaint`` or ``restore``.
        noise: noise model for ``denoise``: ``gaussian`` or ``rician``.
        sigma: noise level for ``denoise``: ``"auto"``, a positive number in the input's intensity units, or a
            percentage of the 99.5th percentile such as ``"5%"``.
        mask_path: inpainting mask (nonzero = voxels to fill in); required by ``inpaint`` and only used there.
        degradations: degradation kinds for ``restore`` (the registry's names, e.g. ``bias``, ``blur``,
            ``thick-slices``; old spellings are mapped).
        target_spacing: through-plane spacing (mm) of the output with thick slices (``restore``).
        fwhm: the blur's full width at half maximum in mm (``deblur``).
        model: ``"default"`` for the embedded model, or a checkpoint path.
        steps: number of sampler steps.
        samples: number of posterior samples averaged into the result.
        uncertainty_path: where to write the voxel-wise standard deviation over the samples (needs samples
            >= 2).
        seed: random seed, for reproducible results.
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an existing output file.
        quiet: suppress progress lines (the module needs them, so it leaves this off).
        backend: ``auto`` (OpenVINO on a CPU, torch on a GPU), ``torch`` or ``openvino``; None: the CLI's
            default (auto).
    """

    input_path: PathLike
    output_path: PathLike
    task: str = "denoise"
    noise: str | None = None
    sigma: SigmaLike | None = None
    mask_path: PathLike | None = None
    degradations: Sequence[str] = ()
    target_spacing: float | None = None
    fwhm: float | None = None
    model: PathLike | None = None
    steps: int | None = None
    samples: int | None = None
    uncertainty_path: PathLike | None = None
    seed: int | None = None
    device: str | None = None
    overwrite: bool = False
    quiet: bool = False
    backend: str | None = None


def _format_number(value: float) -> str:
    # 12.5 -> "12.5", 3.0 -> "3": what a user would type, with 10 significant digits kept.
    return f"{value:.10g}"


def parse_sigma(value: SigmaLike) -> str:
    """Return the CLI spelling of a noise level.

    Args:
        value: ``"auto"``, a positive number (or its text) in the input's intensity units, or ``"N%"`` with
            0 < N <= 100 (a percentage of the volume's 99.5th percentile).

    Returns:
        ``"auto"``, the number as text (``"12.5"``), or the percentage as text (``"5%"``).

    Raises:
        ParameterError: the value is none of these.
    """
    invalid = message("bad_sigma", value=repr(value))
    if isinstance(value, bool):
        raise ParameterError(invalid)
    if isinstance(value, (int, float)):
        number = float(value)
        percent = False
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        percent = text.endswith("%")
        try:
            number = float(text[:-1].strip() if percent else text)
        except ValueError:
            raise ParameterError(invalid) from None
    if not math.isfinite(number) or number <= 0:
        raise ParameterError(message("sigma_not_positive", value=repr(value)))
    if percent:
        if number > 100:
            raise ParameterError(message("sigma_percent", value=repr(value)))
        return f"{_format_number(number)}%"
    return _format_number(number)


def parse_degradations(value: str | Iterable[str], catalog: Catalog) -> tuple[str, ...]:
    """Return degradation kinds in the registry's order, canonical names, without duplicates.

    Args:
        value: ``"bias,blur"`` or an iterable of kinds; case and spaces are ignored, old spellings mapped.
        catalog: the registry's view.

    Raises:
        ParameterError: a kind is unknown.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    kinds = {catalog.canonical_degradation(item) for item in items if str(item).strip()}
    return tuple(kind for kind in catalog.degradations if kind in kinds)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        names = list(choices)
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise ParameterError(message("unknown_choice", what=what, value=value, choices=listed))


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(message("bad_count", name=name, minimum=minimum, value=repr(value)))


def _check_length(name: str, value: float | None) -> None:
    if value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ParameterError(message("bad_length", name=name, value=repr(value)))


def _same_path(a: PathLike, b: PathLike) -> bool:
    return Path(os.fspath(a)).expanduser().absolute() == Path(os.fspath(b)).expanduser().absolute()


def _not_for(option: str, label: str, task: str, catalog: Catalog) -> ParameterError:
    users = list(catalog.tasks_taking(option)) or ["no"]
    tasks = f"{users[0]} task" if len(users) == 1 else f"{', '.join(users[:-1])} and {users[-1]} tasks"
    return ParameterError(message("option_not_for_task", option=label, tasks=tasks, task=task))


def validate(params: RestoreParameters, catalog: Catalog) -> None:
    """Check that the parameters form a valid ``medidiff restore`` call for this medidiff.

    Raises:
        ParameterError: with a one-line message naming the option to change.
    """
    task = catalog.task(params.task)
    degradations = parse_degradations(params.degradations, catalog)
    given = {
        "mask": params.mask_path is not None,
        "degradation": bool(degradations),
        "fwhm": params.fwhm is not None,
        "target_spacing": params.target_spacing is not None,
        "noise": params.noise is not None,
        "sigma": params.sigma is not None,
    }
    missing = {"mask": "no_mask", "degradation": "no_degradation", "fwhm": "no_fwhm"}
    for option in task.requires:
        if not given.get(option, False):
            key = missing.get(option)
            if key is None:
                raise ParameterError(message("option_unsupported", task=task.name, option=option))
            raise ParameterError(message(key, task=task.name, kinds=", ".join(catalog.degradations)))
    labels = {
        "mask": "A mask",
        "degradation": "Degradation kinds",
        "fwhm": "The blur width (FWHM)",
        "target_spacing": "The target spacing",
        "noise": "The noise model",
        "sigma": "The noise level (sigma)",
    }
    for option, label in labels.items():
        if given[option] and not task.takes(option):
            raise _not_for(option, label, task.name, catalog)
    if params.noise is not None:
        _check_choice("noise model", params.noise, catalog.noise_models)
    if params.sigma is not None:
        parse_sigma(params.sigma)
    _check_length("The blur width (FWHM, mm)", params.fwhm)
    _check_length("The target spacing (mm)", params.target_spacing)
    if params.device is not None:
        _check_choice("device", params.device, DEVICES)
    if params.backend is not None:
        _check_choice("backend", params.backend, BACKENDS)
    _check_count("Steps", params.steps, 1)
    _check_count("Samples", params.samples, 1)
    _check_count("Seed", params.seed, 0)
    if params.uncertainty_path is not None and (params.samples or task.samples) < 2:
        raise ParameterError(message("uncertainty_samples"))
    if params.model is not None and os.fspath(params.model).strip() == "":
        raise ParameterError(message("empty_model_path"))
    if _same_path(params.input_path, params.output_path):
        raise ParameterError(message("same_output_path"))
    if params.uncertainty_path is not None and (
        _same_path(params.uncertainty_path, params.output_path)
        or _same_path(params.uncertainty_path, params.input_path)
    ):
        raise ParameterError(message("same_uncertainty_path"))


def build_restore_argv(
    params: RestoreParameters, catalog: Catalog, executable: Sequence[str] = ("medidiff",)
) -> list[str]:
    """Return the argv of ``medidiff restore`` for these parameters.

    Args:
        params: the run's parameters; validated first.
        catalog: the registry of the medidiff that will run (tasks, options, value lists).
        executable: how to start medidiff, for example ``[python, "-m", "medidiff"]`` (what the module uses,
            so the CLI runs in the interpreter it was installed into) or ``["medidiff"]``.

    Returns:
        The full argv; options left at ``None`` are omitted so the CLI's defaults apply.

    Raises:
        ParameterError: the parameters are invalid (see :func:`validate`).
    """
    validate(params, catalog)
    argv = [*executable, "restore", os.fspath(params.input_path), os.fspath(params.output_path)]
    argv += ["--task", params.task]
    if params.noise is not None:
        argv += ["--noise", params.noise]
    if params.sigma is not None:
        argv += ["--sigma", parse_sigma(params.sigma)]
    if params.mask_path is not None:
        argv += ["--mask", os.fspath(params.mask_path)]
    degradations = parse_degradations(params.degradations, catalog)
    if degradations:
        argv += ["--degradation", ",".join(degradations)]
    if params.target_spacing is not None:
        argv += ["--target-spacing", _format_number(params.target_spacing)]
    if params.fwhm is not None:
        argv += ["--fwhm", _format_number(params.fwhm)]
    if params.model is not None:
        argv += ["--model", os.fspath(params.model)]
    if params.steps is not None:
        argv += ["--steps", str(params.steps)]
    if params.samples is not None:
        argv += ["--samples", str(params.samples)]
    if params.uncertainty_path is not None:
        argv += ["--uncertainty", os.fspath(params.uncertainty_path)]
    if params.seed is not None:
        argv += ["--seed", str(params.seed)]
    if params.device is not None:
        argv += ["--device", params.device]
    if params.backend is not None:
        argv += ["--backend", params.backend]
    if params.overwrite:
        argv.append("--overwrite")
    if params.quiet:
        argv.append("--quiet")
    return argv
