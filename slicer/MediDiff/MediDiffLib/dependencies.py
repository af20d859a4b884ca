"""Whether medidiff is available to the Slicer module, and how to install it: pure, testable decisions.

The module never installs anything at import time or without asking: it calls :func:`detect` when the user
clicks Apply and, when something is missing, executes the steps of :func:`plan_installation`:

- Slicer >= 5.11 has ``slicer.packaging.pip_ensure``, which checks, asks the user, installs with a progress
  dialog and offers a restart; the module uses it.
- Older Slicer has ``slicer.util.pip_install`` only, which does not ask: the module shows its own confirmation
  first.
- PyTorch goes through the PyTorch extension (``PyTorchUtils``) when it is installed, because it picks the
  wheel that matches the GPU and CUDA driver; otherwise pip pulls the default torch wheel as a medidiff
  dependency.

Everything that touches Slicer is done by the caller; the functions here take the Slicer version and the
import-availability facts as arguments so they can be unit-tested without Slicer.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

PIP_ENSURE_SINCE = (5, 11)
REQUESTER = "MediDiff"  # the name slicer.packaging shows as the one asking for the packages
MEDIDIFF_DISTRIBUTION = "medidiff"

FindSpec = Callable[[str], Any]


class InstallMethod(Enum):
    """The Slicer API used to install Python packages."""

    PIP_ENSURE = "slicer.packaging.pip_ensure"
    PIP_INSTALL = "slicer.util.pip_install"


class StepKind(Enum):
    """One action of an installation plan, executed in order by the module."""

    CONFIRM = "confirm"  # ask the user (OK/Cancel); stop on Cancel
    TORCH = "torch"  # PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=step.ask)
    PIP_ENSURE = "pip_ensure"  # slicer.packaging.pip_ensure(step.requirements, requester=REQUESTER)
    PIP_INSTALL = "pip_install"  # slicer.util.pip_install(list(step.requirements))


@dataclass(frozen=True)
class InstallStep:
    """One step of an installation plan.

    Attributes:
        kind: what to do.
        text: the question to ask (``CONFIRM`` only).
        requirements: pip requirement strings (``PIP_ENSURE`` and ``PIP_INSTALL``).
        ask: whether the installer itself asks the user first (``TORCH`` only).
    """

    kind: StepKind
    text: str = ""
    requirements: tuple[str, ...] = ()
    ask: bool = False


@dataclass(frozen=True)
class DependencyStatus:
    """Which of the module's dependencies Slicer's Python can import."""

    medidiff: bool
    torch: bool
    pytorch_utils: bool

    @property
    def ready(self) -> bool:
        """Whether a restoration can run."""
        return self.medidiff and self.torch

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the missing Python packages, for messages."""
        return tuple(name for name, ok in (("medidiff", self.medidiff), ("torch", self.torch)) if not ok)


def parse_slicer_version(version: str | Sequence[int]) -> tuple[int, int, int]:
    """Return ``(major, minor, patch)`` from ``"5.10.0"``, ``"5.11.0-2026-05-01"`` or ``(5, 11)``.

    Raises:
        ValueError: the text has no ``major.minor`` version.
    """
    if isinstance(version, str):
        match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
        if match is None:
            raise ValueError(f"not a Slicer version: {version!r}")
        return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    numbers = [int(v) for v in version][:3]
    if len(numbers) < 2:
        raise ValueError(f"not a Slicer version: {version!r}")
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


def install_method(slicer_version: str | Sequence[int]) -> InstallMethod:
    """The installation API to use on this Slicer version."""
    major, minor, _ = parse_slicer_version(slicer_version)
    return InstallMethod.PIP_ENSURE if (major, minor) >= PIP_ENSURE_SINCE else InstallMethod.PIP_INSTALL


def module_available(name: str, find_spec: FindSpec = importlib.util.find_spec) -> bool:
    """Whether ``import name`` would find the module, without importing it (torch takes seconds to import)."""
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect(find_spec: FindSpec = importlib.util.find_spec) -> DependencyStatus:
    """Check which dependencies Slicer's Python can import."""
    return DependencyStatus(
        medidiff=module_available("medidiff", find_spec),
        torch=module_available("torch", find_spec),
        pytorch_utils=module_available("PyTorchUtils", find_spec),
    )


def python_executable(
    which: Callable[[str], str | None] = shutil.which, fallback: str = sys.executable
) -> str:
    """The Python interpreter that runs medidiff: ``PythonSlicer`` inside Slicer, else ``fallback``.

    Inside Slicer ``sys.executable`` can be the Slicer application itself, which must not be started as a
    worker; ``PythonSlicer`` is Slicer's Python with its environment, the one ``pip_install`` installs into.
    """
    return which("PythonSlicer") or fallback


