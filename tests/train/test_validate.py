"""Validation through metrics: batch_confusion equals the per-image confusion, and validate()
gives the numbers of the loop it replaced (tp/fp/fn/tn summed over the set)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from portraitseg.data.augment import resize_batch
from portraitseg.losses import segmentation_loss
from portraitseg.metrics import Confusion, batch_confusion, confusion
from portraitseg.models import create_model
from portraitseg.train.validate import validate

pytestmark = pytest.mark.usefixtures("torch_threads")


def test_batch_confusion_is_the_sum_of_per_image_confusions() -> None:
    rng = np.random.default_rng(0)
    pred, truth, ignore = (rng.random((3, 1, 9, 7)) > p for p in (0.5, 0.4, 0.8))
    per_image = sum((confusion(pred[i, 0], truth[i, 0], ignore[i, 0]) for i in range(3)), Confusion())
    assert batch_confusion(pred, truth, ~ignore) == per_image
    t = [torch.from_numpy(a) for a in (pred, truth, ~ignore)]
    assert batch_confusion(*t) == per_image


def _old_validate(model, images, targets, ignore, batch_size, size):
    """The loop Trainer.validate used to run (reference)."""
    tot, n = 0.0, 0
    tp = fp = fn = tn = 0.0
    for s in range(0, len(images), batch_size):
        x, y, ign = resize_batch(images[s : s + batch_size], targets[s : s + batch_size],
                                 ignore[s : s + batch_size], size)
        logits = model(x)
        tot += float(segmentation_loss(logits, y, ign, 0.5, 2.0)) * len(x)
        n += len(x)
        valid = ign < 0.5
        pred, truth = logits.float() > 0, y > 0.5
        tp += float((pred & truth & valid).sum())
        fp += float((pred & ~truth & valid).sum())
        fn += float((~pred & truth & valid).sum())
        tn += float((~pred & ~truth & valid).sum())
    person, bg = tp / max(1.0, tp + fp + fn), tn / max(1.0, tn + fp + fn)
    return {"val_loss": tot / n, "val_acc": (tp + tn) / (tp + fp + fn + tn), "val_miou": (person + bg) / 2}


def test_validate_matches_the_old_loop() -> None:
    torch.manual_seed(0)
    model = create_model("mobile-unet-035-bilinear").eval()
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(5, 48, 48, 3, generator=gen) * 255).to(torch.uint8)
    targets = (torch.rand(5, 48, 48, generator=gen) * 255).to(torch.uint8)
    ignore = (torch.rand(5, 48, 48, generator=gen) > 0.9).to(torch.uint8)
    with torch.no_grad():
        ref = _old_validate(model, images, targets, ignore, 2, 64)
    got = validate(model, (images, targets, ignore), 2, 64, (0.5, 2.0), amp=False, channels_last=False)
    assert got == pytest.approx(ref, rel=1e-6)
