"""`medidiff train --config CONFIG [--resume] [key.sub=value ...]`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion prior on 3D volumes (single process, or DDP under torchrun)",
        description="Train a diffusion prior. Runs under `torchrun --nproc_per_node N -m medidiff train ...` "
        "for data-parallel training (gloo on CPU, nccl on GPUs).",
    )
    p.add_argument("--config", required=True, help="training YAML (e.g. configs/train/default.yaml)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in run.out_dir from its last checkpoint"
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.steps=200")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    from pathlib import Path

    from medidiff.training.config import load_config, resolve_data_files

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    raw = load_config(args.config, args.overrides)
    config_dir = Path(args.config).resolve().parent
    entries = raw.get("data", {}).get("files") if isinstance(raw.get("data"), dict) else None
    # Resolved before torch and MONAI are imported (seconds), so a missing file fails at once; anything but a
    # list is left to TrainConfig's checks and resolved after them, as before.
    files = resolve_data_files([str(e) for e in entries], config_dir) if isinstance(entries, list) else None
    from medidiff.training.trainer import TrainConfig, train

    cfg = TrainConfig.from_dict(raw)
    # The model's provenance keeps the config's specs (pkg:, relative paths), not this machine's paths.
    cfg.provenance = {**cfg.provenance, "files": list(cfg.data.files)}
    cfg.data.files = files if files is not None else resolve_data_files(cfg.data.files, config_dir)
    path = train(cfg, resume=args.resume, device=args.device, quiet=args.quiet)
    if not args.quiet and os.environ.get("RANK", "0") == "0":
        print(path)
    return 0
