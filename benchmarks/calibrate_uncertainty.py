"""Fit the uncertainty maps' per-task calibrations on development volumes.

``python -m benchmarks.calibrate_uncertainty [--write]``.

Runs the development cases of ``configs/bench/calibration_dev.yaml`` (development volumes only, never
benchmark volumes) with the model's default settings and without its stored calibration (a copy of the
model without ``uncertainty_scale``: the chains' raw spread). Per task, the spread is pooled and banded as
:data:`FORMS` says (:class:`medidiff.uncertainty.Calibration`), and each band gets the conformal scale of
:func:`medidiff.uncertainty.fit_bands` over the restored region of every case of the task (the missing
voxels for inpainting, the foreground otherwise): ±2 calibrated std covers 95.4% of the development voxels
of the band. Prints, per case, the raw map's coverage and correlation, the calibrated one's, and the
calibrated one's with the scales refitted without that case's volume (leave one volume out: how the fit
carries to a volume it has not seen). ``--write`` stores the calibrations in the model's JSON
(``uncertainty_scale``), the file that ships the model.

The benchmark (``make bench``, configs/bench/targets.yaml) then checks the calibrated maps on benchmark
volumes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "bench" / "calibration_dev.yaml"

# How each task's map is calibrated. Chosen on the development cases (stop 31, leave one volume out):
# inpainting's error grows with the distance to the known voxels while the chains' spread does not, so
# its scales are banded by that distance; averaging the variance over 2 voxels steadies 4 chains' std.
FORMS: dict[str, dict[str, Any]] = {
    "inpaint": {"pool": 2.0, "feature": "distance_to_known", "edges": (1.5, 2.5, 3.5, 5.5)},
}
# Any other task (thick slices, bias, blur): one scale on the raw spread. Thick slices: neither pooling nor
# banding by the position between slices helped (stop 30). Bias and blur (stop 32): their error is mostly
# the residual field or blur, shared by every chain, so the spread hardly ranks voxels (correlation -0.15
# to -0.04 on the bias development cases); one scale gives the coverage, not a ranking.
PLAIN: dict[str, Any] = {"pool": 0.0}


def uncalibrated_copy(model: str, folder: Path) -> str:
    """A copy of ``model`` (weights and JSON) in ``folder`` without stored calibrations; its path."""
    from medidiff.nets.checkpoint import _model_paths

    weights, config_path = _model_paths(model)
    target = folder / "uncalibrated.safetensors"
    shutil.copy(weights, target)
    config = json.loads(Path(config_path).read_text())
    config.pop("uncertainty_scale", None)
    target.with_suffix(".json").write_text(json.dumps(config))
    return str(target)


def strata_of(data: Any, task: str, options: dict[str, Any]) -> Any:
    """The task's calibration strata for a case, from the task itself (what restore() would use)."""
    from medidiff.benchmark.methods import medidiff_kwargs
    from medidiff.tasks import get_spec
    from medidiff.tasks.spec import TaskOptions

    kwargs = medidiff_kwargs(data, task, options)
    kwargs.pop("task")
    fields = TaskOptions.__dataclass_fields__
    job = get_spec(task).load()(TaskOptions(**{k: v for k, v in kwargs.items() if k in fields}))
    job.check(data.degraded)
    return job.calibration_strata()


