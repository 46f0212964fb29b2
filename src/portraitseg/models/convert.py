"""Weight conversions between Mobile-UNet variants (older checkpoints -> today's head)."""

from __future__ import annotations

import torch

from .unet import MobileUNet, MobileUNetConfig

# Bilinear x2 (align_corners=False) followed by a 3x3 conv, seen from the low-res grid (one
# axis): _BILINEAR_X2_TAPS[p, j, k] is the weight that conv tap k (offset k-1 at full res) puts
# on low-res neighbour j (offset j-1) for outputs of phase p (0: even, 1: odd row/column).
# Each full-res pixel is 1/4-3/4 of its two nearest low-res ones.
_BILINEAR_X2_TAPS = torch.tensor([
    [[0.75, 0.25, 0.00], [0.25, 0.75, 0.75], [0.00, 0.00, 0.25]],  # even outputs
    [[0.25, 0.00, 0.00], [0.75, 0.75, 0.25], [0.00, 0.25, 0.75]],  # odd outputs
])
_HEAD_PARTS = ("decoder.final.", "head.")


def _rebuilt(model: MobileUNet, changed: tuple[str, ...], **config) -> MobileUNet:
    """A new eval-mode model with ``config`` changed, holding ``model``'s weights everywhere but
    under the ``changed`` key prefixes (the caller fills those)."""
    new = MobileUNet(MobileUNetConfig(**{**model.config.to_dict(), **config})).eval()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(changed)}
    missing, _ = new.load_state_dict(own, strict=False)
    assert all(k.startswith(changed) for k in missing), missing
    return new


@torch.no_grad()
def to_subpixel_head(model: MobileUNet) -> MobileUNet:
    """A copy of a bilinear ``head="upsample"`` model with the equivalent sub-pixel head.

    Exact for everything but ReLU6, which moves from after the bilinear upsampling to before
    it (the BatchNorm folds into the 1x1 conv, and bilinear-then-3x3-conv is one 3x3 conv per
    output phase at low resolution); plus the outermost two rows and columns, where the
    upsampling clamped at the border and the zero padding now happens at low resolution.
    On the bundled model: mIoU within 0.001 on every validation set (MODEL_CARD.md).
    """
    cfg = model.config
    if cfg.head != "upsample" or cfg.decoder != "bilinear" or cfg.head_kernel != 3:
        raise ValueError(f"only bilinear models with the 3x3 upsample head convert (got head={cfg.head!r}, "
                         f"decoder={cfg.decoder!r}, head_kernel={cfg.head_kernel})")
    new = _rebuilt(model, _HEAD_PARTS, head="subpixel")
    up, conv1, bn1 = model.decoder.final, new.decoder.final[0], new.decoder.final[1]
    conv1.weight.copy_(up.conv.weight)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn1, name).copy_(getattr(up.bn, name))
    bn1.eps = up.bn.eps
    taps = _BILINEAR_X2_TAPS.to(model.head.weight)
    # (phase_y, phase_x, in_ch, 3, 3) -> PixelShuffle's channel order phase_y * 2 + phase_x.
    w = torch.einsum("yak,xbl,ckl->yxcab", taps, taps, model.head.weight[0])
    new.head.weight.copy_(w.reshape(new.head.weight.shape))
    new.head.bias.copy_(model.head.bias.expand(4))
    return new


@torch.no_grad()
def to_head_kernel(model: MobileUNet, kernel: int) -> MobileUNet:
    """A copy of ``model`` whose head conv has a ``kernel`` x ``kernel`` window, as a warm start.

    Shrinking keeps the centre taps and adds the dropped taps' weights onto them (right for a
    feature map that is locally constant, which is what the head mostly sees away from edges);
    growing zero-pads around the old taps (exact). Not exact when shrinking: fine-tune after.
    """
    old = model.head.weight
    k_old = old.shape[-1]
    new = _rebuilt(model, ("head.",), head_kernel=kernel)
    if kernel <= k_old:
        lo = (k_old - kernel) // 2
        w = old[..., lo:lo + kernel, lo:lo + kernel].clone()
        w[..., kernel // 2, kernel // 2] += old.sum(dim=(-2, -1)) - w.sum(dim=(-2, -1))
    else:
        pad = (kernel - k_old) // 2
        w = torch.nn.functional.pad(old, (pad, pad, pad, pad))
    new.head.weight.copy_(w)
    new.head.bias.copy_(model.head.bias)
    return new
