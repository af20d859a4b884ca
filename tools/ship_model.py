"""Copy a trained run's EMA model into the package as the embedded default (fp16 weights, JSON config).

Usage: .venv/bin/python tools/ship_model.py runs/default [--dtype float16]
   or: .venv/bin/python tools/ship_model.py runs/default/snapshots/step_0003000.safetensors (a snapshot)

The weights are stored in float16 (half the size; inference runs in bf16 autocast anyway, whose mantissa is
shorter than float16's) and loaded back as float32. The JSON keeps the run's provenance and adds the step
count, so the model card can cite exactly what ships.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath

import torch

from medidiff.nets.checkpoint import (
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_NAME,
    load_model,
    read_model_config,
    save_model,
)


def portable_spec(path: str) -> str:
    """A training file as the config would name it: ``pkg:`` inside site-packages, else as given.

    Runs from before the trainer kept the config's specs recorded the build machine's absolute paths.
    """
    parts = PurePosixPath(path).parts
    if "site-packages" in parts:
        return "pkg:" + "/".join(parts[parts.index("site-packages") + 1 :])
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training run directory (holds model.safetensors/.json), or a snapshot")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()
    source = Path(args.run) if Path(args.run).is_file() else Path(args.run) / "model.safetensors"
    model = load_model(source)
    config = read_model_config(source)
    extra = {
        k: v for k, v in config.items() if k not in ("format", "format_version", "medidiff_version", "model")
    }
    training = dict(extra.get("training", {}))
    training["files"] = [portable_spec(f) for f in training.get("files", [])]
    extra["training"] = training
    extra["weights_dtype"] = args.dtype
    target = DEFAULT_MODEL_DIR / f"{DEFAULT_MODEL_NAME}.safetensors"
    save_model(model, target, extra=extra, dtype=getattr(torch, args.dtype))
    shipped = load_model("default")
    steps = json.loads(target.with_suffix(".json").read_text())["training"].get("steps")
    size = target.stat().st_size / 2**20
    print(
        f"shipped {source} -> {target} ({size:.1f} MB, {args.dtype}, {steps} steps, "
        f"patch {shipped.patch_size})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
