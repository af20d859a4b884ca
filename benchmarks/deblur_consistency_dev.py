"""The consistency check after deblurring, on a development volume.

``python -m benchmarks.deblur_consistency_dev``.

A 64^3 crop of a development volume (default ds011 sub-11 T1) is blurred (Gaussian, 1.2 x its smallest voxel
size as sigma in mm) and given 2% Gaussian noise, then deblurred with the true FWHM and three wrong
assumptions. Prints PSNR input -> output and the check's statistics per run (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

FWHM_PER_SIGMA = 2.3548200450309493


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", default="ds011-sub11-T1", help="a development volume of dev_curve")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import medidiff
    from benchmarks.dev_curve import VOLUMES
    from medidiff.degrade import degrade
    from medidiff.io.volume import Volume
    from medidiff.metrics import psnr

    volume = medidiff.read_volume(VOLUMES[args.volume])
    data = np.asarray(volume.data, np.float64)
    starts = [max(0, (n - 64) // 2) for n in data.shape]
    data = data[tuple(slice(a, a + 64) for a in starts)]
    affine = volume.affine.copy()
    affine[:3, 3] += volume.affine[:3, :3] @ np.asarray(starts, np.float64)
    clean = Volume(data.astype(np.float32), affine, {}, args.volume)
    blur_mm = float(min(clean.spacing)) * 1.2
    blurred = np.asarray(degrade(clean, "blur", seed=3, blur_mm=blur_mm).volume.data, np.float64)
    sigma = 0.02 * float(np.percentile(data, 99.5))
    noisy = blurred + sigma * np.random.default_rng(7).standard_normal(data.shape)
    given = Volume(noisy.astype(np.float32), affine, {}, args.volume)
    fwhm = blur_mm * FWHM_PER_SIGMA
    runs: dict[str, dict[str, float]] = {
        "true FWHM, sigma auto": {"fwhm": fwhm},
        "sigma 3 x the truth": {"fwhm": fwhm, "sigma": 3 * sigma},
        "FWHM 2 x the truth": {"fwhm": 2 * fwhm},
        "FWHM 0.5 x the truth": {"fwhm": 0.5 * fwhm},
    }
    for label, options in runs.items():
        result = medidiff.restore(given, task="deblur", progress=False, full_result=True, **options)  # type: ignore[arg-type]
        check = result.info.get("consistency") or {}
        row = {
            "run": label,
            "psnr_in": round(psnr(data, noisy), 2),
            "psnr_out": round(psnr(data, np.asarray(result.volume.data, np.float64)), 2),
            "ratio": check.get("noise_ratio"),
            "structure": check.get("structure"),
            "flagged": bool(result.info.get("warnings")),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
