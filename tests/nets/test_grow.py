"""Growing a trained U-Net twice as wide keeps its outputs (Net2Net) and breaks the copies' symmetry."""

from __future__ import annotations

import torch
from helpers import tiny_model_config

from medidiff.nets.grow import grow_wide, wide_config
from medidiff.nets.model import DiffusionModel


def _trained_like(channels: tuple[int, ...], attention: bool) -> DiffusionModel:
    """A small model whose weights are all non-zero (an untrained U-Net outputs exactly 0)."""
    cfg = tiny_model_config(channels)
    cfg["unet"]["attention_levels"] = [False] * (len(channels) - 1) + [attention]
    torch.manual_seed(0)
    model = DiffusionModel.from_config({**cfg, "bf16": False}).eval()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_grown_network_computes_the_same_function() -> None:
    """Attention (the head count kept), GroupNorm groups, skip concatenations and the time embedding."""
    narrow = _trained_like((8, 16), attention=True)
    wide = grow_wide(narrow, noise=0.1).eval()
    wide.bf16 = False
    assert wide.config["unet"]["channels"] == [16, 32]
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.02, 0.7])
    with torch.no_grad():
        a, b = narrow(x, t), wide(x, t)
    assert float(a.std()) > 0.1
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()) + 1e-5)


def test_grown_copies_differ_so_training_can_separate_them() -> None:
    narrow = _trained_like((8, 16), attention=False)
    wide = grow_wide(narrow, noise=0.05)
    w = wide.net.state_dict()["down_blocks.0.resnets.0.conv1.conv.weight"]  # (16, 16, 3, 3, 3)
    assert not torch.equal(w[:, 0::2], w[:, 1::2])  # the split pairs differ ...
    n = narrow.net.state_dict()["down_blocks.0.resnets.0.conv1.conv.weight"]
    assert torch.allclose(w[0::2, 0::2] + w[0::2, 1::2], n, atol=1e-6)  # ... and sum to the narrow weight


def test_wide_config_doubles_channels_and_head_width() -> None:
    cfg = wide_config({"unet": {"channels": [16, 32, 64], "num_head_channels": 8}, "prediction_type": "v"})
    assert cfg["unet"]["channels"] == [32, 64, 128] and cfg["unet"]["num_head_channels"] == 16
    assert cfg["prediction_type"] == "v"
