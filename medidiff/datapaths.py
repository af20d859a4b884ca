"""Data file entries of configs (training data, benchmark volumes) resolved to existing paths.

An entry is a plain path, a glob (``data/*.nii.gz``), or ``pkg:<package>/<path inside it>`` for data that
ships inside an installed PyPI package (for example the nilearn MNI152 template), so configs stay portable
across machines and installs.
"""

from __future__ import annotations

import glob
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from medidiff.errors import ConfigError


def _expand_package(entry: str, what: str) -> str:
    """``pkg:<package>/<inner>`` -> the file's path inside the installed package (other entries as given)."""
    if not entry.startswith("pkg:"):
        return entry
    package, _, inner = entry[4:].partition("/")
    # find_spec rather than importing: the package's data is wanted, not its (possibly heavy) code.
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{what} {entry!r}: package {package!r} is not installed (pip install {package})")
    return str(Path(next(iter(spec.submodule_search_locations))) / inner)


def _matches(candidate: str) -> list[Path]:
    """The existing paths a candidate names: its sorted glob matches, or itself when it exists."""
    if any(c in candidate for c in "*?["):
        return [Path(m) for m in sorted(glob.glob(candidate))]
    return [Path(candidate)] if Path(candidate).exists() else []


def resolve_data_paths(
    entries_or_entry: str | Sequence[str], base: str | Path | None = None, what: str = "data"
) -> list[Path]:
    """Expand ``pkg:`` references and globs into existing file or directory paths, in entry order.

    A relative entry is looked up from the current directory first, then from ``base`` (for example the
    repository root, so configs work from anywhere); the first place where it names something wins.

    Args:
        entries_or_entry: one entry or a list of them.
        base: a second folder for relative entries; None: the current directory only.
        what: what the entries are, for error messages ("training data", "benchmark volume").

    Returns:
        The paths (a glob's matches sorted), at least one per entry.

    Raises:
        ConfigError: no entry at all, a ``pkg:`` package that is not installed, or an entry (or glob) that
            names nothing, e.g. ``benchmark volume 'x.nii.gz' not found``.
    """
    entries = [entries_or_entry] if isinstance(entries_or_entry, str) else list(entries_or_entry)
    if not entries:
        raise ConfigError(f"no {what} listed")
    paths: list[Path] = []
    for entry in entries:
        expanded = _expand_package(str(entry), what)
        candidates = [expanded]
        if base is not None and not Path(expanded).is_absolute():
            candidates.append(str(Path(base) / expanded))
        found = next((m for m in map(_matches, candidates) if m), None)
        if found is None and len(candidates) > 1:
            raise ConfigError(f"{what} {entry!r} not found (looked in the current directory and {base})")
        if found is None:
            raise ConfigError(f"{what} {entry!r} not found")
        paths.extend(found)
    return paths
