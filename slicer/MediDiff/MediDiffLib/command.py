"""Build the ``medidiff restore`` command line from the module's parameters.

The CLI contract (DESIGN.md, "CLI contract") is the only interface between the Slicer module and medidiff::

    medidiff restore INPUT OUTPUT --task denoise|inpaint|restore [--noise gaussian|rician]
        [--sigma auto|FLOAT|N%] [--mask MASK] [--degradation bias|blur|slices[,...]] [--model default|PATH]
        [--steps N] [--samples K] [--uncertainty PATH] [--seed N] [--device auto|cpu|cuda]
        [--overwrite] [--quiet]

Combinations the CLI would reject are rejected here first, with a message a Slicer user can act on, so a
mistake costs no process start (which imports torch: seconds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from MediDiffLib.errors import ParameterError

TASKS = ("denoise", "inpaint", "restore")
# The CLI's default number of chains per task (medidiff.inference.defaults.DEFAULTS; this module runs in
# Slicer's Python, which does not import medidiff).
DEFAULT_SAMPLES = {"denoise": 1, "inpaint": 4, "restore": 4}
NOISE_MODELS = ("gaussian", "rician")
DEGRADATIONS = ("bias", "blur", "slices")
DEVICES = ("auto", "cpu", "cuda")
# The contract lists --noise and --sigma on the denoise line only; widen this if the CLI grows them elsewhere.
NOISE_TASKS = ("denoise",)

# typing.Union/Optional rather than `X | Y`: these aliases are evaluated at import time, and Slicer up to 5.8
# runs Python 3.9.
PathLike = Union[str, os.PathLike[str]]  # noqa: UP007
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
        degradations: degradation kinds for ``restore`` (``bias``, ``blur``, ``slices``).
        model: ``"default"`` for the embedded model, or a checkpoint path.
        steps: number of sampler steps.
        samples: number of posterior samples averaged into the result.
        uncertainty_path: where to write the voxel-wise standard deviation over the samples (needs samples
            >= 2).
        seed: random seed, for reproducible results.
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an existing output file.
        quiet: suppress progress lines (the module needs them, so it leaves this off).
    """

    input_path: PathLike
    output_path: PathLike
    task: str = "denoise"
    noise: str | None = None
    sigma: SigmaLike | None = None
    mask_path: PathLike | None = None
    degradations: Sequence[str] = ()
    model: PathLike | None = None
    steps: int | None = None
    samples: int | None = None
    uncertainty_path: PathLike | None = None
    seed: int | None = None
    device: str | None = None
    overwrite: bool = False
    quiet: bool = False


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
    invalid = (
        f"Invalid sigma {value!r}: use auto, a positive number in the input's intensity units, "
        "or a percentage such as 5%."
    )
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
        raise ParameterError(f"Sigma must be a positive, finite number (got {value!r}).")
    if percent:
        if number > 100:
            raise ParameterError(f"A sigma percentage must be at most 100% (got {value!r}).")
        return f"{_format_number(number)}%"
    return _format_number(number)


def parse_degradations(value: str | Iterable[str]) -> tuple[str, ...]:
    """Return degradation kinds in canonical order without duplicates.

    Args:
        value: ``"bias,blur"`` or an iterable of kinds; case and spaces are ignored.

    Raises:
        ParameterError: a kind is unknown.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    kinds = {str(item).strip().lower() for item in items if str(item).strip()}
    unknown = sorted(kinds.difference(DEGRADATIONS))
    if unknown:
        raise ParameterError(
            f"Unknown degradation kind {', '.join(unknown)}: choose among {', '.join(DEGRADATIONS)}."
        )
    return tuple(kind for kind in DEGRADATIONS if kind in kinds)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParameterError(f"Unknown {name} {value!r}: choose {', '.join(choices[:-1])} or {choices[-1]}.")


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer of at least {minimum} (got {value!r}).")


def _same_path(a: PathLike, b: PathLike) -> bool:
    return Path(os.fspath(a)).expanduser().absolute() == Path(os.fspath(b)).expanduser().absolute()


def validate(params: RestoreParameters) -> None:
    """Check that the parameters form a valid ``medidiff restore`` call.

    Raises:
        ParameterError: with a one-line message naming the option to change.
    """
    _check_choice("task", params.task, TASKS)
    if params.task == "inpaint" and params.mask_path is None:
        raise ParameterError(
            "The inpaint task needs a mask: choose a segmentation or a label map whose nonzero voxels mark "
            "the voxels to fill in."
        )
    if params.task != "inpaint" and params.mask_path is not None:
        raise ParameterError(f"A mask is only used by the inpaint task (the task is {params.task}).")
    degradations = parse_degradations(params.degradations)
    if params.task == "restore" and not degradations:
        raise ParameterError("The restore task needs at least one degradation kind: bias, blur or slices.")
    if params.task != "restore" and degradations:
        raise ParameterError(
            f"Degradation kinds are only used by the restore task (the task is {params.task})."
        )
    if params.task not in NOISE_TASKS and (params.noise is not None or params.sigma is not None):
        raise ParameterError(
            f"The noise model and sigma apply to the {' and '.join(NOISE_TASKS)} task only "
            f"(the task is {params.task})."
        )
    if params.noise is not None:
        _check_choice("noise model", params.noise, NOISE_MODELS)
    if params.sigma is not None:
        parse_sigma(params.sigma)
    if params.device is not None:
        _check_choice("device", params.device, DEVICES)
    _check_count("Steps", params.steps, 1)
    _check_count("Samples", params.samples, 1)
    _check_count("Seed", params.seed, 0)
    default_samples = DEFAULT_SAMPLES.get(params.task, 1)
    if params.uncertainty_path is not None and (params.samples or default_samples) < 2:
        raise ParameterError(
            "The uncertainty map is the standard deviation over samples: set samples to 2 or more."
        )
    if params.model is not None and os.fspath(params.model).strip() == "":
        raise ParameterError("The model path is empty: leave it unset to use the default model.")
    if _same_path(params.input_path, params.output_path):
        raise ParameterError("The output path must differ from the input path.")
    if params.uncertainty_path is not None and (
        _same_path(params.uncertainty_path, params.output_path)
        or _same_path(params.uncertainty_path, params.input_path)
    ):
        raise ParameterError("The uncertainty path must differ from the input and output paths.")


def build_restore_argv(params: RestoreParameters, executable: Sequence[str] = ("medidiff",)) -> list[str]:
    """Return the argv of ``medidiff restore`` for these parameters.

    Args:
        params: the run's parameters; validated first.
        executable: how to start medidiff, for example ``[python, "-m", "medidiff"]`` (what the module uses,
            so the CLI runs in the interpreter it was installed into) or ``["medidiff"]``.

    Returns:
        The full argv; options left at ``None`` are omitted so the CLI's defaults apply.

    Raises:
        ParameterError: the parameters are invalid (see :func:`validate`).
    """
    validate(params)
    argv = [*executable, "restore", os.fspath(params.input_path), os.fspath(params.output_path)]
    argv += ["--task", params.task]
    if params.noise is not None:
        argv += ["--noise", params.noise]
    if params.sigma is not None:
        argv += ["--sigma", parse_sigma(params.sigma)]
    if params.mask_path is not None:
        argv += ["--mask", os.fspath(params.mask_path)]
    degradations = parse_degradations(params.degradations)
    if degradations:
        argv += ["--degradation", ",".join(degradations)]
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
    if params.overwrite:
        argv.append("--overwrite")
    if params.quiet:
        argv.append("--quiet")
    return argv
