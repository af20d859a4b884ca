"""The development check of a prior, and learning curves: ``python -m benchmarks.dev_curve RUN [RUN ...]``.

Development volumes only (held out of training, never benchmark volumes; docs/model_card.md names them):
OpenNeuro ds002748 sub-31 (T1, skull-stripped, 0.87 x 0.87 x 1 mm), OpenfMRI ds011 sub-11 (whole-head T1,
1 x 1.33 x 1.33 mm, and its in-plane T2 with real 5 mm slices) and IXI014 (T1, 2 mm). Each is cropped
around its centre to at most 96 voxels per axis and given Gaussian noise at 5% and 10% of its 99.5th
percentile (fixed seeds); the model denoises it with the true sigma in one network evaluation and one view,
so what is measured is the prior itself. The score of a model is the mean PSNR over these 8 cases.

With run folders (``runs/default``), every snapshot (``snapshots/step_*.safetensors``, written by
``run.keep_every``) is scored once (results cached in ``RUN/dev_curve.json``) and the learning curves are
drawn into ``--plot``. ``--model M`` scores one model (e.g. ``default``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VOLUMES = {
    "ds002748-sub31-T1": DATA / "openneuro-ds002748-t1" / "sub-31_T1w.nii.gz",
    "ds011-sub11-T1": DATA / "openfmri-ds011" / "sub-11_T1w.nii.gz",
    "ds011-sub11-T2-5mm": DATA / "openfmri-ds011" / "sub-11_inplaneT2.nii.gz",
    "ixi014-T1-2mm": DATA / "ixi-2mm" / "IXI014-HH-1236_T1.nii.gz",
}
LEVELS = (0.05, 0.10)
CROP = 96


def _crop(data: np.ndarray) -> np.ndarray:
    starts = [max(0, (n - CROP) // 2) for n in data.shape]
    return data[tuple(slice(s, s + CROP) for s in starts)]


def cases() -> list[dict[str, Any]]:
    """The development cases: name, the Volume (cropped), clean voxels, noisy voxels, sigma."""
    from medidiff.io import read_volume
    from medidiff.io.volume import Volume

    out = []
    for seed, (name, path) in enumerate(VOLUMES.items()):
        volume = read_volume(path)
        clean = _crop(np.asarray(volume.data, dtype=np.float64))
        peak = float(np.percentile(clean, 99.5))
        for level in LEVELS:
            sigma = level * peak
            rng = np.random.default_rng([seed, int(level * 100)])
            noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
            vol = Volume(noisy, volume.affine, {}, name)
            out.append({"name": f"{name} {int(level * 100)}%", "volume": vol, "clean": clean, "sigma": sigma})
    return out


def score(model: Any, dev_cases: list[dict[str, Any]]) -> dict[str, float]:
    """PSNR (dB) of each case denoised by ``model`` (a spec or a loaded model), and their mean."""
    from medidiff.inference.pipeline import restore
    from medidiff.metrics import psnr

    result = {}
    for case in dev_cases:
        out = restore(
            case["volume"], model=model, sigma=case["sigma"], views=1, backend="torch", progress=False
        )
        result[case["name"]] = psnr(case["clean"], np.asarray(out.data, dtype=np.float64))
    result["mean"] = float(np.mean(list(result.values())))
    return result


def curve(run: Path, dev_cases: list[dict[str, Any]], every: int = 1000) -> dict[int, dict[str, float]]:
    """The score of every snapshot of a training run at a multiple of ``every`` steps (cached in
    ``run/dev_curve.json``)."""
    from medidiff.nets.checkpoint import load_model

    cache = run / "dev_curve.json"
    known: dict[str, dict[str, float]] = json.loads(cache.read_text()) if cache.is_file() else {}
    for snapshot in sorted((run / "snapshots").glob("step_*.safetensors")):
        step = str(int(snapshot.stem.removeprefix("step_")))
        if step not in known and int(step) % every == 0:
            known[step] = score(load_model(snapshot), dev_cases)
            print(f"{run.name} step {step}: mean {known[step]['mean']:.3f} dB", flush=True)
            cache.write_text(json.dumps(known, indent=1))
    return {int(k): v for k, v in known.items()}


def plot(curves: dict[str, dict[int, dict[str, float]]], baseline: float | None, path: Path) -> None:
    """Mean development PSNR against training steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for name, points in curves.items():
        steps = sorted(points)
        ax.plot(steps, [points[s]["mean"] for s in steps], marker="o", markersize=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="shipped model (start)")
    ax.set_xlabel("training steps on the new data")
    ax.set_ylabel("mean PSNR, development cases (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="training run folders with snapshots/")
    parser.add_argument("--model", help="score this one model instead (default, or a path)")
    parser.add_argument("--label", nargs="*", help="the runs' names in the figure (default: folder names)")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "learning_curves.png")
    parser.add_argument(
        "--baseline", default="default", help="the model the curves start from ('': the recorded score)"
    )
    parser.add_argument("--every", type=int, default=1000, help="score snapshots at multiples of N steps")
    parser.add_argument(
        "--recorded",
        type=Path,
        default=ROOT / "benchmarks" / "learning_curves.json",
        help="scores of earlier sessions' runs to draw as well",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    dev_cases = cases()
    if args.model:
        print(json.dumps(score(args.model, dev_cases), indent=1))
        return 0
    curves: dict[str, dict[int, dict[str, float]]] = {}
    recorded: dict[str, Any] = {}
    if args.recorded and args.recorded.is_file():  # runs of earlier sessions, kept as figures
        recorded = json.loads(args.recorded.read_text())
        for name, points in recorded["runs"].items():
            curves[name] = {int(step): {"mean": float(v)} for step, v in points.items()}
    labels = args.label or [run.name for run in args.runs]
    curves.update(
        {label: curve(run, dev_cases, args.every) for label, run in zip(labels, args.runs, strict=True)}
    )
    base = score(args.baseline, dev_cases)["mean"] if args.baseline else recorded.get("baseline")
    print(f"baseline {args.baseline}: mean {base:.3f} dB" if base is not None else "", file=sys.stderr)
    plot(curves, base, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
