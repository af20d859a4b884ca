"""The DiffusionModel wrapper: prediction conversions through a real network, bf16, config round trip."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model_config

from medidiff.diffusion.predictions import training_target
from medidiff.nets.model import DiffusionModel
from medidiff.nets.unet import count_parameters, unet_config

CFG = tiny_model_config()


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
def test_predict_inverts_the_training_target(kind: str) -> None:
    """If the network outputs exactly its training target, predict() recovers the true eps and x0."""
    model = DiffusionModel.from_config({**CFG, "prediction_type": kind, "bf16": False})
    x0, eps = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16)
    t = torch.tensor([0.05, 0.8], dtype=torch.float64)
    alpha, sigma = (c.float() for c in model.sde.coefficients(t))
    x_t = alpha.view(-1, 1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
    target = training_target(x0, eps, alpha, sigma, kind)
    model.net.forward = lambda x, timesteps: target  # type: ignore[method-assign]
    pred = model.predict(x_t, t)
    assert torch.allclose(pred.x0, x0, atol=2e-4) and torch.allclose(pred.eps, eps, atol=2e-4)


def test_bf16_autocast_is_close_to_float32_and_returns_float32() -> None:
    torch.manual_seed(0)
    model = DiffusionModel.from_config({**CFG, "bf16": True}).eval()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(1, 1, 16, 16, 16), torch.tensor([0.3])
    with torch.no_grad():
        low = model(x, t)
        model.bf16 = False
        full = model(x, t)
    assert low.dtype == torch.float32
    assert (low - full).abs().max() < 0.05 * full.abs().max()


def test_unet_config_validation() -> None:
    from medidiff.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        unet_config({"channels": [12, 24], "attention_levels": [False, False], "norm_num_groups": 8})
    with pytest.raises(ConfigError, match="unknown"):
        unet_config({"chanels": [8, 16]})
    model = DiffusionModel.from_config(CFG)
    assert 0 < count_parameters(model.net) < 1_000_000


def test_bf16_is_used_by_default_only_where_the_device_runs_it_fast() -> None:
    """Autocast to bf16 on an AVX2-only CPU is 25-35x slower than fp32; the default must not take it there."""
    from medidiff.nets.model import bf16_is_fast

    model = DiffusionModel.from_config(CFG)
    assert model.bf16 is None  # auto
    seen: list[torch.dtype] = []

    def probe(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        seen.append(torch.ones(1, 1).matmul(torch.ones(1, 1)).dtype)  # the dtype autocast gives a matmul
        return x

    model.net.forward = probe  # type: ignore[method-assign]
    model(torch.zeros(1, 1, 4, 4, 4), torch.tensor([0.5]))
    model.bf16 = True
    model(torch.zeros(1, 1, 4, 4, 4), torch.tensor([0.5]))
    assert seen == [torch.bfloat16 if bf16_is_fast("cpu") else torch.float32, torch.bfloat16]
    assert DiffusionModel.from_config({**CFG, "bf16": False}).bf16 is False


def test_bf16_needs_the_cpu_flags_on_x86() -> None:
    """oneDNN's check says yes on AVX-512 CPUs without avx512_bf16, where bf16 is emulated (3x slower than
    fp32, measured): on x86 the flags decide; elsewhere, or where they are unknown, oneDNN does."""
    from medidiff.inference.backends import cpu_features
    from medidiff.nets.model import bf16_is_fast, cpu_has_native_bf16

    assert not cpu_has_native_bf16("x86_64", ("avx2", "avx512f"))  # the stop-33 Xeon
    assert not cpu_has_native_bf16("x86_64", ("avx2",))
    assert cpu_has_native_bf16("x86_64", ("avx2", "avx512f", "avx512_bf16"))
    assert cpu_has_native_bf16("AMD64", ("avx2", "avx512f", "amx_bf16"))
    assert cpu_has_native_bf16("aarch64", ())
    assert cpu_has_native_bf16("x86_64", ())  # /proc/cpuinfo unreadable: oneDNN's answer stands
    features = cpu_features()
    if features and "avx512_bf16" not in features and "amx_bf16" not in features:
        assert not bf16_is_fast("cpu")  # this machine: never the emulated path
