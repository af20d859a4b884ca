"""What is known of a restoration task without torch: its name, defaults, options and their cheap checks.

The CLI, the Python API and the Slicer module's command builder all read these, so a task's defaults and
its "needs --mask"-style checks are written once. Nothing here imports torch or MONAI (about 9 s of CPU per
process on a 2-core machine): the CLI refuses a bad option combination at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medidiff.errors import ConfigError
from medidiff.registry import Registry

# Spatial axes (0-based) mirrored by each test-time view, in the order views are added: the identity, the
# mirror through the centre (all axes; the view least like the identity), single axes, then pairs
# (inference/patches.py applies them).
FLIPS: tuple[tuple[int, ...], ...] = ((), (0, 1, 2), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))

NOISE_MODELS = ("gaussian", "rician")

# The unknown degradations ``--task restore`` fits. "thick-slices" was called "slices" until 0.2, which in
# ``degrade --kind`` and inpainting means *missing* slices; the old spelling is still accepted.
DEGRADATION_KINDS: Registry[str] = Registry("degradation")
DEGRADATION_KINDS.register("bias", "smooth multiplicative bias field")
DEGRADATION_KINDS.register("blur", "Gaussian blur of unknown width")
DEGRADATION_KINDS.register("thick-slices", "thick slices with an unknown slice profile")
DEGRADATION_KINDS.alias("slices", "thick-slices", "deprecated spelling of thick-slices")
DEGRADATIONS: tuple[str, ...] = DEGRADATION_KINDS.names()


@dataclass(frozen=True)
class TaskDefaults:
    """A task's default chain: ``samples`` chains of ``steps`` network evaluations each (at most ~50 in all),
    started at the noise ratio sigma/alpha ``start_ratio`` (None: the task's own rule), each evaluation
    averaged over ``views`` mirrored test-time views (costing ``views`` evaluations)."""

    steps: int
    samples: int
    start_ratio: float | None = None
    views: int = 1


@dataclass
class TaskOptions:
    """Everything a user can set for a restoration (CLI flags, ``restore()`` keywords, Slicer fields).

    Task-specific inputs (``mask``, ``degradation``, ``fwhm``, ...) are checked by the task's
    :class:`TaskSpec`; ``mask`` may be any array-like (it is read by the task, not here).
    """

    noise: str = "gaussian"
    sigma: str | float = "auto"
    mask: Any = None
    degradation: str | list[str] | None = None
    target_spacing: float | None = None
    fwhm: float | None = None
    steps: int | None = None
    samples: int | None = None
    views: int | None = None


@dataclass(frozen=True)
class Requirement:
    """A task input that must be given: the option's attribute and the one-line message when it is not."""

    option: str
    message: str


@dataclass(frozen=True)
class TaskSpec:
    """A task as the CLI and the module see it.

    Attributes:
        name: ``--task`` value.
        summary: one line for help texts.
        defaults: the default chain.
        implementation: ``"module:Class"`` of the :class:`medidiff.tasks.base.Task` subclass (imported
            only when the task runs).
        requires: inputs that must be given.
        accepts: task-specific options it reads (a front end shows only these for the task).
        writes_parameters: whether it fits degradation parameters (``--params-out``).
    """

    name: str
    summary: str
    defaults: TaskDefaults
    implementation: str
    requires: tuple[Requirement, ...] = ()
    accepts: tuple[str, ...] = field(default_factory=tuple)
    writes_parameters: bool = False

    def samples(self, samples: int | None) -> int:
        """``samples`` or the default number of chains; ConfigError below 1."""
        count = self.defaults.samples if samples is None else int(samples)
        if count < 1:
            raise ConfigError(f"--samples must be at least 1, got {count}")
        return count

    def views(self, views: int | None) -> int:
        """``views`` or the default; ConfigError outside 1 to ``len(FLIPS)``."""
        count = self.defaults.views if views is None else int(views)
        if not 1 <= count <= len(FLIPS):
            raise ConfigError(f"--views must be between 1 and {len(FLIPS)}, got {count}")
        return count

    def check(self, options: TaskOptions, uncertainty: bool = False, params_out: bool = False) -> None:
        """Refuse what cannot work, before any file is read: missing inputs, unknown values, ranges."""
        for need in self.requires:
            value = getattr(options, need.option)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ConfigError(need.message)
        if options.noise not in NOISE_MODELS:
            raise ConfigError(f"unknown noise model {options.noise!r} (expected {' or '.join(NOISE_MODELS)})")
        if "degradation" in self.accepts:
            parse_degradations(options.degradation)
        if "fwhm" in self.accepts and options.fwhm is not None and not float(options.fwhm) > 0:
            raise ConfigError(f"--fwhm must be a positive width in mm, got {options.fwhm}")
        samples = self.samples(options.samples)
        self.views(options.views)
        if options.steps is not None and int(options.steps) < 1:
            raise ConfigError(f"--steps must be at least 1, got {options.steps}")
        if uncertainty and samples < 2:
            raise ConfigError("--uncertainty needs --samples 2 or more (it is the std over the samples)")
        if params_out and not self.writes_parameters:
            fitting = ", ".join(f"--task {s.name}" for s in TASK_SPECS.get_all() if s.writes_parameters)
            raise ConfigError(f"--params-out is only for {fitting}")

    def load(self) -> type[Any]:
        """The task's implementation class (imports torch)."""
        import importlib

        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def parse_degradations(degradation: str | list[str] | None) -> list[str]:
    """``"bias,blur"`` or ``["bias", "blur"]`` -> the checked list of canonical degradation kinds.

    The old spelling ``slices`` becomes ``thick-slices``.
    """
    parts = degradation.split(",") if isinstance(degradation, str) else list(degradation or [])
    kinds = [k.strip() for k in parts if k.strip()]
    if not kinds or any(k not in DEGRADATION_KINDS for k in kinds):
        raise ConfigError(f"--degradation must list some of {', '.join(DEGRADATIONS)}, got {degradation!r}")
    return [DEGRADATION_KINDS.canonical(k) for k in kinds]


class _SpecRegistry(Registry[TaskSpec]):
    def get_all(self) -> list[TaskSpec]:
        return [spec for _, spec in self.items()]


TASK_SPECS = _SpecRegistry("task")