def collect(
    model: str, config_path: Path = CONFIG, samples: int | None = None, only: str | None = None
) -> list[dict[str, Any]]:
    """Run every development case with the uncalibrated model; each record: case, volume, calibration key,
    and over the scored region the errors, the pooled spread and the banding feature of the key's form."""
    from medidiff.benchmark.cases import prepare_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.methods import run_medidiff
    from medidiff.errors import MedidiffError
    from medidiff.metrics import foreground_mask
    from medidiff.uncertainty import calibration_key, pool_spread

    config = load_config(config_path)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        raw_model = uncalibrated_copy(model, Path(folder))
        for case in config.cases():
            if only and only not in case.id:
                continue
            data = prepare_case(case)
            task = case.degradation.task
            options = dict(case.degradation.medidiff) | ({"samples": samples} if samples else {})
            try:
                result = run_medidiff(data, task, options, raw_model)
            except MedidiffError as exc:  # one case that cannot run must not lose the others
                print(f"skipped {case.id}: {exc}", file=sys.stderr, flush=True)
                continue
            if result.uncertainty is None:
                continue
            key = calibration_key(str(result.info["task"]), result.info.get("degradation"))
            form = FORMS.get(key, PLAIN)
            strata = strata_of(data, task, options)
            raw = np.asarray(result.uncertainty, np.float64)
            pooled = (
                pool_spread(raw, None if strata is None else strata.region, form["pool"])
                if form["pool"]
                else raw
            )
            reference = np.asarray(data.reference.data, np.float64)
            region = data.missing if case.degradation.region == "missing" else foreground_mask(reference)
            region = np.asarray(region, bool)
            feature = form.get("feature")
            records.append(
                {
                    "case": f"{case.volume.name} {case.degradation.name}",
                    "volume": case.volume.name,
                    "key": key,
                    "error": (np.asarray(result.output, np.float64) - reference)[region],
                    "raw": raw[region],
                    "spread": pooled[region],
                    "feature": None if feature is None else np.asarray(strata.features[feature])[region],
                    "evaluations": result.network_evaluations,
                }
            )
            print(f"ran {records[-1]['case']} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)
    return records


def fit(records: list[dict[str, Any]], key: str, exclude: str | None = None) -> Any:
    """The key's :class:`~medidiff.uncertainty.Calibration` fitted on its records (without volume
    ``exclude``)."""
    from medidiff.uncertainty import Calibration, fit_bands

    mine = [r for r in records if r["key"] == key and r["volume"] != exclude]
    form = FORMS.get(key, PLAIN)
    edges = tuple(form.get("edges", ()))
    feature = np.concatenate([r["feature"] for r in mine]) if edges else None
    scales = fit_bands(
        np.concatenate([r["error"] for r in mine]),
        np.concatenate([r["spread"] for r in mine]),
        feature,
        edges,
    )
    # Rounded up to 3 decimals: rounding down would cost the conformal quantile a little coverage.
    rounded = tuple(math.ceil(s * 1000) / 1000 for s in scales)
    return Calibration(rounded, edges, form.get("feature"), form["pool"])


def calibrated_spread(record: dict[str, Any], calibration: Any) -> np.ndarray:
    """The record's spread under ``calibration`` (its scales applied per band)."""
    return record["spread"] * calibration.scale_at({str(calibration.feature): record["feature"]})


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
    run with a copy of the model without calibrations: :func:`uncalibrated_copy`) with ``model``'s
    calibrations: raw and calibrated coverage and the correlation, per case, over the region the benchmark
    scores."""
    import nibabel as nib

    from medidiff.benchmark.cases import load_saved_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.worker import OUTPUT_NAME, UNCERTAINTY_NAME
    from medidiff.metrics import foreground_mask
    from medidiff.nets.checkpoint import read_model_config
    from medidiff.uncertainty import calibration_for, calibration_key

    config = read_model_config(model)
    cases = {c.id: c for c in load_config(ROOT / "configs" / "bench" / "targets.yaml").cases()}
    print("| benchmark case | raw ±1 / ±2 / ±3 std, corr | calibrated ±1 / ±2 / ±3 std, corr |")
    print("|---|---|---|")
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
        calibration = calibration_for(config, key)
        strata = strata_of(data, case.degradation.task, medidiff_options)
        calibrated_std = calibration.apply(std, strata) if calibration else std
        error = (output - reference)[region]
        raw, calibrated = _coverage(error, std[region], 1.0), _coverage(error, calibrated_std[region], 1.0)
        if montage_path is not None and case.id == montage_case and data.missing is not None:
            title = f"{case.volume.label}: inpainting, calibrated (cyan: missing voxels)"
            montage(montage_path, reference, output, calibrated_std, np.asarray(data.missing, bool), title)
        print(
            f"| {case.id} | {raw[0]:.1%} / {raw[1]:.1%} / {raw[2]:.1%}, {raw[3]:.2f} | "
            f"{calibrated[0]:.1%} / {calibrated[1]:.1%} / {calibrated[2]:.1%}, {calibrated[3]:.2f} |",
            flush=True,
        )


def _coverage(error: np.ndarray, std: np.ndarray, scale: float) -> tuple[float, float, float, float]:
    err = np.abs(error)
    cover = tuple(float(np.mean(err <= k * scale * std)) for k in (1, 2, 3))
    corr = float(np.corrcoef(std, err)[0, 1]) if std.std() > 0 else float("nan")
    return (*cover, corr)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    from medidiff.nets.checkpoint import _model_paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--config", type=Path, default=CONFIG, help="development cases (a benchmark YAML)")
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
    records = collect(args.model, args.config, samples=args.samples, only=args.only)
    calibrations = {key: fit(records, key) for key in sorted({r["key"] for r in records})}
    print(
        "| case | evaluations | raw ±1 / ±2 / ±3 std, corr | calibrated ±1 / ±2 / ±3 std, corr | "
        "fitted without this volume: ±2 std, corr |"
    )
    print("|---|---|---|---|---|")
    for r in records:
        raw = _coverage(r["error"], r["raw"], 1.0)
        calibrated = _coverage(r["error"], calibrated_spread(r, calibrations[r["key"]]), 1.0)
        others = [o for o in records if o["key"] == r["key"] and o["volume"] != r["volume"]]
        held = (
            _coverage(r["error"], calibrated_spread(r, fit(records, r["key"], r["volume"])), 1.0)
            if others
            else None
        )
        held_text = f"{held[1]:.1%}, {held[3]:.2f}" if held else "(no other volume)"
        print(
            f"| {r['case']} | {r['evaluations']} | "
            f"{raw[0]:.1%} / {raw[1]:.1%} / {raw[2]:.1%}, {raw[3]:.2f} | "
            f"{calibrated[0]:.1%} / {calibrated[1]:.1%} / {calibrated[2]:.1%}, {calibrated[3]:.2f} | "
            f"{held_text} |"
        )
    scales = {key: c.to_config() for key, c in calibrations.items()}
    print(json.dumps({"uncertainty_scale": scales}))
    if args.write:
        _, config_path = _model_paths(args.model)
        config = json.loads(Path(config_path).read_text())
        config["uncertainty_scale"] = {**config.get("uncertainty_scale", {}), **scales}  # the keys fitted now
        Path(config_path).write_text(json.dumps(config, indent=2) + "\n")
        print(f"wrote the calibrations into {config_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
