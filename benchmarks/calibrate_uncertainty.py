"""Fit the uncertainty maps' per-task scales on development volumes.

``python -m benchmarks.calibrate_uncertainty [--write]``.

Runs the development cases of ``configs/bench/calibration_dev.yaml`` (development volumes only, never
benchmark volumes) with the model's default settings, pools ``|error| / std`` over the restored region of
every case of a task (the missing voxels for inpainting, the foreground otherwise) and fits the conformal
scale of :func:`medidiff.uncertainty.fit_scale` (±2 scaled std covers 95.4% of the development voxels).
Prints, per case, the raw map's coverage and correlation, and the coverage with the fitted scale.
``--write`` stores the scales in the model's JSON (``uncertainty_scale``), the file that ships the model.

The benchmark (``make bench``, configs/bench/targets.yaml) then checks the scaled maps on benchmark volumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "bench" / "calibration_dev.yaml"


def collect(model: str, config_path: Path = CONFIG) -> list[dict[str, Any]]:
    """Run every development case; each record: case, calibration key, errors and raw stds in the region."""
    from medidiff.benchmark.cases import prepare_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.methods import run_medidiff
    from medidiff.metrics import foreground_mask
    from medidiff.uncertainty import calibration_key

    config = load_config(config_path)
    records = []
    for case in config.cases():
        data = prepare_case(case)
        result = run_medidiff(data, case.degradation.task, dict(case.degradation.medidiff), model)
        info = result.info
        if result.uncertainty is None:
            continue
        used = float(info.get("uncertainty", {}).get("scale", 1.0))
        reference = np.asarray(data.reference.data, np.float64)
        region = data.missing if case.degradation.region == "missing" else foreground_mask(reference)
        region = np.asarray(region, bool)
        records.append(
            {
                "case": f"{case.volume.name} {case.degradation.name}",
                "key": calibration_key(str(info["task"]), info.get("degradation")),
                "error": (np.asarray(result.output, np.float64) - reference)[region],
                "std": np.asarray(result.uncertainty, np.float64)[region] / used,  # the chains' own spread
                "evaluations": result.network_evaluations,
            }
        )
        print(f"ran {records[-1]['case']} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)
    return records


def _coverage(error: np.ndarray, std: np.ndarray, scale: float) -> tuple[float, float, float, float]:
    err = np.abs(error)
    cover = tuple(float(np.mean(err <= k * scale * std)) for k in (1, 2, 3))
    corr = float(np.corrcoef(std, err)[0, 1]) if std.std() > 0 else float("nan")
    return (*cover, corr)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    from medidiff.nets.checkpoint import _model_paths
    from medidiff.uncertainty import fit_scale

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--write", action="store_true", help="store the scales in the model's JSON")
    args = parser.parse_args(argv)
    records = collect(args.model)
    scales = {}
    for key in sorted({r["key"] for r in records}):
        mine = [r for r in records if r["key"] == key]
        scales[key] = round(
            fit_scale(np.concatenate([r["error"] for r in mine]), np.concatenate([r["std"] for r in mine])), 3
        )
    print(
        "| case | evaluations | raw ±1 / ±2 / ±3 std | corr(std, abs error) | scale | scaled ±1 / ±2 / ±3 |"
    )
    print("|---|---|---|---|---|---|")
    for r in records:
        raw = _coverage(r["error"], r["std"], 1.0)
        scaled = _coverage(r["error"], r["std"], scales[r["key"]])
        print(
            f"| {r['case']} | {r['evaluations']} | {raw[0]:.1%} / {raw[1]:.1%} / {raw[2]:.1%} | "
            f"{raw[3]:.2f} | {scales[r['key']]:.2f} | {scaled[0]:.1%} / {scaled[1]:.1%} / {scaled[2]:.1%} |"
        )
    print(json.dumps({"uncertainty_scale": scales}))
    if args.write:
        _, config_path = _model_paths(args.model)
        config = json.loads(Path(config_path).read_text())
        config["uncertainty_scale"] = scales
        Path(config_path).write_text(json.dumps(config, indent=2) + "\n")
        print(f"wrote the scales into {config_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
