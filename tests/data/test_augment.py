"""Batch augmentation: image/target/ignore stay aligned, compositing keeps the person,
determinism per generator seed, output ranges, person boxes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from portraitseg.data.augment import AugmentConfig, BatchAugmenter, person_boxes, resize_batch

S = 64
# Photometric/blur/noise off: they touch the image only, which would break the
# "image channel 0 == target" invariant the alignment test relies on.
NO_PHOTOMETRIC = dict(
    brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, gamma=0.0,
    grayscale_p=0.0, blur_p=0.0, motion_blur_p=0.0, noise_p=0.0,
)  # fmt: skip


def people_batch(b: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 cache-style batch: a tall binary "person" (head + body) at a random place per
    sample; image channel 0 = mask * 255, channels 1-2 random texture; ignore = a box."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    masks = torch.zeros(b, S, S, dtype=torch.uint8)
    for i in range(b):
        cx = int(torch.randint(16, S - 16, (1,), generator=g))
        head = (yy - 14) ** 2 + (xx - cx) ** 2 <= 36
        body = (yy >= 20) & (yy < 60) & ((xx - cx).abs() <= 9 + (yy - 20) // 5)
        masks[i] = (head | body).to(torch.uint8) * 255
    images = torch.randint(0, 256, (b, S, S, 3), generator=g, dtype=torch.uint8)
    images[..., 0] = masks
    ignore = torch.zeros(b, S, S, dtype=torch.uint8)
    ignore[:, 40:56, 4:20] = 1
    return images, masks, ignore


def textures(k: int = 4, seed: int = 1) -> torch.Tensor:
    """Background bank with channel 0 = 0: people-free, so target 0 stays consistent with it."""
    tex = torch.randint(
        0, 256, (k, S, S, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )
    tex[..., 0] = 0
    return tex


def geometric_cfg(**kw) -> AugmentConfig:
    return AugmentConfig(out_size=48, **{**NO_PHOTOMETRIC, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        dict(flip_p=0.5, rotate_deg=30.0, portrait_crop_p=0.0, composite_p=0.0),
        dict(portrait_crop_p=1.0, composite_p=0.0),
        dict(composite_p=1.0, composite_texture_frac=0.5, rotate_deg=20.0, portrait_crop_p=0.5),
    ],
    ids=["rotate-zoom-flip", "portrait-crops", "composite"],
)
def test_image_and_target_stay_aligned(kw: dict) -> None:
    images, masks, ignore = people_batch()
    aug = BatchAugmenter(geometric_cfg(**kw), textures())
    img, tgt, ign = aug(images, masks, ignore, torch.Generator().manual_seed(3))
    assert img.shape == (8, 3, 48, 48) and tgt.shape == ign.shape == (8, 1, 48, 48)
    # Channel 0 was the mask before augmentation: one shared sampling grid keeps it equal.
    diff = (img[:, 0] - tgt[:, 0]).abs()
    assert diff.mean() < 1e-4 and diff.max() < 1e-3
    # ...and the augmentation really moved things (a plain resize would not match).
    plain = resize_batch(images, masks, ignore, 48)[1]
    assert (tgt - plain).abs().mean() > 0.02
    assert 0.02 < tgt.mean() < 0.98


def test_ignore_moves_with_the_image() -> None:
    images, masks, _ = people_batch()
    cfg = geometric_cfg(rotate_deg=25.0, portrait_crop_p=0.3, composite_p=0.0)
    # Ignore = the person itself: after warping it must cover the same pixels as the target.
    img, tgt, ign = BatchAugmenter(cfg)(
        images, masks, (masks > 0).to(torch.uint8), torch.Generator().manual_seed(5)
    )
    disagree = ((tgt > 0.5).float() != ign).float().mean()
    assert disagree < 0.02, disagree  # only the interpolated edge pixels may differ


def test_texture_composite_keeps_the_person_and_its_alpha() -> None:
    images, masks, ignore = people_batch(4)
    # Soft edges: the composite's target must be exactly the original alpha.
    soft = masks.clone()
    soft[(masks == 0) & (torch.roll(masks, 1, dims=2) == 255)] = 128
    bank = textures(3)
    # Identity geometry (no zoom/rotation/shift/flip), compositing always, textures only.
    cfg = geometric_cfg(
        flip_p=0.0, zoom_in_max=1.0, zoom_out_max=1.0, aspect_jitter=0.0, rotate_deg=0.0, translate=0.0,
        portrait_crop_p=0.0, composite_p=1.0, composite_texture_frac=1.0,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, out_size=S)
    img, tgt, ign = BatchAugmenter(cfg, bank)(images, soft, ignore, torch.Generator().manual_seed(0))
    alpha = soft[:, None].float() / 255
    torch.testing.assert_close(tgt, alpha, atol=1e-5, rtol=0)
    person = (alpha == 1).expand(-1, 3, -1, -1)
    src = images.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(img[person], src[person], atol=1e-5, rtol=0)
    # Background pixels are one of the bank's textures, never the original photo.
    bg = (alpha == 0).expand(-1, 3, -1, -1)
    bank_f = bank.permute(0, 3, 1, 2).float() / 255
    for i in range(4):
        errs = [(img[i][bg[i]] - t[bg[i]]).abs().max() for t in bank_f]
        assert min(errs) < 1e-5
        assert (img[i][bg[i]] - src[i][bg[i]]).abs().mean() > 0.1
    # Ignore: the original "uncertain" box survives only where the person is visible.
    assert torch.equal(ign, ignore[:, None].float() * (alpha > 0.02).float())


def test_same_seed_same_batch_different_seed_differs() -> None:
    images, masks, ignore = people_batch()
    aug = BatchAugmenter(AugmentConfig(out_size=48, composite_p=0.5, blur_p=0.5, noise_p=0.5), textures())
    a = aug(images, masks, ignore, torch.Generator().manual_seed(11))
    b = aug(images, masks, ignore, torch.Generator().manual_seed(11))
    c = aug(images, masks, ignore, torch.Generator().manual_seed(12))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_output_ranges_and_dtypes_with_everything_on() -> None:
    images, masks, ignore = people_batch()
    cfg = AugmentConfig(out_size=32, composite_p=0.5, portrait_crop_p=0.5, blur_p=0.4, motion_blur_p=0.4)
    img, tgt, ign = BatchAugmenter(cfg, textures())(images, masks, ignore, torch.Generator().manual_seed(2))
    assert img.dtype == tgt.dtype == ign.dtype == torch.float32
    assert img.shape == (8, 3, 32, 32) and img.is_contiguous()
    assert img.min() >= 0 and img.max() <= 1
    assert tgt.min() >= 0 and tgt.max() <= 1
    assert set(ign.unique().tolist()) <= {0.0, 1.0}


def test_resize_batch_is_the_plain_validation_path() -> None:
    images, masks, ignore = people_batch(2)
    img, tgt, ign = resize_batch(images, masks, ignore, S)  # same size: a pure conversion
    assert torch.equal(img, images.permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(tgt, masks[:, None].float() / 255)
    assert torch.equal(ign, ignore[:, None].float())
    assert resize_batch(images, masks, ignore, 32)[0].shape == (2, 3, 32, 32)


def test_person_boxes_on_known_rectangles() -> None:
    t = torch.zeros(3, 1, 11, 21)
    t[0, 0, 2:6, 4:10] = 1  # rows 2..5, cols 4..9
    t[1, 0, :, :] = 1  # whole frame
    # t[2] empty -> full frame by convention
    boxes = person_boxes(t)
    expected0 = torch.tensor([4 / 20, 2 / 10, 9 / 20, 5 / 10]) * 2 - 1
    torch.testing.assert_close(boxes[0], expected0)
    torch.testing.assert_close(boxes[1], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    torch.testing.assert_close(boxes[2], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    # Soft values below the threshold do not count.
    t2 = torch.zeros(1, 1, 11, 21)
    t2[0, 0, 5, 10] = 0.4
    t2[0, 0, 1, 1] = 0.6
    torch.testing.assert_close(person_boxes(t2)[0], torch.tensor([1 / 20, 1 / 10, 1 / 20, 1 / 10]) * 2 - 1)
