"""Benchmark configuration: which clean volumes, which degradations, which methods, what to check.

A benchmark YAML (the repository's ``configs/bench/*.yaml`` are examples) looks like::

    name: quick                      # the default output folder is out/bench/<name>
    title: Quick benchmark on the bundled sample
    model: default                   # medidiff model (overridden by --model)
    isolation: subprocess            # each method in a fresh process (peak RSS = its VmHWM) | inprocess
    threads: 2                       # threads of each method (torch, OpenMP)
    device: cpu                      # medidiff's device (auto, cpu, cuda)
    volumes:                         # clean references; never volumes the model was trained on
      - name: sample
        path: ../../data_samples/mni152_t1_2mm.nii.gz  # a path, a glob, or pkg:<package>/<path inside it>
        label: MNI152 T1 2 mm (training-distribution sample)
        contrast: T1
        index: 0                     # volume of a 4D file (optional)
        downsample: 1                # block-average factor (optional)
        crop: [64, 64, 64]           # size, centred on the foreground (optional)
    degradations:
      - name: gaussian-5
        task: denoise                # denoise | inpaint | restore
        steps: [{kind: gaussian, sigma: 5%}]        # medidiff.degrade kinds and options, applied in order
        seed: 1
        methods: [medidiff, bm4d, nlm, tv]
        medidiff: {noise: gaussian, sigma: auto}     # medidiff.restore options ("true" = the true sigma)
        region: foreground           # masked PSNR over: foreground | missing | none
        scale_fit: false             # also PSNR after a global scale fit (bias fields)
        volumes: [sample]            # optional: restrict to some volumes
        targets: [{metric: psnr, baseline: bm4d, margin: 0.0}]

A relative volume path is looked up from the current directory, then from the config file's folder, so a
config that names its volumes relative to itself works from anywhere. Keys this module does not know are
ignored (the repository's ``make_bench: true`` marks the configs its ``benchmarks/run_all.py`` runs).

Every (volume, degradation) pair is a *case*. Percent sigmas (``5%``) are resolved against the *clean*
volume's 99.5th percentile, so a noise step after a bias step still means 5% of the true signal. A
``slices`` step may give ``count: N`` (exactly N missing slices) instead of ``fraction``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medidiff.errors import ConfigError
from medidiff.tasks import TASKS

METHODS = ("medidiff", "bm4d", "nlm", "tv", "biharmonic", "n4", "cubic")
REGIONS = ("foreground", "missing", "none")
METRICS = ("psnr", "ssim", "psnr_region", "psnr_fit")
ISOLATIONS = ("subprocess", "inprocess")


@dataclass
class VolumeSpec:
    """One clean reference volume (after glob expansion) and how to cut it down."""

    name: str
    path: str
    label: str = ""
    contrast: str = ""
    index: int | None = None
    downsample: int = 1
    crop: list[int] | None = None


@dataclass
class Target:
    """``metric`` of medidiff must be >= the ``baseline``'s plus ``margin`` (dB for PSNRs)."""

    metric: str
    baseline: str
    margin: float = 0.0


@dataclass
class DegradationSpec:
    """A degradation (a list of medidiff.degrade steps), the task that undoes it, and who competes."""

    name: str
    task: str
    steps: list[dict[str, Any]]
    methods: list[str]
    seed: int = 0
    medidiff: dict[str, Any] = field(default_factory=dict)
    region: str = "foreground"
    scale_fit: bool = False
    volumes: list[str] | None = None
    targets: list[Target] = field(default_factory=list)
    label: str = ""


@dataclass
class Case:
    """One (volume, degradation) pair; ``id`` names its folder in the output directory."""

    volume: VolumeSpec
    degradation: DegradationSpec

    @property
    def id(self) -> str:
        return f"{self.volume.name}__{self.degradation.name}"

    def digest(self, model: str) -> str:
        """A hash of everything that determines this case's results (for resuming): not its labels or
        targets, which only change the report (a stricter margin must not rerun an hour of baselines)."""
        volume, degradation = asdict(self.volume), asdict(self.degradation)
        for fields in (volume, degradation):
            fields.pop("label")
        degradation.pop("targets")
        payload = {"volume": volume, "degradation": degradation, "model": model}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class BenchConfig:
    """A whole benchmark: its volumes, degradations and run settings."""

    name: str
    volumes: list[VolumeSpec]
    degradations: list[DegradationSpec]
    title: str = ""
    description: str = ""
    model: str = "default"
    isolation: str = "subprocess"
    threads: int = 2
    device: str = "cpu"
    source: str = ""

    def cases(self) -> list[Case]:
        """All (volume, degradation) pairs, in config order (degradation-major)."""
        out = []
        for deg in self.degradations:
            for vol in self.volumes:
                if deg.volumes is None or vol.name in deg.volumes:
                    out.append(Case(vol, deg))
        return out


