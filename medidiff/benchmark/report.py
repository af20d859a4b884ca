"""Benchmark tables (CSV and Markdown) and target checks, written into the run's output folder.

The Markdown table has one row per case and method. PSNR is whole-volume; "PSNR region" is over the
case's region (foreground or missing voxels, named in the column cell); "PSNR fit" is over the foreground
after a global scale fit. The best value of each case is in bold. Peak RSS is the memory high-water mark of
the process that ran the method (see :mod:`medidiff.benchmark.worker`). :func:`read_csv` reads a run's
``results.csv`` back into rows, for tools that present results elsewhere (the repository's
``benchmarks/run_all.py`` writes them into its documentation).
"""

from __future__ import annotations

import csv
import io
import math
import platform
from pathlib import Path
from typing import Any

from medidiff.benchmark.config import BenchConfig

COLUMNS = (
    "case",
    "volume",
    "label",
    "contrast",
    "degradation",
    "task",
    "method",
    "psnr",
    "ssim",
    "psnr_region",
    "region",
    "psnr_fit",
    "coverage_1",
    "coverage_2",
    "coverage_3",
    "std_error_corr",
    "seconds",
    "network_evaluations",
    "peak_rss_mib",
    "memory_measure",
    "error",
)
_METRIC_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "psnr_region": "PSNR region", "psnr_fit": "PSNR fit"}
CALIBRATION_COLUMNS = ("coverage_1", "coverage_2", "coverage_3", "std_error_corr")
_FLOAT_COLUMNS = ("psnr", "ssim", "psnr_region", "psnr_fit", *CALIBRATION_COLUMNS, "seconds", "peak_rss_mib")


