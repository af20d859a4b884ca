"""How denoising's number of test-time views was chosen: ``python -m benchmarks.views_dev [--model default]``.

On the development volumes only (the bundled sample and IXI012, both training subjects, neither a
benchmark volume), Gaussian and Rician noise at 5% and 10% of the 99.5th percentile, sigma auto: each case
is denoised with 1, 2, 4 and 8 mirrored views (medidiff/inference/patches.py, FLIPS). Prints PSNR / SSIM
per case and the mean change over one view (docs/benchmarks.md, "How the defaults were chosen"). Each view
is one more network evaluation, so its time grows about linearly. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.background_dev import development_cases
from medidiff.metrics import psnr, ssim

VIEWS = (1, 2, 4, 8)


def main(argv: list[str] | None = None) -> None:
    import medidiff

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    gains: dict[int, list[tuple[float, float]]] = {v: [] for v in VIEWS[1:]}
    seconds: dict[int, list[float]] = {v: [] for v in VIEWS}
    for case in development_cases():
        clean, peak = case.clean, case.peak
        scores = {}
        for views in VIEWS:
            start = time.perf_counter()
            out = medidiff.restore(
                case.volume.with_data(case.noisy.astype(np.float32)),
                noise=case.noise,
                model=args.model,
                views=views,
                progress=False,
            )
            seconds[views].append(time.perf_counter() - start)
            data = out.data.astype(np.float64)
            scores[views] = (psnr(clean, data, data_range=peak), ssim(clean, data, data_range=peak))
        base_p, base_s = scores[1]
        row = f"{case.name} {case.noise} {int(case.level * 100)}%: 1 view {base_p:.2f} dB / {base_s:.4f} |"
        for views in VIEWS[1:]:
            dp, ds = scores[views][0] - base_p, scores[views][1] - base_s
            gains[views].append((dp, ds))
            row += f" {views}: {dp:+.3f}/{ds:+.4f}"
        print(row, flush=True)
    print("views: mean change over 1 view (PSNR dB, SSIM), mean seconds per volume")
    print(f"1: -, {np.mean(seconds[1]):.1f} s")
    for views in VIEWS[1:]:
        dp, ds = np.mean(gains[views], axis=0)
        print(f"{views}: {dp:+.3f}  {ds:+.4f}, {np.mean(seconds[views]):.1f} s")


if __name__ == "__main__":
    main()
