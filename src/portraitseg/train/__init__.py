"""Training: ``train(TrainConfig(...))`` or ``Trainer`` for finer control.

``TrainConfig`` imports without torch (the CLI builds its flags from it); the rest loads torch
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import TrainConfig

__all__ = ["LRSchedule", "ModelEMA", "TrainConfig", "Trainer", "lr_factor", "source_probs", "train"]

if TYPE_CHECKING:
    from .data import source_probs
    from .ema import ModelEMA
    from .schedule import LRSchedule, lr_factor
    from .trainer import Trainer, train

_LAZY = {
    "Trainer": "trainer",
    "train": "trainer",
    "ModelEMA": "ema",
    "LRSchedule": "schedule",
    "lr_factor": "schedule",
    "source_probs": "data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
