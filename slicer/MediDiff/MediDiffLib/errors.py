"""The messages the MediDiff Slicer module shows to users, and the exceptions that carry them.

Every message a user can see is a template in :data:`MESSAGES`, so ``docs/slicer.md`` can list them all in its
troubleshooting section (a test checks that it does). Each error has a one-line ``message`` for the dialog and
optional multi-line ``details`` (for example the tail of the process's stderr) for its "Show details" box.

This module imports nothing from Slicer or Qt: it is unit-tested with plain pytest.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

# Kept in sync with the CLI (medidiff/cli/main.py): user errors are one line with this prefix, exit code 2.
CLI_ERROR_PREFIX = "medidiff: error: "
CLI_INTERNAL_ERROR_PREFIX = "medidiff: internal error: "
CLI_WARNING_PREFIX = "medidiff: warning: "  # the result was written but may be worse than the input
CLI_NOTE_PREFIX = "medidiff: note: "

# How many trailing stderr lines go into the details box: enough for a traceback, short enough to read.
DETAILS_TAIL_LINES = 40

MESSAGES: dict[str, str] = {
    # -- installation ---------------------------------------------------------------------------------------
    "python_too_old": (
        "MediDiff needs 3D Slicer {slicer} or newer: medidiff runs on Python {python_needed}, and this "
        "Slicer has Python {python}. Install a current 3D Slicer from download.slicer.org."
    ),
    "medidiff_missing_install": (
        "The medidiff Python package is not installed in Slicer's Python. "
        "Click Apply again and accept the installation, or see docs/slicer.md."
    ),
    "no_payload": (
        "This copy of the MediDiff module carries no medidiff package to install (it was neither built as an "
        "extension nor loaded from a medidiff source checkout). Install the MediDiff extension from the "
        "Extensions Manager, or see docs/slicer.md."
    ),
    "install_question": "MediDiff needs Python packages that are not installed in Slicer yet:",
    "update_question": (
        "The medidiff package in Slicer's Python ({installed}) is not the one this MediDiff module was built "
        "with ({expected}): {reason}. Update it now?"
    ),
    "install_declined": "The dependencies were not installed, so nothing was run.",
    "install_failed": "Installing the dependencies failed: {reason}",
    "pytorch_missing": "PyTorch could not be installed by the PyTorch extension: {reason}",
    "torch_too_old": (
        "The installed PyTorch {installed} is too old: medidiff needs torch{requirement}. Update it in the "
        "PyTorch Utils module (version requirement {requirement}), then click Apply again."
    ),
    # -- input and mask -------------------------------------------------------------------------------------
    "no_input": "Choose an input volume.",
    "no_image_data": "The volume '{name}' has no image data.",
    "not_scalar": (
        "The volume '{name}' is not a scalar volume ({kind}): medidiff restores single-channel grey-level "
        "volumes such as MRI or CT."
    ),
    "label_map_input": (
        "The volume '{name}' is a label map: choose a grey-level volume as input "
        "(a label map can be the inpainting mask)."
    ),
    "not_3d": "The volume '{name}' is not a 3D volume (its size is {size}): medidiff needs 2 slices or more.",
    "no_mask": (
        "The {task} task needs a mask: choose a segmentation or a label map whose nonzero voxels mark the "
        "voxels to fill in."
    ),
    "mask_empty": "The mask '{name}' is empty: there is nothing to inpaint.",
    "mask_geometry": (
        "The label map '{mask}' does not have the geometry of the input volume '{volume}' ({difference}). "
        "Resample it onto the input (Resample Image (BRAINS) or Segment Editor) or use a segmentation."
    ),
    "mask_transform": (
        "The label map '{mask}' is under a different transform than the input volume '{volume}': "
        "harden or remove the transforms first."
    ),
    "write_failed": "Could not write '{name}' to {path}.",
    # -- options --------------------------------------------------------------------------------------------
    "no_degradation": "The {task} task needs at least one degradation kind: {kinds}.",
    "no_fwhm": "The {task} task needs the blur's width: set FWHM (mm) to a positive value.",
    "unknown_choice": "Unknown {what} '{value}': choose {choices}.",
    "unknown_degradation": "Unknown degradation kind '{kind}': choose among {choices}.",
    "option_not_for_task": "{option} is only used by the {tasks} (the task is {task}).",
    "option_unsupported": (
        "The {task} task needs the option '{option}', which this version of the MediDiff panel cannot set: "
        "run it with the medidiff command line."
    ),
    "bad_count": "{name} must be an integer of at least {minimum} (got {value}).",
    "bad_length": "{name} must be a positive number of millimetres (got {value}).",
    "bad_sigma": (
        "Invalid sigma {value}: use auto, a positive number in the input's intensity units, "
        "or a percentage such as 5%."
    ),
    "sigma_not_positive": "Sigma must be a positive, finite number (got {value}).",
    "sigma_percent": "A sigma percentage must be at most 100% (got {value}).",
    "uncertainty_samples": (
        "The uncertainty map is the standard deviation over samples: set samples to 2 or more."
    ),
    "empty_model_path": "The model path is empty: leave it unset to use the default model.",
    "same_output_path": "The output path must differ from the input path.",
    "same_uncertainty_path": "The uncertainty path must differ from the input and output paths.",
    # -- running --------------------------------------------------------------------------------------------
    "could_not_start": "MediDiff could not start: {error}",
    "process_user_error": "medidiff could not restore the volume: {reason}",
    "process_too_old": (
        "The installed medidiff has no 'restore' command: update it (see docs/slicer.md, Troubleshooting)."
    ),
    "process_internal_error": "medidiff stopped on an internal error: {reason}",
    "process_killed": (
        "The medidiff process was killed by signal {signal}. If nobody cancelled it, the computer probably "
        "ran out of memory: try the CPU device, fewer samples or a smaller volume."
    ),
    "process_failed": "medidiff failed with exit code {code}.",
    "process_start": "Could not start medidiff ({command}): {reason}",
    "result_missing": "medidiff finished but wrote no result file ({path}).",
    "result_load": "Slicer could not load the result file {path}.",
}

# The status line under the Apply button (not errors; docs/slicer.md's walkthrough quotes them).
STATUS: dict[str, str] = {
    "not_installed": "Not installed yet: {missing}. Apply will offer to install it (this is asked once).",
    "outdated": (
        "medidiff {installed} is installed; this module was built with {expected}. Apply offers the update."
    ),
    "starting": "Starting medidiff (loading PyTorch and the model)... {elapsed}",
    "running": "Running: {progress} ({elapsed})",
    "done": "Done in {elapsed}: added {added}.",
    "done_warning": "Done in {elapsed}, added {added}, but check it: {warning}.",
    "cancelling": "Cancelling...",
    "cancelled": "Cancelled after {elapsed}.",
    "ready": "Run the restoration in the background.",
}


class MediDiffPluginError(Exception):
    """A failure to show to the user: a one-line ``message`` plus optional ``details``."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ParameterError(MediDiffPluginError):
    """The chosen options cannot be combined or parsed."""


