"""Grow a model twice as wide, keeping its outputs (``medidiff.nets.grow``), as a model to fine-tune from.

Usage: .venv/bin/python tools/grow_model.py default runs/grown/model.safetensors

Prints how far the grown network's output is from the source's on a random 48^3 batch (fp32): float
rounding only. Then train it with ``run.init_from=<the written path>`` (``configs/train/wide.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medidiff.nets.checkpoint import load_model, read_model_config, save_model
from medidiff.nets.grow import grow_wide
from medidiff.nets.unet import count_parameters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="model to grow: default, or a .safetensors path")
    parser.add_argument("target", help="where to write the grown model (.safetensors; its .json beside it)")
    parser.add_argument("--noise", type=float, default=0.05, help="symmetry-breaking split (relative std)")
    args = parser.parse_args()
    narrow = load_model(args.source, bf16=False)
    wide = grow_wide(narrow, noise=args.noise)
    wide.bf16 = False
    x = torch.randn(2, 1, *narrow.patch_size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.5])
    with torch.no_grad():
        a, b = narrow(x, t), wide(x, t)
    config = read_model_config(args.source)
    extra = {
        k: v for k, v in config.items() if k not in ("format", "format_version", "medidiff_version", "model")
    }
    extra["training"] = {**extra.get("training", {}), "grown_from": str(args.source)}
    extra.pop("weights_dtype", None)
    Path(args.target).parent.mkdir(parents=True, exist_ok=True)
    save_model(wide, args.target, extra=extra)
    print(
        f"grew {args.source} ({count_parameters(narrow.net):,} parameters) -> {args.target} "
        f"({count_parameters(wide.net):,}); max |output difference| {float((a - b).abs().max()):.2e} "
        f"for outputs of std {float(a.std()):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
