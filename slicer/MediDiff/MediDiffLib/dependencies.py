"""Whether medidiff is available to the Slicer module, which medidiff it must be, and how to install it.

medidiff is never installed by name from a package index. It comes from the extension itself:

- **Payload** (an extension built by CMake, or by ``tools/build_slicer_payload.py``): the module's
  ``Resources/MediDiffPayload`` folder holds the medidiff wheel built from the same source as the module and a
  manifest (``medidiff-payload.json``: version, wheel file, sha256, the Python and torch it needs, the task
  catalog). The wheel is installed as ``medidiff @ file:///...whl#sha256=...``: pip checks the hash and
  records it in the installed package's ``direct_url.json``, which is how a stale install (another build
  of the same version number, or another version) is recognised and offered an update.
- **Source checkout** (the module loaded from a git clone through "Additional module paths"): the checkout is
  installed in editable mode (``pip install -e``), so after ``git pull`` the module and the CLI are the same
  code; a reinstall is only offered when the checkout's version number changed.

PyTorch is installed through the PyTorch extension (``PyTorchUtils``) with the version requirement of
medidiff's wheel, as SlicerMONAIAuto3DSeg does; without that extension pip pulls torch as a dependency.

The functions here take every fact about Slicer as an argument (what can be imported, which installer API
exists), so they are unit-tested with plain pytest; the module executes the plan's steps.
This file must import on Python 3.9 (Slicer <= 5.8) so it can tell those users which Slicer they need.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from MediDiffLib.catalog import Catalog
from MediDiffLib.errors import message

REQUESTER = "MediDiff"  # the name Slicer's installer shows as the one asking for the packages
MEDIDIFF_DISTRIBUTION = "medidiff"
PAYLOAD_DIR = ("Resources", "MediDiffPayload")  # relative to the module's folder
MANIFEST_NAME = "medidiff-payload.json"
# The first Slicer release whose Python (3.12) runs medidiff; Slicer 5.4 to 5.8 embed Python 3.9.
MIN_SLICER = "5.10"
# Used when there is no manifest (a source checkout): medidiff's pyproject says requires-python >= 3.10.
DEFAULT_REQUIRES_PYTHON = ">=3.10"
# Where Slicer's own high-level installer lives, newest first (feature detection, not version numbers).
PIP_ENSURE_MODULES = ("slicer.pydeps", "slicer.packaging", "slicer.util")

FindSpec = Callable[[str], Any]


# -- versions ----------------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...]:
    """The numeric release of a version: ``"2.13.0+cpu"`` -> ``(2, 13, 0)``."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(text))
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a PEP 440-style ``specifier`` such as ``">=2.2"`` or ``">=3.10,<4"``.

    Only release numbers are compared (enough for torch and Python requirements; ``2.13.0+cpu`` is 2.13.0).
    An empty specifier accepts every version.
    """
    current = parse_version(version)
    for clause in (c.strip() for c in specifier.split(",")):
        if not clause:
            continue
        match = re.match(r"(~=|===|==|!=|<=|>=|<|>)\s*(.+)$", clause)
        if match is None:
            raise ValueError(f"not a version specifier: {clause!r}")
        op, wanted_text = match.group(1), match.group(2).strip()
        if op in ("==", "!=", "===") and wanted_text.endswith(".*"):
            prefix = parse_version(wanted_text[:-2])
            same = current[: len(prefix)] == prefix
            if same != (op != "!="):
                return False
            continue
        wanted = parse_version(wanted_text)
        order = _cmp(current, wanted)
        ok = {
            "==": order == 0,
            "===": order == 0,
            "!=": order != 0,
            "<=": order <= 0,
            ">=": order >= 0,
            "<": order < 0,
            ">": order > 0,
            "~=": order >= 0 and current[: max(len(wanted) - 1, 1)] == wanted[: max(len(wanted) - 1, 1)],
        }[op]
        if not ok:
            return False
    return True


def python_gate(python_version: Sequence[int], requires_python: str = DEFAULT_REQUIRES_PYTHON) -> str | None:
    """The one message to show when this Slicer's Python cannot run medidiff, else ``None``.

    Args:
        python_version: ``sys.version_info`` of Slicer's Python.
        requires_python: medidiff's ``Requires-Python`` (from the payload manifest).
    """
    version = ".".join(str(int(v)) for v in tuple(python_version)[:3])
    if version_satisfies(version, requires_python):
        return None
    needed = requires_python.replace(">=", "").split(",")[0].strip()
    return message("python_too_old", slicer=MIN_SLICER, python_needed=f"{needed} or newer", python=version)


# -- what the extension carries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """The medidiff wheel shipped inside the extension, and what its manifest says about it."""

    folder: Path
    version: str
    wheel: str  # file name in ``folder``
    sha256: str
    requires_python: str = DEFAULT_REQUIRES_PYTHON
    torch_requirement: str = ""  # e.g. ">=2.2"; empty: any torch
    source_revision: str = ""
    catalog: Optional[Catalog] = None  # noqa: UP045 (evaluated by dataclasses on Python 3.9)

    @property
    def wheel_path(self) -> Path:
        return self.folder / self.wheel

    def requirement(self) -> str:
        """The pip requirement that installs exactly this wheel (pip verifies the hash)."""
        return f"{MEDIDIFF_DISTRIBUTION} @ {self.wheel_path.resolve().as_uri()}#sha256={self.sha256}"


def load_payload(module_dir: str | Path) -> Payload | None:
    """Read the payload manifest next to the module; ``None`` when the module carries no payload.

    Raises:
        ValueError: the manifest exists but is broken, or names a wheel that is not there.
    """
    folder = Path(module_dir).joinpath(*PAYLOAD_DIR)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    payload = Payload(
        folder=folder,
        version=str(data["version"]),
        wheel=str(data["wheel"]),
        sha256=str(data["sha256"]).lower(),
        requires_python=str(data.get("requires_python") or DEFAULT_REQUIRES_PYTHON),
        torch_requirement=str(data.get("torch_requirement") or ""),
        source_revision=str(data.get("source_revision") or ""),
        catalog=Catalog.from_json(data["catalog"]) if data.get("catalog") else None,
    )
    if not payload.wheel_path.is_file():
        raise ValueError(f"{manifest} names {payload.wheel}, which is missing")
    return payload


def find_source_checkout(start: str | Path) -> Path | None:
    """Return the medidiff source tree that contains ``start``, if the module runs from one."""
    start_path = Path(start).resolve()
    for folder in (start_path, *start_path.parents):
        pyproject = folder / "pyproject.toml"
        if not (pyproject.is_file() and (folder / "medidiff" / "__init__.py").is_file()):
            continue
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if re.search(r'^\s*name\s*=\s*["\']medidiff["\']', text, flags=re.MULTILINE):
            return folder
    return None


def checkout_version(checkout: str | Path) -> str:
    """The ``version`` of a checkout's pyproject.toml (``""`` if it has none)."""
    text = (Path(checkout) / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    match = re.search(r'^\s*version\s*=\s*["\']([^"\']+)["\']', text, flags=re.MULTILINE)
    return match.group(1) if match else ""


@dataclass(frozen=True)
class Source:
    """Where the module installs medidiff from: its payload, or the source checkout it runs from."""

    payload: Optional[Payload] = None  # noqa: UP045
    checkout: Optional[Path] = None  # noqa: UP045

    @property
    def version(self) -> str:
        if self.payload is not None:
            return self.payload.version
        return checkout_version(self.checkout) if self.checkout is not None else ""

    @property
    def requires_python(self) -> str:
        return self.payload.requires_python if self.payload is not None else DEFAULT_REQUIRES_PYTHON

    @property
    def torch_requirement(self) -> str:
        return self.payload.torch_requirement if self.payload is not None else ""

    def describe(self) -> str:
        if self.payload is not None:
            return (
                f"medidiff {self.payload.version} ({self.payload.wheel}, sha256 {self.payload.sha256[:12]})"
            )
        if self.checkout is not None:
            return f"medidiff {self.version} (editable, {self.checkout})"
        return "medidiff"


def find_source(module_dir: str | Path) -> Source | None:
    """The payload when the module carries one, else the checkout it runs from, else ``None``."""
    payload = load_payload(module_dir)
    if payload is not None:
        return Source(payload=payload)
    checkout = find_source_checkout(module_dir)
    return Source(checkout=checkout) if checkout is not None else None


# -- what is installed -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """The medidiff distribution installed in Slicer's Python."""

    version: str
    url: str = ""  # where pip installed it from (PEP 610 direct_url.json), "" for an index install
    sha256: str = ""  # the archive's hash when pip recorded one
    editable: bool = False


def _distributions(name: str) -> list[Any]:
    return list(importlib.metadata.distributions(name=name))


def installed_medidiff(distributions: Callable[[str], Sequence[Any]] = _distributions) -> Installed | None:
    """Read the installed medidiff's version and origin, or ``None`` when it is not installed.

    A source tree on ``sys.path`` can hold build metadata (``medidiff.egg-info``) that is not an installation;
    a distribution that an installer recorded (an ``INSTALLER`` file) is preferred.
    """
    found = list(distributions(MEDIDIFF_DISTRIBUTION))
    if not found:
        return None
    installed = [d for d in found if (d.read_text("INSTALLER") or "").strip()]
    dist = (installed or found)[0]
    direct: dict[str, Any] = {}
    text = dist.read_text("direct_url.json")
    if text:
        try:
            direct = json.loads(text)
        except ValueError:
            direct = {}
    archive = direct.get("archive_info") or {}
    sha = (archive.get("hashes") or {}).get("sha256", "")
    if not sha and str(archive.get("hash", "")).startswith("sha256="):
        sha = archive["hash"].split("=", 1)[1]
    return Installed(
        version=str(dist.version),
        url=str(direct.get("url", "")),
        sha256=str(sha).lower(),
        editable=bool((direct.get("dir_info") or {}).get("editable", False)),
    )


def file_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def stale_reason(installed: Installed, source: Source) -> str | None:
    """Why the installed medidiff is not the one ``source`` provides, or ``None`` when it is."""
    if source.payload is not None:
        payload = source.payload
        if installed.version != payload.version:
            return f"version {installed.version} instead of {payload.version}"
        if installed.sha256 != payload.sha256:
            return "another build of the same version" if installed.sha256 else "installed from elsewhere"
        return None
    if source.checkout is not None:
        if not (installed.editable and installed.url.rstrip("/") == file_uri(source.checkout).rstrip("/")):
            return f"not an editable install of {source.checkout}"
        expected = checkout_version(source.checkout)
        if expected and installed.version != expected:
            return f"version {installed.version} instead of {expected}"
    return None


def module_available(name: str, find_spec: FindSpec = importlib.util.find_spec) -> bool:
    """Whether ``import name`` would find the module, without importing it (torch takes seconds to import)."""
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_version(name: str, version: Callable[[str], str] = importlib.metadata.version) -> str | None:
    try:
        return str(version(name))
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class DependencyStatus:
    """What Slicer's Python has, compared with what the module needs."""

    medidiff: Installed | None
    stale: str | None  # why the installed medidiff is not the module's (None: it is, or nothing to compare)
    torch: str | None  # installed torch version
    torch_ok: bool  # torch installed and meeting the requirement
    pytorch_utils: bool
    missing_extras: tuple[str, ...] = ()  # requirements of Resources/requirements.txt not installed

    @property
    def ready(self) -> bool:
        """Whether a restoration can run with the module's own medidiff."""
        return self.medidiff is not None and self.stale is None and self.torch_ok

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the missing Python packages, for messages."""
        names = []
        if self.medidiff is None:
            names.append("medidiff")
        if self.torch is None:
            names.append("torch")
        return tuple(names)


def read_requirements(path: str | Path) -> list[str]:
    """The requirement lines of a ``requirements.txt`` (no comments, blank lines or pip options)."""
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


def detect(
    source: Source | None,
    extras: Sequence[str] = (),
    find_spec: FindSpec = importlib.util.find_spec,
    distributions: Callable[[str], Sequence[Any]] = _distributions,
    version: Callable[[str], str] = importlib.metadata.version,
) -> DependencyStatus:
    """Check what is installed (without importing torch or medidiff)."""
    installed = installed_medidiff(distributions)
    stale = stale_reason(installed, source) if installed is not None and source is not None else None
    torch = installed_version("torch", version) if module_available("torch", find_spec) else None
    requirement = source.torch_requirement if source is not None else ""
    return DependencyStatus(
        medidiff=installed,
        stale=stale,
        torch=torch,
        torch_ok=torch is not None and version_satisfies(torch, requirement),
        pytorch_utils=module_available("PyTorchUtils", find_spec),
        missing_extras=tuple(r for r in extras if installed_version(requirement_name(r), version) is None),
    )


# -- where things run --------------------------------------------------------------------------------------


def python_executable(
    which: Callable[[str], str | None] = shutil.which, fallback: str = sys.executable
) -> str:
    """The Python interpreter that runs medidiff: ``PythonSlicer`` inside Slicer, else ``fallback``.

    Inside Slicer ``sys.executable`` can be the Slicer application itself, which must not be started as a
    worker; ``PythonSlicer`` is Slicer's Python with its environment, the one ``pip_install`` installs into.
    """
    return which("PythonSlicer") or fallback


def medidiff_command(python: str) -> list[str]:
    """How to start the medidiff CLI with that interpreter (``-m``: scripts are not always on PATH)."""
    return [python, "-m", "medidiff"]


# -- installation plans ------------------------------------------------------------------------------------


class StepKind(Enum):
    """One action of an installation plan, executed in order by the module."""

    CONFIRM = "confirm"  # ask the user (OK/Cancel); stop on Cancel
    TORCH = "torch"  # PyTorchUtilsLogic().installTorch(askConfirmation=ask, torchVersionRequirement=...)
    PIP_ENSURE = "pip_ensure"  # Slicer's pip_ensure([Requirement(r) for r in requirements], requester=...)
    PIP_INSTALL = "pip_install"  # slicer.util.pip_install(list(arguments))


@dataclass(frozen=True)
class InstallStep:
    """One step of an installation plan.

    Attributes:
        kind: what to do.
        text: the question to ask (``CONFIRM``).
        arguments: pip requirement strings (``PIP_ENSURE``) or pip install arguments (``PIP_INSTALL``).
        ask: whether the installer itself asks the user first (``TORCH``).
        requirement: torch's version requirement (``TORCH``), e.g. ``">=2.2"``.
    """

    kind: StepKind
    text: str = ""
    arguments: tuple[str, ...] = ()
    ask: bool = False
    requirement: str = ""


def confirmation_message(items: Sequence[str]) -> str:
    """The question shown before installing, listing what will be installed."""
    lines = [message("install_question"), ""]
    lines += [f"  - {item}" for item in items]
    lines += [
        "",
        "The download can take several minutes (PyTorch alone is large). "
        "Slicer may ask to restart afterwards.",
        "",
        "Install them now?",
    ]
    return "\n".join(lines)


def medidiff_install_arguments(source: Source) -> tuple[str, ...]:
    """pip arguments that install medidiff from ``source`` (with its dependencies)."""
    if source.payload is not None:
        return (source.payload.requirement(),)
    assert source.checkout is not None
    return ("-e", str(Path(source.checkout).resolve()))


def plan_installation(
    status: DependencyStatus,
    source: Source,
    has_pip_ensure: bool,
    interactive: bool = True,
) -> list[InstallStep]:
    """Return the steps that make the module's medidiff and PyTorch available (empty when ready).

    Args:
        status: what :func:`detect` found.
        source: where medidiff comes from (the payload or the checkout).
        has_pip_ensure: whether this Slicer has a ``pip_ensure`` (it asks, installs with a progress dialog and
            offers a restart; declining raises, which the module reads as "no").
        interactive: ``False`` for scripted runs and self-tests: nothing asks (running them is consent).

    Returns:
        The steps, in order. When ``interactive``, nothing is installed before a question: an explicit
        ``CONFIRM`` first, or an installer that asks by itself (``pip_ensure``, ``PyTorchUtils`` with ask).
    """
    if status.ready:
        return []
    steps: list[InstallStep] = []
    torch_requirement = source.torch_requirement
    torch_step = not status.torch_ok and status.pytorch_utils
    extras = status.missing_extras
    medidiff_args = medidiff_install_arguments(source)
    if status.medidiff is None:
        if interactive and has_pip_ensure and source.payload is not None:
            # pip_ensure installs what is missing; it cannot take -e (checkout) arguments.
            if torch_step:
                steps.append(InstallStep(StepKind.TORCH, ask=True, requirement=torch_requirement))
            steps.append(InstallStep(StepKind.PIP_ENSURE, arguments=medidiff_args + extras))
            return steps
        if interactive:
            items = []
            if torch_step:
                items.append(
                    f"PyTorch{torch_requirement}, through the PyTorch extension (the build for your GPU)"
                )
            items.append(source.describe() + ", from this extension, with its dependencies")
            items += list(extras)
            steps.append(InstallStep(StepKind.CONFIRM, text=confirmation_message(items)))
        if torch_step:
            steps.append(InstallStep(StepKind.TORCH, ask=False, requirement=torch_requirement))
        steps.append(InstallStep(StepKind.PIP_INSTALL, arguments=medidiff_args + extras))
        return steps
    if status.stale is not None:
        if interactive:
            text = message(
                "update_question",
                installed=status.medidiff.version,
                expected=source.describe(),
                reason=status.stale,
            )
            steps.append(InstallStep(StepKind.CONFIRM, text=text))
        if torch_step:
            steps.append(InstallStep(StepKind.TORCH, ask=False, requirement=torch_requirement))
        if source.payload is not None:
            # Same version number: pip would keep the installed files without --force-reinstall; --no-deps
            # keeps it from reinstalling torch & co., and the second call adds any new dependency.
            steps.append(
                InstallStep(
                    StepKind.PIP_INSTALL, arguments=("--force-reinstall", "--no-deps", *medidiff_args)
                )
            )
        steps.append(InstallStep(StepKind.PIP_INSTALL, arguments=medidiff_args + extras))
        return steps
    # medidiff is current; only torch is missing or too old.
    if torch_step:
        steps.append(InstallStep(StepKind.TORCH, ask=interactive, requirement=torch_requirement))
    else:
        requirement = f"torch{torch_requirement}"
        if interactive:
            steps.append(InstallStep(StepKind.CONFIRM, text=confirmation_message([requirement])))
        steps.append(InstallStep(StepKind.PIP_INSTALL, arguments=(requirement,)))
    return steps


def is_declined(error: BaseException) -> bool:
    """Whether an installer exception means "the user said no" rather than a failure.

    Slicer's ``pip_ensure`` raises ``RuntimeError("User declined package installation")`` (slicer.pydeps,
    Slicer >= 5.11); the earlier ``slicer.packaging`` raised ``InstallationAbortedError``.
    """
    if type(error).__name__ == "InstallationAbortedError":
        return True
    return isinstance(error, RuntimeError) and "declined" in str(error).lower()