def resolve_paths(entry: str, base: Path) -> list[Path]:
    """Expand a volume entry (a path, a glob or a ``pkg:<package>/<path>`` reference) into existing paths;
    relative paths are tried from the current directory, then from ``base`` (the config file's folder).

    Raises:
        ConfigError: the entry names nothing (see ``medidiff.datapaths.resolve_data_paths``).
    """
    from medidiff.datapaths import resolve_data_paths

    return resolve_data_paths(entry, base, what="benchmark volume")


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{where}: missing {key!r}")
    return raw[key]


def _volumes(raw: list[Any], base: Path) -> list[VolumeSpec]:
    out: list[VolumeSpec] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"volumes[{i}] must be a mapping with at least 'path'")
        where = f"volumes[{i}]"
        paths = resolve_paths(str(_require(item, "path", where)), base)
        name = str(item.get("name") or paths[0].name.split(".")[0])
        crop = item.get("crop")
        if crop is not None and (len(crop) != 3 or min(int(c) for c in crop) < 8):
            raise ConfigError(f"{where}: crop must be three sizes of at least 8 voxels, got {crop}")
        downsample = int(item.get("downsample", 1))
        if downsample < 1:
            raise ConfigError(f"{where}: downsample must be a whole number >= 1, got {downsample}")
        for path in paths:
            out.append(
                VolumeSpec(
                    name=name if len(paths) == 1 else f"{name}-{path.name.split('.')[0]}",
                    path=str(path.resolve()),
                    label=str(item.get("label", "")),
                    contrast=str(item.get("contrast", "")),
                    index=None if item.get("index") is None else int(item["index"]),
                    downsample=downsample,
                    crop=None if crop is None else [int(c) for c in crop],
                )
            )
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"volume names must be unique, got {names}")
    return out


def _degradation(item: Any, i: int) -> DegradationSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"degradations[{i}] must be a mapping")
    where = f"degradations[{i}]"
    task = str(_require(item, "task", where))
    if task not in TASKS:
        raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")
    steps = _require(item, "steps", where)
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, dict) and "kind" in s for s in steps)
    ):
        raise ConfigError(f"{where}: steps must be a non-empty list of {{kind: ..., options}} mappings")
    methods = [str(m) for m in _require(item, "methods", where)]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"{where}: unknown methods {unknown}; expected some of {', '.join(METHODS)}")
    region = str(item.get("region", "foreground"))
    if region not in REGIONS:
        raise ConfigError(f"{where}: region must be one of {', '.join(REGIONS)}, got {region!r}")
    targets = []
    for t in item.get("targets", []) or []:
        target = Target(str(t.get("metric")), str(t.get("baseline")), float(t.get("margin", 0.0)))
        if target.metric not in METRICS or target.baseline not in methods:
            raise ConfigError(
                f"{where}: target {t} needs metric in {', '.join(METRICS)} and a baseline among its methods"
            )
        targets.append(target)
    return DegradationSpec(
        name=str(_require(item, "name", where)),
        task=task,
        steps=[dict(s) for s in steps],
        methods=methods,
        seed=int(item.get("seed", 0)),
        medidiff=dict(item.get("medidiff", {}) or {}),
        region=region,
        scale_fit=bool(item.get("scale_fit", False)),
        volumes=None if item.get("volumes") is None else [str(v) for v in item["volumes"]],
        targets=targets,
        label=str(item.get("label", "")),
    )


def load_config(path: str | Path) -> BenchConfig:
    """Read and validate a benchmark YAML.

    Raises:
        ConfigError: unreadable YAML, missing or invalid fields, volumes that do not exist.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read benchmark config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a benchmark config must be a mapping")
    base = path.resolve().parent  # relative volume paths: from the current directory, then from here
    isolation = str(raw.get("isolation", "subprocess"))
    if isolation not in ISOLATIONS:
        raise ConfigError(f"{path}: isolation must be subprocess or inprocess, got {isolation!r}")
    degradations = [_degradation(item, i) for i, item in enumerate(_require(raw, "degradations", str(path)))]
    names = [d.name for d in degradations]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: degradation names must be unique, got {names}")
    config = BenchConfig(
        name=str(raw.get("name") or path.stem),
        volumes=_volumes(_require(raw, "volumes", str(path)), base),
        degradations=degradations,
        title=str(raw.get("title", "")),
        description=str(raw.get("description", "")),
        model=str(raw.get("model", "default")),
        isolation=isolation,
        threads=int(raw.get("threads", 2)),
        device=str(raw.get("device", "cpu")),
        source=str(path),
    )
    if not config.cases():
        raise ConfigError(f"{path}: no case to run (check the degradations' volume lists)")
    return config
