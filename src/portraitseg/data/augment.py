"""Batch augmentation in PyTorch: runs on the GPU when training there (and on CPU in tests).

Every geometric step moves image, target and ignore map with one sampling grid, so they stay
aligned by construction. Photometric steps touch the image only.

Synthetic backgrounds (the original project's "random backgrounds"): the person is composited
onto a texture or onto another training photo using its (soft) mask; the new target is
``a + (1 - a) * target_of_background`` so people already in the background photo stay people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..defaults import INPUT_SIZE


@dataclass
class AugmentConfig:
    out_size: int = INPUT_SIZE
    flip_p: float = 0.5
    zoom_in_max: float = 1.8  # crop covers down to 1/1.8 of the side
    zoom_out_max: float = 1.35  # or up to 1.35x the side (content shrinks, borders reflect)
    aspect_jitter: float = 0.25  # log-uniform x/y stretch: images of any aspect get stretched at inference
    rotate_deg: float = 12.0
    translate: float = 0.12
    portrait_crop_p: float = 0.25  # head-and-shoulders framing cut from bigger shots
    composite_p: float = 0.35
    composite_texture_frac: float = 0.4  # share of composites on textures (rest: other photos)
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.4
    hue: float = 0.06  # radians / pi of chroma rotation
    gamma: float = 0.25
    grayscale_p: float = 0.03
    blur_p: float = 0.15
    motion_blur_p: float = 0.1
    noise_p: float = 0.2
    noise_std: float = 0.03


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def _coin(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def composite_batch(
    image: torch.Tensor,
    target: torch.Tensor,
    ignore: torch.Tensor,
    bg: torch.Tensor,
    bg_target: torch.Tensor,
    bg_ignore: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put the person of ``image`` (alpha = ``target``) onto ``bg`` where ``mask`` (B,) is True."""
    a = target
    m = mask.view(-1, 1, 1, 1).to(image.dtype)
    new_image = a * image + (1 - a) * bg
    new_target = a + (1 - a) * bg_target
    # Keep each side's "uncertain" pixels only where that side is still visible.
    new_ignore = torch.maximum(ignore * (a > 0.02), bg_ignore * (a < 0.98)).to(ignore.dtype)
    return (
        m * new_image + (1 - m) * image,
        m * new_target + (1 - m) * target,
        torch.where(m > 0, new_ignore, ignore),
    )


def person_boxes(target: torch.Tensor, thresh: float = 0.5) -> torch.Tensor:
    """(B,1,H,W) -> (B,4) normalised [x0, y0, x1, y1] in [-1, 1]; empty masks give the full frame."""
    b, _, h, w = target.shape
    fg = target[:, 0] > thresh
    rows, cols = fg.any(dim=2), fg.any(dim=1)
    ys = torch.arange(h, device=target.device).expand(b, h)
    xs = torch.arange(w, device=target.device).expand(b, w)
    big = torch.tensor(10**6, device=target.device)
    y0 = torch.where(rows, ys, big).amin(1).clamp(max=h - 1)
    y1 = torch.where(rows, ys, -big).amax(1).clamp(min=0)
    x0 = torch.where(cols, xs, big).amin(1).clamp(max=w - 1)
    x1 = torch.where(cols, xs, -big).amax(1).clamp(min=0)
    empty = ~rows.any(1)
    box = torch.stack([x0 / (w - 1), y0 / (h - 1), x1 / (w - 1), y1 / (h - 1)], 1).float() * 2 - 1
    full = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=target.device)
    return torch.where(empty[:, None], full, box)


