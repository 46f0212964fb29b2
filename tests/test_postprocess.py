"""Post-processing ops on synthetic patterns with known answers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg import postprocess as pp


def _block(h: int = 40, w: int = 40, box: tuple[int, int, int, int] = (10, 10, 30, 30)) -> np.ndarray:
    a = np.zeros((h, w), np.float32)
    y0, x0, y1, x1 = box
    a[y0:y1, x0:x1] = 1.0
    return a


# --------------------------------------------------------------------------- smoothstep


def test_smoothstep_values() -> None:
    x = np.array([0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9], np.float32)
    got = pp.smoothstep(x, 0.3, 0.7)
    # below edge0 -> 0, edge0 -> 0, t=0.25 -> 3/16 - 2/64, midpoint -> 0.5, edge1 -> 1, above -> 1
    expected = np.array([0.0, 0.0, 0.0, 0.15625, 0.5, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError):
        pp.smoothstep(x, 0.7, 0.3)


# --------------------------------------------------------------------------- morphology


def test_open_removes_one_pixel_speck_and_keeps_the_blob() -> None:
    a = _block()
    a[3, 3] = 1.0  # isolated speck
    out = pp.morph_open(a, 3)
    assert out[3, 3] == 0.0
    np.testing.assert_array_equal(out[11:29, 11:29], 1.0)  # blob interior untouched
    assert out[:, :9].max() == 0.0 and out[:9, :].max() == 0.0


def test_close_fills_one_pixel_hole_exactly() -> None:
    expected = _block()
    a = expected.copy()
    a[20, 20] = 0.0
    np.testing.assert_array_equal(pp.morph_close(a, 3), expected)


def test_open_close_keep_soft_values() -> None:
    a = np.full((20, 20), 0.4, np.float32)
    np.testing.assert_allclose(pp.morph_open(a, 5), 0.4)
    np.testing.assert_allclose(pp.morph_close(a, 5), 0.4)


# --------------------------------------------------------------------------- components


def test_keep_largest_keeps_only_the_big_blob() -> None:
    a = np.zeros((100, 100), np.float32)
    a[10:60, 10:60] = 0.9  # person, 2500 px
    a[80:85, 80:85] = 1.0  # 25 px blob
    a[5, 90] = 1.0  # speck
    expected = np.zeros_like(a)
    expected[10:60, 10:60] = 0.9
    np.testing.assert_array_equal(pp.keep_largest(a, fraction=0.25, margin=0), expected)


def test_keep_largest_keeps_similar_sized_people_and_the_soft_fringe() -> None:
    a = np.zeros((100, 120), np.float32)
    a[10:50, 10:50] = 1.0  # 1600 px
    a[10:48, 70:110] = 1.0  # 1520 px: a second person, kept at fraction 0.25
    a[10:50, 50] = 0.3  # soft edge next to the first person (below threshold)
    a[90:93, 5:8] = 1.0  # 9 px clutter
    a[95, 100] = 0.3  # faint stray pixel far from anyone
    out = pp.keep_largest(a, fraction=0.25, threshold=0.5, margin=2)
    np.testing.assert_array_equal(out[10:50, 10:50], 1.0)
    np.testing.assert_array_equal(out[10:48, 70:110], 1.0)
    np.testing.assert_array_equal(out[10:50, 50], np.float32(0.3))
    assert out[90:93, 5:8].max() == 0.0 and out[95, 100] == 0.0


def test_keep_largest_empty_mask() -> None:
    a = np.full((10, 10), 0.2, np.float32)
    np.testing.assert_array_equal(pp.keep_largest(a), 0.0)


# --------------------------------------------------------------------------- guided filter


def _step_scene(h: int = 256, w: int = 256, edge: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Person (bright) left of column ``edge``, background (dark) right; truth mask."""
    img = np.full((h, w, 3), 50, np.uint8)
    img[:, :edge] = 200
    truth = np.zeros((h, w), np.float32)
    truth[:, :edge] = 1.0
    return img, truth


