"""Segmentation losses: BCE (soft targets allowed) + Dice, with an optional boundary weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_band(target: torch.Tensor, width: int = 5) -> torch.Tensor:
    """1 where a ``width``-px window around the pixel sees both classes (soft edges count too)."""
    pad = width // 2
    dil = F.max_pool2d(target, width, 1, pad)
    ero = -F.max_pool2d(-target, width, 1, pad)
    return ((dil - ero) > 0.05).to(target.dtype)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    boundary_weight: float = 0.0,
) -> torch.Tensor:
    """Mean BCE over valid pixels (x (1 + boundary_weight) on edges) + dice_weight * soft Dice."""
    logits = logits.float()
    valid = torch.ones_like(target) if ignore is None else 1.0 - ignore
    weight = valid
    if boundary_weight > 0:
        weight = valid * (1.0 + boundary_weight * boundary_band(target))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = (bce * weight).sum() / weight.sum().clamp_min(1.0)
    if dice_weight > 0:
        prob = torch.sigmoid(logits) * valid
        t = target * valid
        inter = (prob * t).sum(dim=(1, 2, 3))
        denom = prob.sum(dim=(1, 2, 3)) + t.sum(dim=(1, 2, 3))
        dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
        loss = loss + dice_weight * dice.mean()
    return loss
