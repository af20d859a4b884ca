"""Exponential moving average of model weights, on top of :class:`torch.optim.swa_utils.AveragedModel`."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (buffers averaged too); call ``ema.update_parameters(model)`` each step."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