class DependencyError(MediDiffPluginError):
    """medidiff (or PyTorch) is missing or could not be installed."""


class InputVolumeError(MediDiffPluginError):
    """The input volume cannot be restored (not scalar, not 3D, no data)."""


class MaskError(MediDiffPluginError):
    """The inpainting mask is missing, empty or does not match the input's geometry."""


class ProcessError(MediDiffPluginError):
    """The medidiff process failed, or its result could not be read back."""


def message(key: str, **fields: object) -> str:
    """Format the user message ``key`` of :data:`MESSAGES` with ``fields``."""
    return MESSAGES[key].format(**fields)


def status(key: str, **fields: object) -> str:
    """Format the status line ``key`` of :data:`STATUS` with ``fields``."""
    return STATUS[key].format(**fields)


def format_size(dimensions: Sequence[int]) -> str:
    """Return ``"16×16×1"`` for ``(16, 16, 1)``."""
    return "×".join(str(int(d)) for d in dimensions)


def stderr_tail(lines: Sequence[str], limit: int = DETAILS_TAIL_LINES) -> str:
    """Return the last ``limit`` lines of a process's stderr as one text block for a details box."""
    kept = [line.rstrip("\n") for line in lines if line.strip()]
    return "\n".join(kept[-limit:])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def process_failure(returncode: int, stderr_lines: Sequence[str], cancelled: bool = False) -> ProcessError:
    """Turn a failed medidiff run into the error to show.

    Args:
        returncode: the process's exit status (negative: killed by that signal, POSIX only).
        stderr_lines: everything it wrote to stderr, progress lines excluded.
        cancelled: whether the user cancelled it (then a kill is expected, not a failure to explain).

    Returns:
        A ProcessError whose message is the CLI's own one-line error when it printed one, and whose details
        are the tail of stderr.
    """
    details = stderr_tail(stderr_lines)
    user_errors = [line for line in stderr_lines if line.startswith(CLI_ERROR_PREFIX)]
    internal_errors = [line for line in stderr_lines if line.startswith(CLI_INTERNAL_ERROR_PREFIX)]
    if any("No module named medidiff" in line for line in stderr_lines):
        return ProcessError(message("medidiff_missing_install"), details)
    if user_errors:
        reason = user_errors[-1][len(CLI_ERROR_PREFIX) :].strip()
        # argparse's wording when the subcommand does not exist: the installed medidiff predates `restore`.
        if "invalid choice: 'restore'" in reason:
            return ProcessError(message("process_too_old"), details)
        return ProcessError(message("process_user_error", reason=reason), details)
    if internal_errors:
        reason = internal_errors[-1][len(CLI_INTERNAL_ERROR_PREFIX) :].strip()
        return ProcessError(message("process_internal_error", reason=reason), details)
    if returncode < 0 and not cancelled:
        return ProcessError(message("process_killed", signal=_signal_name(-returncode)), details)
    return ProcessError(message("process_failed", code=returncode), details)