def test_guided_upsample_snaps_to_the_image_edge_better_than_bilinear() -> None:
    img, truth = _step_scene()
    low = cv2.resize(truth, (32, 32), interpolation=cv2.INTER_AREA)  # a model-sized soft mask
    band = slice(101 - 12, 101 + 12)  # columns around the edge, where upsampling errs
    bilinear = pp.upsample(low, truth.shape)
    guided = pp.guided_upsample(low, img, radius=2, eps=1e-3)
    err_bilinear = np.abs(bilinear - truth)[:, band].mean()
    err_guided = np.abs(guided - truth)[:, band].mean()
    assert err_bilinear > 0.05  # bilinear leaves an 8 px ramp
    assert err_guided < 0.25 * err_bilinear
    assert guided.dtype == np.float32 and guided.shape == truth.shape
    assert 0.0 <= guided.min() and guided.max() <= 1.0


def test_fast_guided_filter_sharpens_a_blurred_mask_along_the_guide() -> None:
    img, truth = _step_scene()
    soft = cv2.GaussianBlur(truth, (0, 0), 4)
    out = pp.fast_guided_filter(img, soft, radius=16, eps=1e-4, scale=4)
    band = slice(101 - 12, 101 + 12)
    # Within a window the fit is linear in the guide, so across the guide's step the output
    # jumps: the blurred ramp becomes a step at the right column, with soft-ish plateaus.
    assert np.abs(out - truth)[:, band].mean() < 0.5 * np.abs(soft - truth)[:, band].mean()
    jump, blurred_jump = out[:, 100] - out[:, 101], soft[:, 100] - soft[:, 101]
    assert (jump > 0.5).all() and (jump > 5 * blurred_jump).all()


def test_guided_filter_on_flat_guide_is_smoothing_not_amplifying() -> None:
    """With no image structure (var = 0) a -> 0 and q -> local mean of the source."""
    flat = np.full((64, 64, 3), 128, np.uint8)
    src = np.zeros((64, 64), np.float32)
    src[:, 32:] = 1.0
    out = pp.fast_guided_filter(flat, src, radius=4, eps=1e-3, scale=2)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[:, :20], 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:, 44:], 1.0, atol=1e-4)


# --------------------------------------------------------------------------- compositing


def test_composite_colour_exact_where_alpha_is_0_or_1() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    alpha = np.zeros((36, 64), np.float32)
    alpha[:, :32] = 1.0
    alpha[:, 40] = 0.5
    out = pp.composite(img, alpha, (10, 200, 30))
    np.testing.assert_array_equal(out[:, :32], img[:, :32])
    colour = np.broadcast_to(np.array([10, 200, 30], np.uint8), (36, 8, 3))
    np.testing.assert_array_equal(out[:, 32:40], colour)
    # Alpha 0.5 is 128/255 in 8 bits; the blend is within 1 grey level of the exact one.
    a8 = 128.0
    exact = (img[:, 40].astype(np.float64) * a8 + np.array([10, 200, 30]) * (255 - a8)) / 255
    assert np.abs(out[:, 40] - exact).max() <= 1.0


def test_composite_is_within_one_grey_level_of_the_exact_blend() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    alpha = rng.random((64, 96)).astype(np.float32)
    out = pp.composite(img, alpha, bg).astype(np.float64)
    a8 = np.rint(alpha * 255.0)[..., None]
    exact = (img * a8 + bg * (255.0 - a8)) / 255.0
    err = np.abs(out - exact)
    assert err.max() <= 1.0
    assert err.mean() < 0.5  # rounding, not a bias


def test_composite_image_background_covers_and_blur_keeps_shape() -> None:
    img = np.full((30, 60, 3), 255, np.uint8)
    bg = np.zeros((40, 40, 3), np.uint8)
    bg[:, :20] = (255, 0, 0)
    bg[:, 20:] = (0, 0, 255)
    alpha = np.zeros((30, 60), np.float32)
    out = pp.composite(img, alpha, bg)
    expected = pp.resize_cover(bg, (30, 60))
    assert expected.shape == (30, 60, 3)
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[15, 2]) == (255, 0, 0) and tuple(out[15, 57]) == (0, 0, 255)
    blurred = pp.composite(img, alpha, "blur")
    assert blurred.shape == img.shape and blurred.dtype == np.uint8
    with pytest.raises(ValueError):
        pp.composite(img, alpha, "sepia")


