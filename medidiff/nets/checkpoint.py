"""Model files: safetensors weights next to a JSON config. Loading never unpickles anything.

A model ``NAME`` is two files::

    NAME.safetensors   the U-Net weights (EMA weights for trained models)
    NAME.json          {"format": "medidiff-model", "format_version": 1, "model": {unet, sde,
                        prediction_type, time_scale, patch_size}, "normalization": {...},
                        "training": {...provenance...}, "medidiff_version": ...}

``load_model("default")`` loads the embedded default model from ``medidiff/models/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from medidiff.errors import ModelError
from medidiff.fsutil import atomic_path
from medidiff.nets.model import DiffusionModel

MODEL_FORMAT = "medidiff-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_NAME = "default"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


def _model_paths(spec: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Resolve a model spec (``default``, a directory, a .safetensors or a .json path) to (weights, json)."""
    if str(spec) == "default":
        base = DEFAULT_MODEL_DIR / DEFAULT_MODEL_NAME
        return base.with_suffix(".safetensors"), base.with_suffix(".json")
    path = Path(spec)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(
            f"{path}: pickled checkpoints are refused because loading them can run arbitrary code; "
            "medidiff models are a .safetensors file with a .json config"
        )
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise ModelError(
                f"{path}: expected exactly one .safetensors model in the directory, found {len(found)}"
            )
        path = found[0]
    if path.suffix.lower() == ".json":
        return path.with_suffix(".safetensors"), path
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: not a medidiff model (expected a .safetensors file with a .json config)")
    return path, path.with_suffix(".json")


def read_model_config(spec: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a model's JSON config."""
    weights, config_path = _model_paths(spec)
    if not weights.is_file():
        hint = (
            " (the embedded default model is missing from this installation)"
            if str(spec) == "default"
            else ""
        )
        raise ModelError(f"{weights}: model weights not found{hint}")
    if not config_path.is_file():
        raise ModelError(
            f"{config_path}: model config not found (a medidiff model needs its .json next to it)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path}: unreadable model config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ModelError(f"{config_path}: not a medidiff model config (missing format={MODEL_FORMAT!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"{config_path}: model format version {config['format_version']} is newer than supported"
        )
    return config


def load_model(
    spec: str | os.PathLike[str] = "default", device: str | torch.device = "cpu", bf16: bool | None = None
) -> DiffusionModel:
    """Load a model (``"default"``, a directory, or a .safetensors/.json path) in eval mode.

    ``bf16``: bfloat16 autocast on or off; None: where it is fast on the device (``model.bf16_is_fast``).

    Raises:
        ModelError: missing files, a foreign or pickled checkpoint, or weights that do not fit the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, _ = _model_paths(spec)
    config = read_model_config(spec)
    model_cfg = dict(config.get("model", {}))
    if bf16 is not None:
        model_cfg["bf16"] = bf16
    try:
        model = DiffusionModel.from_config(model_cfg)
    except Exception as exc:
        raise ModelError(f"{weights}: invalid model config ({exc})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights}: unreadable safetensors file ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    expected = model.net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{weights}: weights do not match the config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]})"
        )
    bad = [k for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise ModelError(
            f"{weights}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, config says "
            f"{tuple(expected[bad[0]].shape)}"
        )
    model.net.load_state_dict(state)
    model.config = {**model.config, "normalization": config.get("normalization", {}), "source": str(weights)}
    if config.get("uncertainty_scale"):  # per-task calibration of the chains' spread (medidiff.uncertainty)
        model.config["uncertainty_scale"] = dict(config["uncertainty_scale"])
    model = model.to(device).eval()
    return model.use_channels_last() if torch.device(device).type == "cpu" else model


def save_model(
    model: DiffusionModel,
    path: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``path`` (.safetensors) and its .json atomically. ``extra`` adds top-level JSON fields
    (normalization, training provenance). Returns the weights path."""
    from safetensors.torch import save_file

    from medidiff import __version__

    weights = Path(path)
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.net.state_dict().items()
    }
    config = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "medidiff_version": __version__,
        "model": {
            k: v
            for k, v in model.config.items()
            if k in ("unet", "sde", "prediction_type", "time_scale", "patch_size")
        },
        **(extra or {}),
    }
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    with atomic_path(weights.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return weights
