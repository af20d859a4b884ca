"""The diffusion model: a U-Net, the SDE it was trained for, and its prediction type.

:meth:`DiffusionModel.predict` is the *Denoiser* every sampler and conditioning rule uses:
``predict(x_t, t) -> Prediction(eps, x0)`` for x_t (B, 1, I, J, K) and t (B,) in [t_min, 1].
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medidiff.diffusion.predictions import PREDICTION_TYPES, Prediction, split_prediction
from medidiff.diffusion.sde import SDE, build_sde
from medidiff.errors import ConfigError
from medidiff.nets.unet import build_unet, unet_config


@functools.cache
def bf16_is_fast(device_type: str) -> bool:
    """Whether bfloat16 autocast speeds the network up on this machine's ``device_type`` ("cpu"/"cuda").

    On CPUs it pays only where oneDNN has native bf16 kernels (AVX-512 or AMX on x86, or Arm's bf16): there
    the 3D U-Net runs 2-2.4x faster than in fp32. Elsewhere (AVX2-only x86 CPUs) torch falls back to scalar
    bf16 loops, measured 25-35x *slower* than fp32 for a conv3d and a bmm on one such CPU. torch has no
    public query for this, so the private oneDNN check is used, wrapped: if it is missing, fp32 (safe).
    That check also says yes on AVX-512 CPUs *without* avx512_bf16 (it asks for AVX-512 core only), where
    oneDNN emulates bf16: on such a Xeon (stop 33) a 2 x 48^3 forward pass took 1.70 s in bf16 autocast
    against 0.56 s in fp32, so on x86 the CPU must also list avx512_bf16 or amx_bf16
    (:func:`cpu_has_native_bf16`).
    """
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    from medidiff.inference.backends import cpu_features  # torch-free: /proc/cpuinfo's flags

    return onednn and cpu_has_native_bf16(platform.machine(), cpu_features())


def cpu_has_native_bf16(machine: str, features: tuple[str, ...]) -> bool:
    """Whether an x86 CPU with ``features`` (:data:`medidiff.inference.backends.CPU_FEATURES` it has) runs
    bf16 natively; True for other architectures and where the flags are unknown (oneDNN's check decides)."""
    if machine.lower() not in ("x86_64", "amd64", "i686", "i386") or not features:
        return True
    return "avx512_bf16" in features or "amx_bf16" in features


class DiffusionModel(nn.Module):
    """U-Net + SDE + parameterisation.

    Args:
        net: maps (x_t (B, 1, I, J, K), timesteps (B,)) to a raw prediction like x_t.
        sde: the forward SDE the network was trained for.
        prediction_type: "eps", "v" or "x0".
        time_scale: the network sees ``t * time_scale`` (1000 makes t match DDPM step indices).
        patch_size: the training patch size (I, J, K); inference tiles larger volumes with it.
        bf16: run the network under bfloat16 autocast; outputs are float32. None (the default): where it is
            fast (:func:`bf16_is_fast`: GPUs, CPUs with native bf16 kernels, 2-2.4x faster), else fp32.
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        prediction_type: str = "v",
        time_scale: float = 1000.0,
        patch_size: Sequence[int] = (48, 48, 48),
        bf16: bool | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.net = net
        self.sde = sde
        self.prediction_type = prediction_type
        self.time_scale = float(time_scale)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.bf16 = bf16
        self.config = config or {}
        self.channels_last = False

    def use_channels_last(self) -> DiffusionModel:
        """Keep the network's weights and inputs in channels-last memory order (for CPUs).

        oneDNN's 3D convolutions run faster channels-last on CPUs: 10% less time per forward pass of the
        default model on a 2-core AVX2 CPU (48^3, batch 2, fp32: 1.34 -> 1.20 s), outputs equal to 2e-5,
        and 22% less per training step (forward and backward: 5.76 -> 4.52 s), the convolutions' backward
        most of all. Converting only the input does not take that path; the weights must be channels-last
        too. ``load_model`` and the trainer call it on CPUs, the trainer before the EMA copy, DDP and the
        optimiser take the weights. Checkpoints store plain contiguous tensors either way.
        """
        self.net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch stubs lack it
        self.channels_last = True
        return self

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiffusionModel:
        """Build an (untrained) model from a model config: {unet, sde, prediction_type, patch_size, ...}."""
        unet = unet_config(config.get("unet"))
        sde_cfg = config.get("sde", {"name": "vp", "schedule": {"name": "linear"}})
        full = {
            "unet": unet,
            "sde": build_sde(sde_cfg).config(),
            "prediction_type": config.get("prediction_type", "v"),
            "time_scale": float(config.get("time_scale", 1000.0)),
            "patch_size": [int(p) for p in config.get("patch_size", [48, 48, 48])],
        }
        return cls(
            build_unet(unet),
            build_sde(full["sde"]),
            prediction_type=full["prediction_type"],
            time_scale=full["time_scale"],
            patch_size=full["patch_size"],
            bf16=None if config.get("bf16") in (None, "auto") else bool(config["bf16"]),
            config=full,
        )

    @contextlib.contextmanager
    def _autocast(self, x: Tensor) -> Iterator[None]:
        use = (
            bf16_is_fast(x.device.type)
            if self.bf16 is None
            else self.bf16 and x.device.type in ("cpu", "cuda")
        )
        if use:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Raw network output (float32) for x_t (B, 1, I, J, K) and t (B,)."""
        t = t.to(device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast(x):
            out = self.net(x, t * self.time_scale)
        return out.float()

    def predict(self, x: Tensor, t: Tensor) -> Prediction:
        """The Denoiser interface: eps and x0 estimates for x_t (B, 1, I, J, K) at t (B,)."""
        return predict_with(self, self.sde, self.prediction_type, x, t)


def predict_with(
    network: Callable[[Tensor, Tensor], Tensor], sde: SDE, prediction_type: str, x: Tensor, t: Tensor
) -> Prediction:
    """eps and x0 for x_t (B, 1, I, J, K) at t (B,) from ``network(x, t) -> raw output like x`` (any
    runtime: the torch module, or its OpenVINO compilation)."""
    t = t.to(dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
    alpha, sigma = sde.coefficients(t)
    raw = network(x, t)
    return split_prediction(raw, x, alpha.float(), sigma.float(), prediction_type)