def test_cutout_alpha_channel_is_alpha_times_255() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = rng.random((20, 30)).astype(np.float32)
    alpha[0, :5] = [0.0, 1.0, 0.5, 1.2, -0.1]
    rgba = pp.cutout(img, alpha)
    assert rgba.shape == (20, 30, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], img)
    np.testing.assert_array_equal(rgba[..., 3], np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8))
    assert list(rgba[0, :5, 3]) == [0, 255, 128, 255, 0]


# --------------------------------------------------------------------------- pipeline / workspace


def test_apply_pipeline_removes_clutter_and_returns_image_sized_alpha() -> None:
    img, _ = _step_scene(180, 320, edge=160)
    low = np.zeros((56, 56), np.float32)
    low[10:56, 8:28] = 1.0  # person on the left half
    low[5, 50] = 1.0  # one-pixel false positive
    cfg = pp.PostprocessConfig(guided=True, keep_largest=True, open_size=3, close_size=3, blur_size=5,
                               smoothstep=(0.2, 0.8))
    alpha = pp.apply(low, img, cfg)
    assert alpha.shape == (180, 320) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert alpha[:30, 260:].max() == 0.0  # the speck's area (low-res (5, 50) -> ~(16, 285))
    assert alpha[120, 80] == pytest.approx(1.0)


def test_workspace_reuses_buffers_and_never_aliases_inputs() -> None:
    a = _block()
    a[20, 20] = 0.0
    ws = pp.Workspace()
    first = pp.morph_close(a, 3, ws)
    again = pp.morph_close(a, 3, ws)
    assert again is first  # same buffer: no per-frame allocation
    chained = pp.morph_close(pp.morph_close(a, 3, ws), 3, ws)  # input is the ws buffer
    np.testing.assert_array_equal(chained, pp.morph_close(pp.morph_close(a, 3), 3))
    post = pp.Postprocessor(pp.PostprocessConfig(guided=False, blur_size=3))
    img = np.zeros((40, 40, 3), np.uint8)
    np.testing.assert_array_equal(post(a, img), pp.apply(a, img, post.cfg))


@pytest.mark.parametrize("field, value", [("blur_size", 4), ("open_size", -1), ("smoothstep", (0.8, 0.2)),
                                          ("component_fraction", 0.0)])
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        pp.PostprocessConfig(**{field: value}).validate()


def _full_frame_blend(image: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """The blend over the whole frame, as composite did before it blended only the person's box."""
    a8 = cv2.convertScaleAbs(alpha.astype(np.float32), alpha=255.0)
    a3 = cv2.cvtColor(a8, cv2.COLOR_GRAY2RGB)
    fg = cv2.multiply(image, a3, scale=1.0 / 255.0)
    return cv2.add(cv2.multiply(bg, cv2.bitwise_not(a3), scale=1.0 / 255.0), fg)


@pytest.mark.parametrize("case", ["none", "all", "box", "noise", "corner"])
def test_composite_blends_only_the_persons_box_with_the_same_result(case: str) -> None:
    photo = Path(pp.__file__).parent / "assets" / "astronaut.jpg"
    image = cv2.cvtColor(cv2.resize(cv2.imread(str(photo)), (320, 180)), cv2.COLOR_BGR2RGB)
    bg = np.ascontiguousarray(image[::-1, ::-1])
    rng = np.random.default_rng(3)
    alpha = np.zeros((180, 320), np.float32)
    if case == "all":
        alpha[:] = 1.0
    elif case == "box":
        alpha[40:150, 100:230] = rng.random((110, 130))
    elif case == "noise":
        alpha[:] = rng.random((180, 320)) * (rng.random((180, 320)) > 0.5)
    elif case == "corner":
        alpha[-1, -1] = 0.5
    ws = pp.Workspace()
    for _ in range(2):  # a reused workspace gives the same
        out = pp.composite(image, alpha, bg, ws)
        np.testing.assert_array_equal(out, _full_frame_blend(image, alpha, bg))
    green = pp.colour_background(image.shape, (10, 200, 30))
    expected = _full_frame_blend(image, alpha, green)
    np.testing.assert_array_equal(pp.composite(image, alpha, (10, 200, 30)), expected)
