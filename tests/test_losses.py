"""Segmentation loss: near zero for perfect logits, ignore pixels excluded, boundary weighting."""

from __future__ import annotations

import torch

from portraitseg.losses import boundary_band, segmentation_loss


def square_target(n: int = 2, size: int = 32) -> torch.Tensor:
    t = torch.zeros(n, 1, size, size)
    t[:, :, 8:24, 8:24] = 1
    return t


def test_perfect_logits_give_small_loss_and_wrong_ones_large() -> None:
    t = square_target()
    perfect = (t * 2 - 1) * 20
    assert segmentation_loss(perfect, t) < 1e-3
    assert segmentation_loss(-perfect, t) > 10
    assert segmentation_loss(torch.zeros_like(t), t) > segmentation_loss(perfect, t)


def test_soft_targets_are_minimised_at_their_own_probability() -> None:
    t = torch.full((1, 1, 8, 8), 0.3)
    best = torch.logit(t)
    for delta in (-0.5, 0.5):
        assert segmentation_loss(best, t, dice_weight=0) < segmentation_loss(best + delta, t, dice_weight=0)


def test_ignored_pixels_do_not_contribute() -> None:
    t = square_target()
    logits = (t * 2 - 1) * 20
    wrong = logits.clone()
    ignore = torch.zeros_like(t)
    ignore[:, :, 0:4, :] = 1
    wrong[:, :, 0:4, :] = 20  # confidently wrong, but only inside the ignored band
    base = segmentation_loss(logits, t, ignore, boundary_weight=2.0)
    torch.testing.assert_close(segmentation_loss(wrong, t, ignore, boundary_weight=2.0), base)
    assert segmentation_loss(wrong, t, None, boundary_weight=2.0) > base + 1


def test_everything_ignored_is_finite() -> None:
    t = square_target()
    loss = segmentation_loss(torch.randn_like(t), t, torch.ones_like(t))
    assert torch.isfinite(loss)


def test_boundary_weight_increases_loss_of_edge_errors_only() -> None:
    t = square_target()
    good = (t * 2 - 1) * 10
    edge_err = good.clone()
    edge_err[:, :, 8, 8:24] = -10  # the square's top row wrong
    inner_err = good.clone()
    inner_err[:, :, 16, 8:24] = -10  # a row in the middle of the square: far from any edge
    kw = dict(dice_weight=0.0)
    assert segmentation_loss(edge_err, t, boundary_weight=4.0, **kw) > segmentation_loss(edge_err, t, **kw)
    # Inside errors are diluted by the extra edge weight in the normaliser, never amplified.
    assert segmentation_loss(inner_err, t, boundary_weight=4.0, **kw) <= segmentation_loss(inner_err, t, **kw)


def test_boundary_band_marks_edges() -> None:
    band = boundary_band(square_target(1), width=5)
    # The square's top edge lies between rows 7 and 8; a 5-px window reaches 2 rows either way.
    assert band[0, 0, 6:10, 16].tolist() == [1, 1, 1, 1]
    assert band[0, 0, 5, 16] == 0 and band[0, 0, 10, 16] == 0
    assert band[0, 0, 16, 16] == 0 and band[0, 0, 0, 0] == 0
