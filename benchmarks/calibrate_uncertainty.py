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


def collect(
    model: str, config_path: Path = CONFIG, samples: int | None = None, only: str | None = None
) -> list[dict[str, Any]]:
    """Run every development case; each record: case, calibration key, errors and raw stds in the region."""
    from medidiff.benchmark.cases import prepare_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.methods import run_medidiff
    from medidiff.errors import MedidiffError
    from medidiff.metrics import foreground_mask
    from medidiff.uncertainty import calibration_key

    config = load_config(config_path)
    records = []
    for case in config.cases():
        if only and only not in case.id:
            continue
        data = prepare_case(case)
        options = dict(case.degradation.medidiff) | ({"samples": samples} if samples else {})
        try:
            result = run_medidiff(data, case.degradation.task, options, model)
        except MedidiffError as exc:  # one case that cannot run must not lose the others
            print(f"skipped {case.id}: {exc}", file=sys.stderr, flush=True)
            continue
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


def montage(
    path: Path, reference: np.ndarray, output: np.ndarray, std: np.ndarray, missing: np.ndarray, title: str
) -> None:
    """Restored, |error| and 2 x calibrated std through the slice with most missing voxels, the last two on
    one colour scale (so where |error| exceeds the map, the map was too sure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = 0  # across the missing slices (array axis 2), through the largest hole
    index = int(np.argmax(missing.sum(axis=(1, 2))))
    take = lambda v: np.rot90(np.take(v, index, axis=axis))  # noqa: E731
    error, band = np.abs(output - reference), 2 * std
    top = float(np.percentile(error[missing], 99)) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), dpi=110)
    low, high = np.percentile(reference, [0.5, 99.5])
    panels = [("restored", take(output), "gray", (low, high)), ("|error|", take(error), "inferno", (0, top))]
    panels.append(("2 x calibrated std", take(band), "inferno", (0, top)))
    for ax, (name, image, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.contour(take(missing.astype(float)), levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1:], fraction=0.025)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def check(
    folder: Path, model: str, montage_case: str | None = None, montage_path: Path | None = None
) -> None:
    """Score the saved medidiff outputs and raw uncertainty maps of a benchmark run (``folder``: its --out,
    run with a copy of the model without scales) with ``model``'s scales: raw and calibrated coverage and the
    correlation, per case, over the region the benchmark scores."""
    import nibabel as nib

    from medidiff.benchmark.cases import load_saved_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.worker import OUTPUT_NAME, UNCERTAINTY_NAME
    from medidiff.metrics import foreground_mask
    from medidiff.nets.checkpoint import read_model_config
    from medidiff.uncertainty import calibration_key, scale_for

    config = read_model_config(model)
    cases = {c.id: c for c in load_config(ROOT / "configs" / "bench" / "targets.yaml").cases()}
    print(
        "| benchmark case | raw ±1 / ±2 / ±3 std | corr(std, abs error) | scale | calibrated ±1 / ±2 / ±3 |"
    )
    print("|---|---|---|---|---|")
    for case_dir in sorted((folder / "cases").iterdir()):
        std_path = case_dir / UNCERTAINTY_NAME.format(method="medidiff")
        if case_dir.name not in cases or not std_path.exists():
            continue
        case = cases[case_dir.name]
        data = load_saved_case(case_dir)
        reference = np.asarray(data.reference.data, np.float64)
        output = np.asarray(
            nib.load(str(case_dir / OUTPUT_NAME.format(method="medidiff"))).dataobj, np.float64
        )
        std = np.asarray(nib.load(str(std_path)).dataobj, np.float64)
        region = data.missing if case.degradation.region == "missing" else foreground_mask(reference)
        region = np.asarray(region, bool)
        medidiff_options = dict(case.degradation.medidiff)
        key = calibration_key(case.degradation.task, medidiff_options.get("degradation"))
        scale = scale_for(config, key) or 1.0
        error, spread = (output - reference)[region], std[region]
        raw, calibrated = _coverage(error, spread, 1.0), _coverage(error, spread, scale)
        if montage_path is not None and case.id == montage_case and data.missing is not None:
            title = f"{case.volume.label}: inpainting, calibrated scale {scale:.2f} (cyan: missing voxels)"
            montage(montage_path, reference, output, scale * std, np.asarray(data.missing, bool), title)
        print(
            f"| {case.id} | {raw[0]:.1%} / {raw[1]:.1%} / {raw[2]:.1%} | {raw[3]:.2f} | {scale:.2f} | "
            f"{calibrated[0]:.1%} / {calibrated[1]:.1%} / {calibrated[2]:.1%} |",
            flush=True,
        )


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
    parser.add_argument("--samples", type=int, help="chains per case (default: the task's)")
    parser.add_argument("--only", help="only cases whose id contains this")
    parser.add_argument("--check", type=Path, help="score a benchmark run's saved outputs with the scales")
    parser.add_argument("--montage", type=Path, help="with --check: draw restored, |error|, 2 std here")
    parser.add_argument("--montage-case", default="ixi015__inpaint", help="the case --montage draws")
    args = parser.parse_args(argv)
    if args.check:
        check(args.check, args.model, args.montage_case, args.montage)
        return 0
    if args.write and args.samples:
        parser.error("--write fits the task's default settings")
    records = collect(args.model, samples=args.samples, only=args.only)
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
        config["uncertainty_scale"] = {**config.get("uncertainty_scale", {}), **scales}  # the keys fitted now
        Path(config_path).write_text(json.dumps(config, indent=2) + "\n")
        print(f"wrote the scales into {config_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
