"""One registry mechanism for everything chosen by name: tasks, samplers, SDEs, schedules, operators, noise
models and conditioning rules.

A :class:`Registry` maps a name (what a user writes in a config, on the command line or in a JSON
record) to an entry, a class or a spec. ``build(name, **settings)`` constructs a registered class and turns
unknown names and unknown settings into one clear :class:`~medidiff.errors.ConfigError` listing what is
allowed. Torch-free, so the CLI can check names before the heavy imports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from medidiff.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names it in error messages: "sampler", "task", ...).

    Names are registered once; ``aliases`` map an old spelling to a current name (with a note on use).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, tuple[str, str]] = {}

    def register(self, name: str, entry: T | None = None) -> Any:
        """Register ``entry`` under ``name``; without an entry, a class decorator that registers its class."""
        if entry is None:

            def decorate(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorate
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")  # a programming error
        self._entries[name] = entry
        return entry

    def alias(self, old: str, new: str, note: str = "") -> None:
        """Accept ``old`` as another spelling of ``new`` (``note``: why, e.g. a deprecation)."""
        if new not in self._entries:
            raise ValueError(f"alias {old!r} -> unknown {self.kind} {new!r}")
        self._aliases[old] = (new, note)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; ConfigError for anything else."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name][0]
        raise ConfigError(f"unknown {self.kind} {name!r} (expected one of {', '.join(self._entries)})")

    def aliases(self) -> dict[str, str]:
        """Every accepted old spelling and the registered name it stands for."""
        return {old: new for old, (new, _) in self._aliases.items()}

    def alias_note(self, name: str) -> str | None:
        """The note of an alias (None for a registered name)."""
        return self._aliases[name][1] if name in self._aliases else None

    def get(self, name: str) -> T:
        """The entry called ``name`` (or one of its aliases)."""
        return self._entries[self.canonical(name)]

    def build(self, name: str, *args: Any, **settings: Any) -> Any:
        """Construct the class registered as ``name`` with ``args`` and ``settings``.

        Settings the constructor does not take are refused by name (unless it takes ``**kwargs``).
        """
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        parameters = inspect.signature(factory).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            positional = list(parameters)[: len(args)]
            allowed = set(parameters) - {"self", *positional}
            unknown = sorted(set(settings) - allowed)
            if unknown:
                raise ConfigError(
                    f"{self.kind} {name!r} has no setting {', '.join(unknown)} "
                    f"(it takes {', '.join(sorted(allowed)) or 'none'})"
                )
        return factory(*args, **settings)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (aliases excluded)."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
