"""The restoration tasks as the module sees them, read from medidiff's own registry (``medidiff.tasks``).

The module keeps no copy of medidiff's task names, defaults or value lists. Once medidiff is installed in
Slicer's Python, :func:`load_installed` reads its torch-free registry (importing it takes milliseconds).
Before that, the module shows the catalog that the extension's build wrote into the payload manifest from
the same registry (``tools/build_slicer_payload.py``), so the panel is complete before anything is
installed.

Nothing here imports medidiff at import time: the module must be able to explain that medidiff is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from MediDiffLib.errors import ParameterError, message

# The task options the panel has a widget for (medidiff.tasks.TaskOptions names). A task that requires an
# option outside this set cannot be run from the panel and is not offered; tests/slicer checks that every
# task of the registry is covered, so a new option shows up as a failing test, not a missing field.
PANEL_OPTIONS = ("noise", "sigma", "mask", "degradation", "target_spacing", "fwhm")


@dataclass(frozen=True)
class TaskInfo:
    """One task of the registry: what the panel shows and what the command builder checks."""

    name: str
    summary: str
    samples: int  # default number of chains (posterior samples)
    steps: int  # default network evaluations per chain
    accepts: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    writes_parameters: bool = False

    def takes(self, option: str) -> bool:
        """Whether the task reads ``option`` (required or optional)."""
        return option in self.accepts or option in self.requires


@dataclass(frozen=True)
class Catalog:
    """Tasks, noise models and degradation kinds of one medidiff version."""

    version: str
    tasks: tuple[TaskInfo, ...]
    noise_models: tuple[str, ...]
    degradations: tuple[str, ...]
    degradation_aliases: Mapping[str, str] = field(default_factory=dict)  # old spelling -> name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def task(self, name: str) -> TaskInfo:
        """The task called ``name``; ParameterError (one line for a dialog) for an unknown name."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise ParameterError(message("unknown_choice", what="task", value=name, choices=_or(self.names)))

    def panel_tasks(self) -> tuple[TaskInfo, ...]:
        """The tasks the panel can run: those whose required options all have a widget."""
        return tuple(t for t in self.tasks if all(option in PANEL_OPTIONS for option in t.requires))

    def tasks_taking(self, option: str) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks if task.takes(option))

    def canonical_degradation(self, kind: str) -> str:
        """The registry's name for ``kind`` (old spellings such as ``slices`` are mapped)."""
        text = str(kind).strip().lower()
        text = self.degradation_aliases.get(text, text)
        if text not in self.degradations:
            choices = ", ".join(self.degradations)
            raise ParameterError(message("unknown_degradation", kind=kind, choices=choices))
        return text

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the payload manifest by the extension's build)."""
        return {
            "version": self.version,
            "tasks": [
                {
                    "name": t.name,
                    "summary": t.summary,
                    "samples": t.samples,
                    "steps": t.steps,
                    "accepts": list(t.accepts),
                    "requires": list(t.requires),
                    "writes_parameters": t.writes_parameters,
                }
                for t in self.tasks
            ],
            "noise_models": list(self.noise_models),
            "degradations": list(self.degradations),
            "degradation_aliases": dict(self.degradation_aliases),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        tasks = tuple(
            TaskInfo(
                name=str(t["name"]),
                summary=str(t.get("summary", "")),
                samples=int(t["samples"]),
                steps=int(t["steps"]),
                accepts=tuple(t.get("accepts", ())),
                requires=tuple(t.get("requires", ())),
                writes_parameters=bool(t.get("writes_parameters", False)),
            )
            for t in data["tasks"]
        )
        return cls(
            version=str(data.get("version", "")),
            tasks=tasks,
            noise_models=tuple(data["noise_models"]),
            degradations=tuple(data["degradations"]),
            degradation_aliases=dict(data.get("degradation_aliases", {})),
        )


def _or(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def from_registry(tasks_module: Any, version: str) -> Catalog:
    """Build the catalog from an imported ``medidiff.tasks`` module."""
    infos = []
    for name in tasks_module.TASKS:
        spec = tasks_module.get_spec(name)
        infos.append(
            TaskInfo(
                name=spec.name,
                summary=spec.summary,
                samples=int(spec.defaults.samples),
                steps=int(spec.defaults.steps),
                accepts=tuple(spec.accepts),
                requires=tuple(need.option for need in spec.requires),
                writes_parameters=bool(spec.writes_parameters),
            )
        )
    kinds = getattr(tasks_module, "DEGRADATION_KINDS", None)
    aliases = dict(kinds.aliases()) if kinds is not None else {}  # old spelling -> registered name
    return Catalog(
        version=version,
        tasks=tuple(infos),
        noise_models=tuple(tasks_module.NOISE_MODELS),
        degradations=tuple(tasks_module.DEGRADATIONS),
        degradation_aliases=aliases,
    )


def load_installed() -> Catalog | None:
    """The catalog of the medidiff installed in this Python, or ``None`` when it is not importable."""
    try:
        tasks_module = importlib.import_module("medidiff.tasks")
        version = str(getattr(importlib.import_module("medidiff"), "__version__", ""))
    except Exception:  # not installed, or an old medidiff without the registry
        return None
    return from_registry(tasks_module, version)
