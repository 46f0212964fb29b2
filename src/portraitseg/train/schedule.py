"""Learning-rate schedules: linear warm-up, then cosine decay or ReduceLROnPlateau."""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import SCHEDULES


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak at ``total`` steps."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets the optimiser's learning rate before each step.

    ``cosine``: ``peak * lr_factor(step, total_steps, warmup_steps, min_ratio)``; ``total_steps``
    is passed per call because a time budget can re-fit the epoch count mid-run.
    ``plateau`` (the original project's): linear warm-up, then the learning rate is halved after
    3 epochs without a lower validation loss (:meth:`epoch_end`).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, kind: str, peak_lr: float, warmup_steps: int, min_ratio: float
    ) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        self.optimizer = optimizer
        self.kind = kind
        self.peak_lr = peak_lr
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
            if kind == "plateau"
            else None
        )

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set(self, step: int, total_steps: int) -> float:
        """Set (and return) the learning rate for optimiser step ``step`` (0-based)."""
        if self.plateau is not None:
            if step < self.warmup_steps:
                self._set(self.peak_lr * (step + 1) / self.warmup_steps)
            return self.optimizer.param_groups[0]["lr"]
        lr = self.peak_lr * lr_factor(step, total_steps, self.warmup_steps, self.min_ratio)
        self._set(lr)
        return lr

    def epoch_end(self, val_loss: float | None) -> None:
        if self.plateau is not None and val_loss is not None:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any] | None:
        return self.plateau.state_dict() if self.plateau is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.plateau is not None and state:
            self.plateau.load_state_dict(state)