def affine_params(target: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random (B,2,3) sampling matrices: output coords -> input coords (normalised)."""
    b, dev = target.shape[0], target.device
    # Scale s = fraction of the input side seen by the output (s < 1 zooms in).
    log_s = _uniform(b, -math.log(cfg.zoom_in_max), math.log(cfg.zoom_out_max), gen, dev)
    aspect = _uniform(b, -cfg.aspect_jitter, cfg.aspect_jitter, gen, dev)
    sx, sy = torch.exp(log_s + aspect / 2), torch.exp(log_s - aspect / 2)
    angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen, dev) * math.pi / 180
    # Zoomed-in crops may move anywhere inside the frame; others jitter a little.
    tx = _uniform(b, -1, 1, gen, dev) * ((1 - sx).clamp(min=0) + cfg.translate)
    ty = _uniform(b, -1, 1, gen, dev) * ((1 - sy).clamp(min=0) + cfg.translate)

    portrait = _coin(b, cfg.portrait_crop_p, gen, dev)
    if portrait.any():
        box = person_boxes(target)
        bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        tall = bh > 0.6  # only frames with a large person can yield head-and-shoulders crops
        portrait = portrait & tall
        side = (bh * _uniform(b, 0.22, 0.4, gen, dev)).clamp(min=0.25)
        p_tx = (box[:, 0] + box[:, 2]) / 2 + bw * _uniform(b, -0.1, 0.1, gen, dev)
        p_ty = box[:, 1] + side * _uniform(b, 0.7, 1.0, gen, dev)
        sx = torch.where(portrait, side * torch.exp(aspect / 2), sx)
        sy = torch.where(portrait, side * torch.exp(-aspect / 2), sy)
        tx, ty = torch.where(portrait, p_tx, tx), torch.where(portrait, p_ty, ty)

    flip = torch.where(_coin(b, cfg.flip_p, gen, dev), -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([sx * cos * flip, -sy * sin, tx], 1),
            torch.stack([sx * sin * flip, sy * cos, ty], 1),
        ],
        1,
    )
    return theta


def warp(
    image: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor, theta: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grid = F.affine_grid(theta, [image.shape[0], 1, size, size], align_corners=False)
    stacked = torch.cat([image, target], 1)
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    ign = F.grid_sample(ignore, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return out[:, :3], out[:, 3:], ign


_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_INV = torch.linalg.inv(_YIQ).float()  # once, on the CPU: a batched GPU inverse costs a solver call
_YIQ = _YIQ.float()


def photometric(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b, dev = image.shape[0], image.device
    view = (b, 1, 1, 1)
    image = image * _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, gen, dev).view(view)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, gen, dev).view(view) + mean
    # Hue and saturation together: rotate and scale the chroma plane in YIQ space.
    yiq = _YIQ.to(dev, image.dtype)
    h = _uniform(b, -cfg.hue, cfg.hue, gen, dev) * math.pi
    s = _uniform(b, 1 - cfg.saturation, 1 + cfg.saturation, gen, dev)
    s = torch.where(_coin(b, cfg.grayscale_p, gen, dev), torch.zeros_like(s), s)
    rot = torch.zeros(b, 3, 3, device=dev, dtype=image.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = s * torch.cos(h), -s * torch.sin(h)
    rot[:, 2, 1], rot[:, 2, 2] = s * torch.sin(h), s * torch.cos(h)
    mat = _YIQ_INV.to(dev, image.dtype) @ rot @ yiq
    image = torch.einsum("bij,bjhw->bihw", mat, image).clamp(0, 1)
    gamma = torch.exp(_uniform(b, -cfg.gamma, cfg.gamma, gen, dev)).view(view)
    return image.clamp_min(1e-6) ** gamma


def _gaussian_kernels(sigma: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.arange(k, device=sigma.device, dtype=sigma.dtype) - k // 2
    g = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None] ** 2))
    g = g / g.sum(1, keepdim=True)
    return g[:, :, None] * g[:, None, :]  # (B,k,k)


def _motion_kernels(length: torch.Tensor, angle: torch.Tensor, k: int) -> torch.Tensor:
    r = torch.arange(k, device=length.device, dtype=length.dtype) - k // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along = xx * cos + yy * sin
    across = -xx * sin + yy * cos
    ker = ((across.abs() <= 0.5) & (along.abs() <= length[:, None, None] / 2)).to(length.dtype)
    return ker / ker.sum((1, 2), keepdim=True).clamp_min(1)


def blur_batch(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, k: int = 9) -> torch.Tensor:
    """Per-sample Gaussian or motion blur as one grouped convolution (identity where unused)."""
    b, c, h, w = image.shape
    dev = image.device
    gauss = _gaussian_kernels(_uniform(b, 0.6, 2.0, gen, dev), k)
    motion = _motion_kernels(_uniform(b, 3, k, gen, dev), _uniform(b, 0, math.pi, gen, dev), k)
    choice = torch.rand(b, generator=gen, device=dev)
    use_g = choice < cfg.blur_p
    use_m = (choice >= cfg.blur_p) & (choice < cfg.blur_p + cfg.motion_blur_p)
    kernels = torch.where(use_g.view(b, 1, 1), gauss, motion)
    # Convolve only the selected samples: a grouped conv over the whole batch costs ~5x more.
    sel = torch.nonzero(use_g | use_m).flatten()
    n = int(sel.numel())
    if n == 0:
        return image
    weight = kernels[sel].repeat_interleave(c, 0)[:, None]  # (n*C,1,k,k)
    x = F.pad(image[sel].reshape(1, n * c, h, w), [k // 2] * 4, mode="reflect")
    out = image.clone()
    out[sel] = F.conv2d(x, weight, groups=n * c).view(n, c, h, w)
    return out


def noise(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    b, dev = image.shape[0], image.device
    std = _uniform(b, 0, cfg.noise_std, gen, dev) * _coin(b, cfg.noise_p, gen, dev)
    n = torch.randn(image.shape, generator=gen, device=dev, dtype=image.dtype)
    return (image + n * std.view(b, 1, 1, 1)).clamp(0, 1)


class BatchAugmenter:
    """Turns a batch of cached uint8 samples into augmented float tensors on their device."""

    def __init__(
        self,
        cfg: AugmentConfig,
        backgrounds: torch.Tensor | None = None,
        background_probs: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg
        self.backgrounds = backgrounds  # (K,S,S,3) uint8 on the training device, or None
        # (K,) draw probabilities (e.g. real scenes as often as textures though fewer); None = uniform.
        self.background_probs = background_probs

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 (B,S,S,3), (B,S,S), (B,S,S) -> float image (B,3,O,O) in [0,1], target, ignore."""
        cfg = self.cfg
        img = images.permute(0, 3, 1, 2).float() / 255
        tgt = targets[:, None].float() / 255
        ign = ignore[:, None].float()
        img, tgt, ign = self._composite(img, tgt, ign, gen)
        theta = affine_params(tgt, cfg, gen)
        img, tgt, ign = warp(img, tgt, ign, theta, cfg.out_size)
        img = photometric(img, cfg, gen)
        img = blur_batch(img, cfg, gen)
        img = noise(img, cfg, gen)
        return img.contiguous(), tgt.clamp(0, 1), (ign > 0.5).float()

    def _composite(self, img, tgt, ign, gen):
        cfg = self.cfg
        b, dev = img.shape[0], img.device
        use = _coin(b, cfg.composite_p, gen, dev)
        if not use.any():
            return img, tgt, ign
        # Background = another photo of the batch (with its own people kept as people)...
        perm = torch.roll(torch.arange(b, device=dev), 1)
        bg, bg_t, bg_i = img[perm].flip(3), tgt[perm].flip(3), ign[perm].flip(3)
        if self.backgrounds is not None and len(self.backgrounds) > 0:
            # ... or a texture, which has no people at all.
            if self.background_probs is None:
                idx = torch.randint(len(self.backgrounds), (b,), generator=gen, device=dev)
            else:
                idx = torch.multinomial(self.background_probs, b, replacement=True, generator=gen)
            tex = self.backgrounds[idx].permute(0, 3, 1, 2).float() / 255
            if tex.shape[-1] != img.shape[-1]:
                tex = F.interpolate(tex, size=img.shape[-2:], mode="bilinear", align_corners=False)
            use_tex = _coin(b, cfg.composite_texture_frac, gen, dev).view(b, 1, 1, 1)
            bg = torch.where(use_tex, tex, bg)
            bg_t = torch.where(use_tex, torch.zeros_like(bg_t), bg_t)
            bg_i = torch.where(use_tex, torch.zeros_like(bg_i), bg_i)
        return composite_batch(img, tgt, ign, bg, bg_t, bg_i, use)


def resize_batch(
    images: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validation path: uint8 cache batch -> float tensors at ``size``, no augmentation."""
    img = images.permute(0, 3, 1, 2).float() / 255
    tgt = targets[:, None].float() / 255
    ign = ignore[:, None].float()
    if img.shape[-1] != size:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        tgt = F.interpolate(tgt, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        ign = F.interpolate(ign, size=(size, size), mode="nearest")
    return img, tgt, ign