def _number(value: Any, digits: int) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{float(value):.{digits}f}"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """All rows as CSV (full precision), columns :data:`COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    return buffer.getvalue()


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv`` (:func:`csv_text`), numbers parsed and empty cells as None.

    Raises:
        InputError: the file cannot be read or is not a results table.
    """
    from medidiff.errors import InputError

    try:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
                raise InputError(f"{path} is not a benchmark results table (columns {', '.join(COLUMNS)})")
            rows: list[dict[str, Any]] = []
            for raw in reader:
                row: dict[str, Any] = dict(raw)
                for key in _FLOAT_COLUMNS:
                    row[key] = float(raw[key]) if raw[key] not in ("", None) else None
                row["network_evaluations"] = int(raw["network_evaluations"] or 0)
                rows.append(row)
    except OSError as exc:
        raise InputError(f"cannot read benchmark results {path}: {exc.strerror or exc}") from None
    return rows


def _best(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [
        r[key] for r in rows if r.get(key) is not None and r["method"] != "input" and not r.get("error")
    ]
    return max(values) if values else None


def markdown_table(rows: list[dict[str, Any]], montage_links: dict[str, str] | None = None) -> str:
    """The results as one Markdown table; ``montage_links`` maps case ids to image paths to link."""
    head = (
        "| case | method | PSNR (dB) | SSIM | PSNR region (dB) | PSNR fit (dB) | seconds | network evals "
        "| peak RSS (MiB) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    by_case: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row)
    for case_id, group in by_case.items():
        first = group[0]
        best = {k: _best(group, k) for k in _METRIC_NAMES}
        name = f"{first['label'] or first['volume']}: {first['degradation']}"
        if montage_links and case_id in montage_links:
            name += f" ([montage]({montage_links[case_id]}))"
        for i, row in enumerate(group):
            cells = [name if i == 0 else "", "degraded input" if row["method"] == "input" else row["method"]]
            if row.get("error"):
                cells += [f"failed: {row['error']}", "", "", "", "", "", ""]
            else:
                for key, digits in (("psnr", 2), ("ssim", 4), ("psnr_region", 2), ("psnr_fit", 2)):
                    text = _number(row.get(key), digits)
                    if key == "psnr_region" and text:
                        text += f" ({row['region']})"
                    if text and row["method"] != "input" and row.get(key) == best[key]:
                        text = f"**{text}**"
                    cells.append(text)
                method_cost = row["method"] != "input"
                cells += [
                    _number(row.get("seconds"), 1) if method_cost else "",
                    str(row.get("network_evaluations") or 0) if method_cost else "",
                    _number(row.get("peak_rss_mib"), 0) if method_cost else "",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def calibration_table(rows: list[dict[str, Any]]) -> str:
    """The uncertainty maps' calibration (methods that report a spread), or "" when none does."""
    scored = [r for r in rows if r.get("coverage_2") is not None and not r.get("error")]
    if not scored:
        return ""
    lines = [
        "| case | method | within ±1 std | within ±2 std | within ±3 std | corr(std, abs error) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in scored:
        cover = [f"{100 * r[f'coverage_{k}']:.1f}%" for k in (1, 2, 3)]
        corr = _number(r.get("std_error_corr"), 2)
        name = f"{r['label'] or r['volume']}: {r['degradation']}"
        lines.append(f"| {name} | {r['method']} | " + " | ".join(cover) + f" | {corr} |")
    note = (
        "Over the scored region (missing voxels, else the foreground); a calibrated Gaussian spread covers "
        "68.3% / 95.4% / 99.7%."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def check_targets(config: BenchConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate every configured target: medidiff's metric >= the baseline's + margin, per case."""
    checks = []
    index = {(r["case"], r["method"]): r for r in rows}
    for case in config.cases():
        for target in case.degradation.targets:
            ours, theirs = index.get((case.id, "medidiff")), index.get((case.id, target.baseline))
            if ours is None or theirs is None:
                continue
            a, b = ours.get(target.metric), theirs.get(target.metric)
            passed = a is not None and b is not None and a >= b + target.margin
            checks.append(
                {
                    "case": case.id,
                    "label": f"{case.volume.label or case.volume.name}: {case.degradation.name}",
                    "metric": target.metric,
                    "baseline": target.baseline,
                    "margin": target.margin,
                    "medidiff": a,
                    "baseline_value": b,
                    "passed": passed,
                }
            )
    return checks


def targets_table(checks: list[dict[str, Any]]) -> str:
    """The target checks as a Markdown table (empty string when there are none)."""
    if not checks:
        return ""
    lines = ["| case | target | medidiff | baseline | met |", "|---|---|---:|---:|---|"]
    for c in checks:
        digits = 4 if c["metric"] == "ssim" else 2
        margin = f" + {c['margin']:g}" if c["margin"] else ""
        target = f"{_METRIC_NAMES[c['metric']]} >= {c['baseline']}{margin}"
        met = "yes" if c["passed"] else "**no**"
        lines.append(
            f"| {c['label']} | {target} | {_number(c['medidiff'], digits)} | "
            f"{_number(c['baseline_value'], digits)} | {met} |"
        )
    return "\n".join(lines) + "\n"


def model_description(model: str) -> str:
    """``model`` with the number of training steps its JSON config records, when readable."""
    from medidiff.errors import MedidiffError
    from medidiff.nets.checkpoint import read_model_config

    try:
        training = read_model_config(model).get("training", {}) or {}
    except MedidiffError:
        return f"`{model}` (not found)"
    steps = training.get("steps")
    return f"`{model}`" + (f" ({steps} training steps)" if steps is not None else "")


def machine_line(model: str) -> str:
    """Where and with what the numbers were measured."""
    import os

    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name, where Linux tells it
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from medidiff.inference.backends import choose_backend, cpu_features

    # The vector unit decides the precision (and much of the speed): AVX2-only CPUs run the network in fp32.
    features = ", ".join(cpu_features()) or "features unknown"
    if choose_backend("auto", "cpu") == "openvino":
        from medidiff.inference.openvino_backend import native_precision

        runtime = f"OpenVINO {native_precision()}"
    else:
        from medidiff.nets.model import bf16_is_fast

        runtime = f"torch {'bf16 autocast' if bf16_is_fast('cpu') else 'fp32'}"
    machine = f"{os.cpu_count()} CPU cores ({cpu}; {features}; network in {runtime})"
    machine += f", Python {platform.python_version()}"
    return f"Model {model_description(model)}. {machine}."


def write_tables(config: BenchConfig, rows: list[dict[str, Any]], out: Path, model: str) -> None:
    """Write ``results.csv`` and ``results.md`` (table, targets, montage links) into ``out``."""
    from medidiff.fsutil import atomic_path

    links = {r["case"]: f"montages/{r['case']}.png" for r in rows}
    checks = check_targets(config, rows)
    text = f"# {config.title or config.name}\n\n{machine_line(model)}\n\n" + markdown_table(rows, links)
    calibrated = calibration_table(rows)
    if calibrated:
        text += "\n## Uncertainty calibration\n\n" + calibrated
    if checks:
        text += "\n## Targets\n\n" + targets_table(checks)
    with atomic_path(out / "results.csv") as tmp:
        tmp.write_text(csv_text(rows))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
