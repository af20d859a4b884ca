"""Make the Slicer extension's screenshot from a real restoration (docs/img/slicer_restoration.png).

There is no Slicer GUI on the machines this project builds on, so the picture is not a Slicer window: it is a
real run of the command the MediDiff module starts, rendered with medidiff.viz, and labelled as such.

1. ``medidiff degrade`` adds Gaussian noise (5 % of the 99.5th percentile, seed 1) to the bundled MNI152 T1;
2. the noisy volume is written as NRRD, as the module writes a Slicer volume;
3. the module's own command builder (``MediDiffLib.command.build_restore_argv`` with the installed medidiff's
   task registry and the panel's defaults: denoise, Gaussian, sigma estimated) makes the ``medidiff restore``
   command line, which runs as the module runs it (``python -m medidiff restore ...``);
4. clean, noisy and restored volumes go into a three-view montage with PSNR, with a caption saying what it is.

Usage: ``.venv/bin/python tools/make_slicer_screenshot.py [--out docs/img/slicer_restoration.png]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_samples" / "mni152_t1_2mm.nii.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "slicer_restoration.png")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "slicer" / "MediDiff"))
    import numpy as np
    from MediDiffLib.catalog import load_installed
    from MediDiffLib.command import RestoreParameters, build_restore_argv
    from MediDiffLib.dependencies import medidiff_command
    from PIL import Image, ImageDraw, ImageFont

    import medidiff
    from medidiff.metrics import psnr
    from medidiff.viz import Panel, render

    catalog = load_installed()
    assert catalog is not None, "medidiff is not importable"
    with tempfile.TemporaryDirectory(prefix="medidiff-shot-") as temporary:
        work = Path(temporary)
        noisy_nii = work / "noisy.nii.gz"
        degrade = [sys.executable, "-m", "medidiff", "degrade", str(SAMPLE), str(noisy_nii)]
        subprocess.run(
            [*degrade, "--kind", "gaussian", "--sigma", "5%", "--seed", "1", "--quiet"], check=True
        )
        medidiff.write_volume(medidiff.read_volume(str(noisy_nii)), str(work / "input.nrrd"))
        params = RestoreParameters(
            work / "input.nrrd", work / "output.nrrd", task="denoise", noise="gaussian", sigma="auto", seed=0
        )
        command = build_restore_argv(params, catalog, medidiff_command(sys.executable))
        print("running:", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
        clean = medidiff.read_volume(str(SAMPLE))
        noisy = medidiff.read_volume(str(work / "input.nrrd"))
        restored = medidiff.read_volume(str(work / "output.nrrd"))
        reference = np.asarray(clean.data, dtype=np.float64)
        data_range = float(np.percentile(reference, 99.5) - reference.min())
        scores = {
            name: psnr(reference, np.asarray(volume.data, dtype=np.float64), data_range=data_range)
            for name, volume in (("noisy", noisy), ("restored", restored))
        }
        montage = render(
            reference,
            clean.affine,
            [
                Panel("noisy input (5% Gaussian)", np.asarray(noisy.data), f"PSNR {scores['noisy']:.2f} dB"),
                Panel("MediDiff: denoise", np.asarray(restored.data), f"PSNR {scores['restored']:.2f} dB"),
            ],
            title=f"medidiff {medidiff.__version__}: the MediDiff module's default denoise, MNI152 sample",
            reference_title="clean (MNI152 T1, 2 mm)",
        )
    caption = (
        "A real run of the command the MediDiff Slicer module starts (MediDiffLib.command, panel defaults), "
        "rendered with medidiff.viz by tools/make_slicer_screenshot.py; not a picture of the Slicer window."
    )
    font = ImageFont.load_default()
    lines = textwrap.wrap(caption, width=max(40, montage.width // 7))
    canvas = Image.new("RGB", (montage.width, montage.height + 8 + 14 * len(lines)), "white")
    canvas.paste(montage, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        draw.text((8, montage.height + 4 + 14 * number), line, fill=(40, 40, 40), font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(args.out, {k: round(v, 2) for k, v in scores.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
