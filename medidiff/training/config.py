"""Reading training configs: YAML files, ``from:`` includes, ``key.sub=value`` overrides, data paths.

Data file entries may be plain paths, globs, or ``pkg:<package>/<path inside it>`` for data that ships
inside an installed PyPI package (for example the nilearn MNI152 template), so configs stay portable.
"""

from __future__ import annotations

import glob
import importlib.util
from pathlib import Path
from typing import Any

from medidiff.errors import ConfigError


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    return data


def _resolve_include(ref: str, base: Path) -> Path:
    for candidate in (base / ref, Path(ref)):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"included config {ref!r} not found (relative to {base} or the working directory)")


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a YAML config; a section with a ``from: other.yaml`` key is merged over that file."""
    path = Path(path)
    raw = _load_yaml(path)
    for section, value in list(raw.items()):
        if isinstance(value, dict) and "from" in value:
            base = _load_yaml(_resolve_include(str(value.pop("from")), path.parent))
            raw[section] = {**base, **value}
    for item in overrides or []:
        apply_override(raw, item)
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict, in place."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def resolve_data_files(entries: list[str]) -> list[str]:
    """Expand ``pkg:`` references and globs into existing file or directory paths."""
    files: list[str] = []
    for entry in entries:
        if entry.startswith("pkg:"):
            package, _, inner = entry[4:].partition("/")
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(f"data entry {entry!r}: package {package!r} is not installed")
            entry = str(Path(next(iter(spec.submodule_search_locations))) / inner)
        matches = sorted(glob.glob(entry)) if any(c in entry for c in "*?[") else [entry]
        for match in matches:
            if not Path(match).exists():
                raise ConfigError(f"training data {match!r} not found")
            files.append(match)
    if not files:
        raise ConfigError("the training config lists no data files")
    return files
