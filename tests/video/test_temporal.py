"""Temporal smoothing: unit behaviour, and flicker/IoU on clips generated from real photos."""

from __future__ import annotations

import numpy as np
import pytest

from portraitseg.metrics import mask_iou as iou
from portraitseg.temporal import SmoothingConfig, TemporalSmoother, flicker, lowres_gray
from portraitseg.testclips import Clip, ClipConfig, clip_from_dataset

# Small and short so the model runs ~40 times: still / moving / still, with shake, noise, light.
CLIP = ClipConfig(width=320, height=180, segments=(("still", 15), ("move", 15), ("still", 10)))


@pytest.fixture(scope="module")
def segmenter():
    from portraitseg.inference import Segmenter

    return Segmenter(threads=1)


@pytest.fixture(scope="module")
def real_clip(shared_data) -> Clip:
    """A clip built from vikram_val's second photo (skips without ../shared/data)."""
    return clip_from_dataset(shared_data, 1, CLIP)


def test_static_frame_is_smoothed_and_moving_pixels_follow_the_new_mask() -> None:
    rng = np.random.default_rng(0)
    frame = np.full((32, 32), 100.0, np.float32)
    sm = TemporalSmoother(SmoothingConfig(static_weight=0.2))
    sm.update(np.full((32, 32), 0.5, np.float32), frame)
    noisy = 0.5 + rng.normal(0, 0.1, (32, 32)).astype(np.float32)
    out = sm.update(noisy, frame)
    # Static frame: weight 0.2 -> the deviation shrinks 5x.
    np.testing.assert_allclose(out - 0.5, 0.2 * (noisy - 0.5), atol=1e-5)
    moved = frame.copy()
    moved[:, 16:] = 200.0  # big change on the right half
    new = np.ones((32, 32), np.float32)
    out = sm.update(new, moved)
    assert np.allclose(out[:, 24:], 1.0)  # changed pixels trust the new mask fully
    assert out[:, :8].max() < 0.8  # unchanged pixels keep blending


def test_reset_forgets_history_and_rgb_frames_are_converted() -> None:
    sm = TemporalSmoother()
    rgb = np.zeros((64, 48, 3), np.uint8)
    sm.update(np.zeros((16, 12), np.float32), rgb)
    sm.reset()
    out = sm.update(np.ones((16, 12), np.float32), rgb)
    assert np.all(out == 1.0)
    assert lowres_gray(rgb, (16, 12)).shape == (16, 12)


def test_flicker_counts_only_static_pixels() -> None:
    frames = [np.full((8, 8), 50, np.uint8)] * 3
    gts = [np.zeros((8, 8), np.uint8)] * 3
    steady = [np.full((8, 8), 0.3, np.float32)] * 3
    assert flicker(steady, gts, frames) == 0.0
    wobbly = [np.full((8, 8), v, np.float32) for v in (0.3, 0.5, 0.3)]
    assert flicker(wobbly, gts, frames) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        flicker(steady[:1], gts[:1], frames[:1])
    assert iou(np.ones((4, 4)), np.ones((4, 4))) == 1.0


def test_smoothing_lowers_flicker_and_keeps_moving_iou(real_clip, segmenter) -> None:
    clip = real_clip
    raw = [segmenter.lowres_prob(f) for f in clip.frames]  # the model once; smoothing replays it
    sm = TemporalSmoother()
    results = {}
    for smooth in (False, True):
        sm.reset()
        alphas = []
        for f, p in zip(clip.frames, raw):
            q = sm.update(p, lowres_gray(f, p.shape)) if smooth else p
            alphas.append(segmenter.postprocessor(q, f).copy())
        moving = [iou(a, g) for a, g, m in zip(alphas, clip.masks, clip.moving) if m]
        results[smooth] = (flicker(alphas, clip.masks, clip.frames), float(np.mean(moving)))
    (fl_off, iou_off), (fl_on, iou_on) = results[False], results[True]
    assert fl_on < fl_off * 0.95, results
    # No lag penalty: moving-frame IoU may not drop by more than 1 point (here it even rises).
    assert iou_on >= iou_off - 0.01, results