def medidiff_command(python: str) -> list[str]:
    """How to start the medidiff CLI with that interpreter.

    ``python -m medidiff`` rather than the ``medidiff`` console script: the script's folder is not on PATH
    inside Slicer on every platform, and ``-m`` guarantees the interpreter that has medidiff installed.
    """
    return [python, "-m", "medidiff"]


def read_requirements(path: str | Path) -> list[str]:
    """Return the requirement lines of a ``requirements.txt`` (no comments, blank lines or pip options)."""
    requirements = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            requirements.append(line)
    return requirements


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement (``"MediDiff[x]>=0.1"`` -> ``"medidiff"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def find_source_checkout(start: str | Path) -> Path | None:
    """Return the medidiff source tree that contains ``start``, if the module runs from one.

    When the module is loaded straight from a git checkout ("Add additional module paths"), installing that
    checkout keeps the Slicer module and the CLI at the same version; PyPI's medidiff could be older.
    """
    start_path = Path(start).resolve()
    for folder in (start_path, *start_path.parents):
        pyproject = folder / "pyproject.toml"
        if not (pyproject.is_file() and (folder / "medidiff" / "__init__.py").is_file()):
            continue
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if re.search(r'^\s*name\s*=\s*["\']medidiff["\']', text, flags=re.MULTILINE):
            return folder
    return None


def resolve_requirements(requirements: Sequence[str], source_checkout: Path | None = None) -> tuple[str, ...]:
    """Return the requirements to install, with medidiff taken from ``source_checkout`` when given."""
    resolved = list(requirements)
    if source_checkout is not None:
        local = f"{MEDIDIFF_DISTRIBUTION} @ {Path(source_checkout).resolve().as_uri()}"
        resolved = [r for r in resolved if requirement_name(r) != MEDIDIFF_DISTRIBUTION]
        resolved.insert(0, local)
    return tuple(resolved)


def confirmation_message(requirements: Sequence[str], torch_via_extension: bool) -> str:
    """The question shown before installing on Slicer versions whose installer does not ask by itself."""
    lines = ["MediDiff needs Python packages that are not installed in Slicer yet:", ""]
    if torch_via_extension:
        lines.append("  - PyTorch, through the PyTorch extension (it picks the build for your GPU)")
    lines += [f"  - {requirement}" for requirement in requirements]
    lines += [
        "",
        "The download can take several minutes (PyTorch alone is large). "
        "Slicer may ask to restart afterwards.",
        "",
        "Install them now?",
    ]
    return "\n".join(lines)


def plan_installation(
    slicer_version: str | Sequence[int],
    status: DependencyStatus,
    requirements: Sequence[str],
    source_checkout: Path | None = None,
    interactive: bool = True,
) -> list[InstallStep]:
    """Return the steps that make the dependencies available (empty when nothing is missing).

    Args:
        slicer_version: the running Slicer's version.
        status: what :func:`detect` found.
        requirements: the module's ``Resources/requirements.txt`` lines.
        source_checkout: a medidiff source tree to install instead of the PyPI package.
        interactive: ``False`` for scripted runs and self-tests, where nobody can answer a dialog: the plan
            then uses the non-prompting ``pip_install`` and asks nothing (running the self-test is consent).

    Returns:
        The steps, in order. Every plan installs only after a question to the user when ``interactive``:
        either an explicit ``CONFIRM`` step first, or an installer that asks by itself (``pip_ensure``, and
        ``PyTorchUtils`` with ``ask=True``).
    """
    if status.ready:
        return []
    resolved = resolve_requirements(requirements, source_checkout)
    method = install_method(slicer_version) if interactive else InstallMethod.PIP_INSTALL
    torch_via_extension = not status.torch and status.pytorch_utils
    steps: list[InstallStep] = []
    if interactive and method is InstallMethod.PIP_INSTALL:
        steps.append(InstallStep(StepKind.CONFIRM, text=confirmation_message(resolved, torch_via_extension)))
    if torch_via_extension:
        # With pip_ensure nobody has asked yet, so PyTorchUtils asks for its own part.
        steps.append(InstallStep(StepKind.TORCH, ask=interactive and method is InstallMethod.PIP_ENSURE))
    kind = StepKind.PIP_ENSURE if method is InstallMethod.PIP_ENSURE else StepKind.PIP_INSTALL
    steps.append(InstallStep(kind, requirements=resolved))
    return steps
