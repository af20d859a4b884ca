"""Reading training configs: YAML files, ``from:`` includes, ``key.sub=value`` overrides, data paths.

Data file entries may be plain paths, globs, or ``pkg:<package>/<path inside it>`` for data that ships
inside an installed PyPI package (for example the nilearn MNI152 template), so configs stay portable; they
are resolved by ``medidiff.datapaths``.
"""

from __future__ import annotations

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


def resolve_data_files(entries: list[str], config_dir: str | Path | None = None) -> list[str]:
    """The training config's ``data.files`` entries (paths, globs, ``pkg:`` references) as existing paths.

    A relative entry is looked up from the current directory first (the shipped configs name
    ``../shared/data`` from the repository root), then from ``config_dir``, the config file's folder, which
    is where ``from:`` includes are looked up too (a config kept next to its data works from anywhere).

    Raises:
        ConfigError: no entry, or one that names nothing (see ``medidiff.datapaths.resolve_data_paths``).
    """
    from medidiff.datapaths import resolve_data_paths

    return [str(path) for path in resolve_data_paths(entries, base=config_dir, what="training data")]
