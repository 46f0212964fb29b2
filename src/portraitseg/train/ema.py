"""Exponential moving average of a model's weights and BatchNorm buffers."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """EMA copy of a model, updated in place after every optimiser step.

    The decay ramps up as ``(1 + n) / (10 + n)`` so short runs are not dominated by the
    random initialisation. The EMA follows the model it was built from (the tensors are
    bound once), so :meth:`update` takes no arguments.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        # state_dict() tensors alias the live parameters/buffers: collect them once, not per step.
        self._ema = [t for t in self.module.state_dict().values() if t.dtype.is_floating_point]
        self._cur = [t for t in model.state_dict().values() if t.dtype.is_floating_point]

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._ema, self._cur, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
