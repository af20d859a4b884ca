"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

``train_state.safetensors`` holds ``net.*`` (raw weights), ``ema.*`` (EMA weights), ``optim.<param>.<key>``
(optimiser tensors) and ``rng.torch``; ``train_state.json`` holds the step, the optimiser's param groups and
scalar state, and the run config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medidiff.errors import ModelError
from medidiff.fsutil import atomic_path

STATE_FORMAT = "medidiff-train-state"


def save_train_state(
    directory: Path,
    net: nn.Module,
    ema_net: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any],
) -> None:
    """Atomically write the training state of rank 0 into ``directory``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        tensors[f"net.{k}"] = v.detach().cpu().contiguous()
    for k, v in ema_net.state_dict().items():
        tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "step": int(step),
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        **extra,
    }
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "train_state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(directory / "train_state.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_train_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``directory``'s training state: (tensors by name, JSON metadata). Nothing is applied yet.

    Under DDP only rank 0 calls this; the trainer sends the result to the other ranks, so they resume the
    very same state without needing a shared file system.
    """
    from safetensors.torch import load_file

    path, meta_path = directory / "train_state.safetensors", directory / "train_state.json"
    if not path.is_file() or not meta_path.is_file():
        raise ModelError(f"{directory}: no training state to resume from (train_state.safetensors/.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != STATE_FORMAT:
        raise ModelError(f"{meta_path}: not a medidiff training state")
    return load_file(str(path)), meta


def apply_train_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    net: nn.Module,
    ema_net: nn.Module,
    optimizer: torch.optim.Optimizer,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights, EMA and optimiser state (and, if ``restore_rng``, the torch RNG); returns ``meta``."""
    try:
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        ema_net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as exc:
        raise ModelError(f"the saved training state does not fit this run's model config ({exc})") from None
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("optim_scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
    return meta


def load_train_state(
    directory: Path, net: nn.Module, ema_net: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, EMA, optimiser and torch RNG from ``directory``; returns the JSON metadata."""
    tensors, meta = read_train_state(directory)
    return apply_train_state(tensors, meta, net, ema_net, optimizer)


def weights_digest(net: nn.Module, ema_net: nn.Module) -> str:
    """SHA-256 of the raw and EMA weights (the ``net.*`` and ``ema.*`` tensors of a training state).

    DDP replicas must hold bit-identical weights; the trainer compares this digest across ranks at every
    checkpoint. :func:`tensors_digest` of a saved state's ``net.*``/``ema.*`` tensors gives the same value.
    """
    named = {f"net.{k}": v for k, v in net.state_dict().items()}
    named.update({f"ema.{k}": v for k, v in ema_net.state_dict().items()})
    return tensors_digest(named)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the ``net.*`` and ``ema.*`` tensors of ``tensors`` (names and bytes, sorted by name)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(k for k in tensors if k.startswith(("net.", "ema."))):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
