"""How denoising's background step was tuned: ``python -m benchmarks.background_dev [--model default]``.

On the development volumes only (the bundled sample, with exactly zero air, and IXI012, with real scanner
air; both training subjects, neither a benchmark volume), Gaussian and Rician noise at 5% and 10% of the
99.5th percentile: each case is denoised once with the step off, then the step is applied with each
(threshold, width) of the grid. Prints the PSNR / SSIM change per case and the mean over the cases
(docs/benchmarks.md, "How the defaults were chosen"). About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medidiff.datapaths import resolve_data_paths
from medidiff.io import read_volume
from medidiff.io.volume import Volume
from medidiff.metrics import psnr, ssim

ROOT = Path(__file__).resolve().parents[1]

VOLUMES = {
    "sample": "data_samples/mni152_t1_2mm.nii.gz",
    "ixi012": "../shared/data/ixi-2mm/IXI012-HH-1211_T1.nii.gz",
}
GRID = [(t, w) for t in (0.5, 1.0, 1.5, 2.0) for w in (2.0, 4.0, 8.0)]


def _noisy(clean: np.ndarray, noise: str, sigma: float, seed: int) -> np.ndarray:
    """(I, J, K) clean volume with Gaussian or Rician noise of ``sigma``."""
    from medidiff.restoration.noise import Gaussian, Rician

    model = Rician(sigma) if noise == "rician" else Gaussian(sigma)
    generator = torch.Generator().manual_seed(seed)
    return model.sample(torch.from_numpy(clean), generator).numpy()


@dataclass
class DevCase:
    """A development case: ``volume`` (its geometry), clean and noisy (I, J, K) voxels, the data range."""

    name: str
    noise: str
    level: float
    volume: Volume
    clean: np.ndarray
    noisy: np.ndarray
    peak: float


def development_cases() -> Iterator[DevCase]:
    """Each development volume with Gaussian and Rician noise at 5% and 10% of its 99.5th percentile."""
    for name, path in VOLUMES.items():
        volume = read_volume(resolve_data_paths(path, base=ROOT, what="development volume")[0])
        clean = volume.data.astype(np.float64)
        peak = float(clean.max() - clean.min())
        for noise in ("gaussian", "rician"):
            for level in (0.05, 0.10):
                noisy = _noisy(clean, noise, level * float(np.percentile(clean, 99.5)), seed=7)
                yield DevCase(name, noise, level, volume, clean, noisy, peak)


def main(argv: list[str] | None = None) -> None:
    import medidiff
    from medidiff.restoration import background as air

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)
    gains: dict[tuple[float, float], list[float]] = {g: [] for g in GRID}
    ssim_gains: dict[tuple[float, float], list[float]] = {g: [] for g in GRID}
    chosen = air.THRESHOLD
    for case in development_cases():
        clean, noisy, peak, noise = case.clean, case.noisy, case.peak, case.noise
        air.THRESHOLD = 0.0
        try:
            result = medidiff.restore(
                case.volume.with_data(noisy.astype(np.float32)),
                noise=noise,
                model=args.model,
                progress=False,
                full_result=True,
            )
        finally:
            air.THRESHOLD = chosen
        off = result.volume.data.astype(np.float64)
        base_p, base_s = psnr(clean, off, data_range=peak), ssim(clean, off, data_range=peak)
        row = f"{case.name} {noise} {int(case.level * 100)}%: off {base_p:.2f} dB / {base_s:.4f} |"
        for threshold, width in GRID:
            on, _ = air.flatten_background(off, noisy, result.info["sigma"], noise, threshold, width)
            dp = psnr(clean, on, data_range=peak) - base_p
            ds = ssim(clean, on, data_range=peak) - base_s
            gains[(threshold, width)].append(dp)
            ssim_gains[(threshold, width)].append(ds)
            row += f" {threshold:g},{width:g}: {dp:+.2f}/{ds:+.3f}"
        print(row, flush=True)
    print("mean change (threshold sigma, width voxels): PSNR dB, SSIM")
    for key in GRID:
        print(f"{key}: {np.mean(gains[key]):+.3f}  {np.mean(ssim_gains[key]):+.4f}")


if __name__ == "__main__":
    main()
