"""Metrics on hand-checkable arrays: confusion with ignore, boundary F1, aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from portraitseg.metrics import (
    Aggregate,
    BoundaryCounts,
    Confusion,
    boundary_counts,
    boundary_f1,
    confusion,
    image_metrics,
    mask_boundary,
)


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_confusion_counts_by_hand_with_ignore() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    truth = np.array([[1, 0, 0], [1, 1, 0]], bool)
    ignore = np.array([[0, 0, 0], [0, 0, 1]], bool)
    c = confusion(pred, truth, ignore)
    # (0,0),(1,1) hit; (0,1) false person; (1,0) missed; (0,2) background; (1,2) ignored.
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert c.pixel_accuracy == pytest.approx(3 / 5)
    assert c.person_iou == pytest.approx(2 / 4)
    assert c.background_iou == pytest.approx(1 / 3)
    assert c.miou == pytest.approx((2 / 4 + 1 / 3) / 2)
    # Without the ignore map the last pixel is a true negative.
    assert confusion(pred, truth).tn == 2


def test_ignore_hides_errors() -> None:
    truth = square(8, 2, 2, 4)
    pred = np.zeros_like(truth)
    assert confusion(pred, truth).person_iou == 0.0
    assert confusion(pred, truth, ignore=truth).person_iou == 1.0  # nothing left to get wrong
    assert confusion(pred, truth, ignore=truth).total == 64 - 16


def test_empty_masks_score_one_and_shape_mismatch_raises() -> None:
    empty = np.zeros((4, 4), bool)
    c = confusion(empty, empty)
    assert (c.person_iou, c.background_iou, c.miou, c.pixel_accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert boundary_f1(empty, empty) == 1.0
    with pytest.raises(ValueError, match="must be equal"):
        confusion(empty, np.zeros((4, 5), bool))


def test_mask_boundary_is_inner_contour_not_frame_edge() -> None:
    b = mask_boundary(square(9, 2, 2, 5))
    assert b.sum() == 4 * (5 - 1)  # ring of the 5x5 square
    assert not b[4, 4]
    assert not mask_boundary(np.ones((6, 6), bool)).any()  # the frame is not a contour


def test_boundary_f1_identical_shifted_and_tolerance() -> None:
    truth = square(512, 100, 100, 200)
    assert boundary_f1(truth, truth) == 1.0
    # 2 px is inside the 3 px tolerance: still perfect.
    assert boundary_f1(np.roll(truth, 2, axis=1), truth) == 1.0
    # 10 px: the vertical edges no longer match, only the horizontal ones do (about half).
    shifted = boundary_counts(np.roll(truth, 10, axis=1), truth)
    assert 0.4 < shifted.f1 < 0.6
    assert shifted.precision == pytest.approx(shifted.recall, abs=0.01)
    # Missing the person entirely: no predicted contour, recall 0.
    assert boundary_f1(np.zeros_like(truth), truth) == 0.0


def test_boundary_measured_at_512_long_side() -> None:
    truth = square(1024, 200, 200, 400)
    # 4 px at 1024 is 2 px at 512: inside the tolerance there.
    assert boundary_f1(np.roll(truth, 4, axis=1), truth) == 1.0
    # 4 px on a 512 image stays 4 px: outside it.
    small = square(512, 100, 100, 200)
    assert boundary_f1(np.roll(small, 4, axis=1), small) < 0.7


def test_boundary_ignores_ignored_pixels() -> None:
    truth = square(512, 100, 100, 200)
    pred = np.roll(truth, 10, axis=1)
    ignore = np.zeros_like(truth)
    ignore[:, 90:120] = True  # left edges
    ignore[:, 290:320] = True  # right edges
    counts = boundary_counts(pred, truth, ignore)
    assert counts.f1 == 1.0
    assert counts.pred_total < boundary_counts(pred, truth).pred_total


def test_contour_inside_ignore_band_still_matches() -> None:
    # VOC-style void band just outside the true contour; the prediction's edge runs inside it.
    truth = square(512, 100, 100, 200)
    pred = np.roll(truth, 2, axis=1)  # right edge at column 301, in the band
    band = np.zeros_like(truth)
    band[:, 300:306] = True
    counts = boundary_counts(pred, truth, band)
    assert counts.true_total == boundary_counts(pred, truth).true_total  # truth contour is valid
    assert counts.recall == 1.0 and counts.f1 == 1.0


def test_boundary_counts_add_and_f1_formula() -> None:
    total = BoundaryCounts(3, 4, 1, 2) + BoundaryCounts(1, 4, 1, 2)
    assert (total.pred_matched, total.pred_total, total.true_matched, total.true_total) == (4, 8, 2, 4)
    assert total.f1 == pytest.approx(0.5)
    assert BoundaryCounts(0, 5, 0, 5).f1 == 0.0


def test_aggregation_over_all_pixels_vs_per_image() -> None:
    big_truth = np.zeros((100, 100), bool)
    big_truth[:, :50] = True  # 5000 person pixels, predicted perfectly
    small_truth = np.zeros((10, 10), bool)
    small_truth[:, :5] = True  # 50 person pixels, all missed
    agg = Aggregate()
    agg.add(image_metrics(big_truth, big_truth))
    agg.add(image_metrics(np.zeros_like(small_truth), small_truth))
    assert agg.n_images == 2
    assert agg.confusion == Confusion(tp=5000, fp=0, fn=50, tn=5050)
    overall, per_image = agg.over_all_pixels(), agg.mean_per_image()
    assert overall["person_iou"] == pytest.approx(5000 / 5050)
    assert per_image["person_iou"] == pytest.approx(0.5)  # 1.0 and 0.0: each image weighs the same
    assert overall["pixel_accuracy"] == pytest.approx(10050 / 10100)
    assert per_image["pixel_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert overall["miou"] == pytest.approx((5000 / 5050 + 5050 / 5100) / 2)
    assert per_image["boundary_f1"] == pytest.approx(0.5)
    assert set(overall) >= {"pixel_accuracy", "person_iou", "background_iou", "miou", "boundary_f1"}


def test_empty_aggregate_is_nan_not_an_error() -> None:
    assert np.isnan(Aggregate().mean_per_image()["miou"])
