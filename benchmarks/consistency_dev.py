"""How the noise estimate without air and the consistency check were chosen (development volumes).

``python -m benchmarks.consistency_dev`` prints the table in docs/benchmarks.md.

Development volumes only (those of :mod:`benchmarks.dev_curve`: ds002748 sub-31, ds011 sub-11 T1 and T2,
IXI014; never benchmark volumes). Each is cropped around its centre to 96 voxels per axis, a field of view
inside the head with little or no air, and IXI014 is also used whole (real scanner air). Gaussian and
Rician noise at 5% and 10% of the 99.5th percentile. For each case:

* ``sigma auto`` as medidiff resolves it (and from which source), the old air-only Rayleigh fit, and the
  air's fine-scale noise ratio (:func:`medidiff.restoration.noise.air_noise_ratio`);
* the default denoising with ``sigma auto``: PSNR gain over the input and the check's two statistics;
* two wrong assumptions: a sigma 2.5x too high, and (where it reads more than 1.5x the truth) the old
  air-only estimate, the failure that erased tissue in issue 24. Each with its PSNR gain over the input:
  the check must flag every result that is worse than the input.

Prints a Markdown table (docs/benchmarks.md, "Noise level without air" and "Consistency check").
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np
import torch

from benchmarks.dev_curve import CROP, ROOT, VOLUMES


def _cases(only: str | None) -> list[dict[str, Any]]:
    from medidiff.io import read_volume
    from medidiff.io.volume import Volume
    from medidiff.restoration.noise import Gaussian, Rician

    out = []
    fields = [(name, path, "crop") for name, path in VOLUMES.items()]
    fields.append(("ixi014-T1-2mm", VOLUMES["ixi014-T1-2mm"], "whole"))
    for seed, (name, path, field) in enumerate(fields):
        if only and only not in name:
            continue
        volume = read_volume(path)
        clean = np.asarray(volume.data, dtype=np.float64)
        if field == "crop":
            starts = [max(0, (n - CROP) // 2) for n in clean.shape]
            clean = clean[tuple(slice(s, s + CROP) for s in starts)]
        peak = float(np.percentile(clean, 99.5))
        for noise in ("gaussian", "rician"):
            for level in (0.05, 0.10):
                sigma = level * peak
                model = Rician(sigma) if noise == "rician" else Gaussian(sigma)
                generator = torch.Generator().manual_seed(1000 * seed + int(level * 100))
                noisy = model.sample(torch.from_numpy(clean), generator).numpy().astype(np.float32)
                label = f"{name} {field} {noise} {int(level * 100)}%"
                vol = Volume(noisy, volume.affine, {}, label)
                out.append({"name": label, "volume": vol, "clean": clean, "sigma": sigma, "noise": noise})
    return out


def _run(case: dict[str, Any], sigma: float | str) -> dict[str, Any]:
    from medidiff.inference.pipeline import restore
    from medidiff.metrics import psnr

    result = restore(case["volume"], noise=case["noise"], sigma=sigma, progress=False, full_result=True)
    clean, noisy = case["clean"], np.asarray(case["volume"].data, dtype=np.float64)
    check = result.info.get("consistency") or {}
    return {
        "sigma": float(result.info["sigma"]),
        "gain": psnr(clean, np.asarray(result.volume.data, dtype=np.float64)) - psnr(clean, noisy),
        "ratio": check.get("noise_ratio"),
        "structure": check.get("structure"),
        "ok": check.get("ok", True),
    }


def benchmark_cases() -> None:
    """The check on every denoising case of configs/bench/targets.yaml (benchmark volumes, sigma auto): it
    must stay quiet where the result is better than the input. Not used to choose anything."""
    from medidiff.benchmark.cases import prepare_case
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.methods import run_medidiff
    from medidiff.metrics import psnr

    config = load_config(ROOT / "configs" / "bench" / "targets.yaml")
    print("| benchmark case | gain dB | ratio | structure | flagged |")
    print("|---|---|---|---|---|")
    for case in config.cases():
        if case.degradation.task != "denoise":
            continue
        data = prepare_case(case)
        result = run_medidiff(data, "denoise", dict(case.degradation.medidiff), "default")
        clean = np.asarray(data.reference.data, np.float64)
        gain = psnr(clean, result.output) - psnr(clean, np.asarray(data.degraded.data, np.float64))
        check = result.info.get("consistency") or {}
        print(
            f"| {case.id} | {gain:.2f} | {_fmt(check.get('noise_ratio'))} | {_fmt(check.get('structure'))} | "
            f"{'yes' if not check.get('ok', True) else 'no'} |",
            flush=True,
        )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    from medidiff.errors import InputError
    from medidiff.restoration.noise import air_noise_ratio, estimate_sigma_rician, resolve_noise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="only volumes whose name contains this")
    parser.add_argument("--benchmark", action="store_true", help="check the benchmark's denoising cases")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark_cases()
        return 0
    print(
        "| case | auto / true (source) | air fit / true | air ratio | gain dB | ratio | structure | "
        "2.5x sigma: gain / ratio / structure / flagged | air fit: gain / ratio / structure / flagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in _cases(args.only):
        data, true = case["volume"].data, case["sigma"]
        estimate = resolve_noise("auto", data, case["noise"])
        try:
            air = estimate_sigma_rician(data)
            air_ratio = air_noise_ratio(data, air)
        except InputError:
            air, air_ratio = None, None
        auto = _run(case, "auto")
        high = _run(case, 2.5 * true)
        failure = "-"
        if case["noise"] == "rician" and air is not None and air > 1.5 * true:
            old = _run(case, air)
            failure = (
                f"{_fmt(old['gain'])} / {_fmt(old['ratio'])} / {_fmt(old['structure'], 1)} / "
                f"{'yes' if not old['ok'] else 'no'}"
            )
        print(
            f"| {case['name']} | {estimate.sigma / true:.2f} ({estimate.source}) | "
            f"{_fmt(None if air is None else air / true)} | {_fmt(air_ratio)} | {_fmt(auto['gain'])}"
            f"{'' if auto['ok'] else ' (flagged)'} | {_fmt(auto['ratio'])} | {_fmt(auto['structure'])} | "
            f"{_fmt(high['gain'])} / {_fmt(high['ratio'])} / {_fmt(high['structure'], 1)} / "
            f"{'yes' if not high['ok'] else 'no'} | "
            f"{failure} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
