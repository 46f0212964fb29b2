"""Validation pass: loss and the confusion-based metrics of :mod:`portraitseg.metrics`."""

from __future__ import annotations

import torch
from torch import nn

from ..data.augment import resize_batch
from ..losses import segmentation_loss
from ..metrics import Confusion, batch_confusion
from .data import Tensors
from .precision import autocast_context


@torch.no_grad()
def validate(
    model: nn.Module,
    data: Tensors,
    batch_size: int,
    input_size: int,
    loss_weights: tuple[float, float],
    amp: bool,
    channels_last: bool,
) -> dict[str, float]:
    """``val_loss`` (sample mean), ``val_acc`` and ``val_miou`` over all valid pixels.

    ``loss_weights`` = (dice, boundary) as in training. ``amp``: bf16 autocast (as in training).
    """
    model.eval()
    images, targets, ignore = data
    device = images.device
    loss_sum, n = 0.0, 0
    counts = Confusion()
    for s in range(0, len(images), batch_size):
        batch = slice(s, s + batch_size)
        x, y, ign = resize_batch(images[batch], targets[batch], ignore[batch], input_size)
        with autocast_context(device, amp):
            logits = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        loss = segmentation_loss(logits, y, ign, *loss_weights)
        loss_sum += float(loss) * len(x)
        n += len(x)
        counts = counts + batch_confusion(logits.float() > 0, y > 0.5, ign < 0.5)
    return {
        "val_loss": loss_sum / max(1, n),
        "val_acc": counts.pixel_accuracy,
        "val_miou": counts.miou,
    }
