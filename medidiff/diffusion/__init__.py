"""Diffusion math: noise schedules, SDEs and prediction parameterisations (one source of truth)."""

from medidiff.diffusion.predictions import Prediction, expand_like, split_prediction, training_target
from medidiff.diffusion.schedules import CosineSchedule, LinearSchedule, NoiseSchedule, build_schedule
from medidiff.diffusion.sde import SDE, VESDE, VPSDE, SubVPSDE, build_sde

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "CosineSchedule",
    "LinearSchedule",
    "NoiseSchedule",
    "Prediction",
    "SubVPSDE",
    "build_schedule",
    "build_sde",
    "expand_like",
    "split_prediction",
    "training_target",
]
