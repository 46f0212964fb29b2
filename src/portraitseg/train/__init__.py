"""Training: ``train(TrainConfig(...))`` or ``Trainer`` for finer control.

``TrainConfig`` imports without torch (the CLI builds its flags from it); the rest loads torch
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .config import TrainConfig

__all__ = ["LRSchedule", "ModelEMA", "TrainConfig", "Trainer", "lr_factor", "source_probs", "train"]

if TYPE_CHECKING:
    from .data import source_probs
    from .ema import ModelEMA
    from .schedule import LRSchedule, lr_factor
    from .trainer import Trainer, train

__getattr__ = lazy_getattr(__name__, {
    "Trainer": ".trainer",
    "train": ".trainer",
    "ModelEMA": ".ema",
    "LRSchedule": ".schedule",
    "lr_factor": ".schedule",
    "source_probs": ".data",
})
