"""Grow a trained U-Net twice as wide, keeping its function (Net2Net, Chen et al. 2016).

A (16, 32, 64) network becomes a (32, 64, 128) one that computes the same output, so training the wider
network starts from what the narrow one learned instead of from noise. Every activation channel ``k`` of
the narrow network becomes the pair ``2k, 2k + 1`` of the wide one:

* a layer's outputs are copied to both members of the pair (weights and biases, GroupNorm's affine);
* a layer's inputs from a pair are split, ``w/2 + e`` and ``w/2 - e``, so the pair sums to the narrow
  weight whatever ``e`` is. ``e`` is random (``noise`` times the weight's std): it breaks the symmetry of
  the two copies, which gradient descent would otherwise keep identical forever, without changing the
  function;
* GroupNorm keeps its group count, and the pair of channel ``k`` lands in the group of ``k``, so every
  group sees the same values twice and has the same mean and variance. Concatenated skip connections
  keep this: a pair never straddles the two halves;
* the time embedding's sinusoid of width 2C holds every frequency of the width-C one at its even
  positions (MONAI's ``get_timestep_embedding``); the first time layer reads those and ignores the rest;
* attention keeps its head count: ``num_head_channels`` doubles, each wide head holds its narrow head's
  channels twice, so q.k doubles while the scale 1/sqrt(d) shrinks by sqrt(2); the queries are scaled by
  1/sqrt(2) to keep the logits.

The wide network's outputs match the narrow one's to float rounding (``tests/nets/test_grow.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from medidiff.nets.model import DiffusionModel


def wide_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """The model config of the network twice as wide (channels and attention head width doubled)."""
    unet = dict(model_config["unet"])
    unet["channels"] = [2 * int(c) for c in unet["channels"]]
    unet["num_head_channels"] = 2 * int(unet.get("num_head_channels", 8))
    return {**model_config, "unet": unet}


def _time_input_index(narrow_dim: int) -> Tensor:
    """Positions of the narrow sinusoid's entries in the wide one (cos block, then sin block)."""
    half = narrow_dim // 2
    k = torch.arange(narrow_dim)
    return torch.where(k < half, 2 * k, 2 * half + 2 * (k - half))


def _grow_tensor(
    name: str, narrow: Tensor, wide_shape: torch.Size, noise: float, gen: torch.Generator
) -> Tensor:
    """The wide counterpart of one narrow parameter (see the module docstring)."""
    w = narrow.detach().to(torch.float64)
    if w.dim() == 1:  # biases and GroupNorm affine: one entry per output channel
        return w.repeat_interleave(wide_shape[0] // w.shape[0]) if wide_shape[0] != w.shape[0] else w.clone()
    # Output channels (dim 0): copies, unless the layer is the final 1-channel output.
    if wide_shape[0] != w.shape[0]:
        w = w.repeat_interleave(2, dim=0)
    if wide_shape[1] == w.shape[1]:  # conv_in: 1 input channel
        return w
    if name == "time_embed.0.weight":  # sinusoid of width 2C: the narrow frequencies sit at even positions
        out = torch.zeros(w.shape[0], wide_shape[1], dtype=w.dtype)
        out[:, _time_input_index(w.shape[1])] = w
        return out
    # Input channels (dim 1): split each weight over the pair, with a random, sum-preserving difference.
    e = noise * float(w.std()) * torch.randn(w.shape, generator=gen, dtype=w.dtype)
    out = torch.empty((w.shape[0], 2 * w.shape[1], *w.shape[2:]), dtype=w.dtype)
    out[:, 0::2] = w / 2 + e
    out[:, 1::2] = w / 2 - e
    return out


def grow_wide(model: DiffusionModel, noise: float = 0.05, seed: int = 0) -> DiffusionModel:
    """A twice-as-wide copy of ``model`` computing the same function (float32 weights, on the CPU).

    Args:
        model: a trained model whose U-Net has no attention except MONAI's middle block.
        noise: std of the symmetry-breaking split, relative to each weight tensor's std.
        seed: seeds that split.
    """
    config = wide_config(model.config)
    wide = DiffusionModel.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    narrow_state = model.net.state_dict()
    state: dict[str, Tensor] = {}
    scale_q = 1.0 / math.sqrt(2.0)
    for name, target in wide.net.state_dict().items():
        grown = _grow_tensor(name, narrow_state[name], target.shape, noise, gen)
        if ".attn.to_q." in name:
            grown = grown * scale_q
        if grown.shape != target.shape:
            raise ValueError(f"cannot grow {name}: {tuple(grown.shape)} vs {tuple(target.shape)}")
        state[name] = grown.to(target.dtype)
    wide.net.load_state_dict(state)
    return wide
