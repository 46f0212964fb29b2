"""U-Net decoder: from the encoder's multi-scale features to one feature map at stride 1 or 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, SeparableConv, make_divisible

UPSAMPLE_MODES = ("transpose", "bilinear")


class Upsample2x(nn.Module):
    """x2 upsampling: a learned stride-2 transposed conv, or bilinear resize + 1x1 conv.

    Kept as named ``conv``/``bn``/``act`` children (not an ``nn.Sequential``): in bilinear mode
    the resize sits between conv and BatchNorm, and BatchNorm must keep normalising the
    upsampled map in training (its batch statistics differ from the low-res map's).
    """

    def __init__(self, in_ch: int, out_ch: int, mode: str) -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"decoder must be one of {UPSAMPLE_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "transpose":
            self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, bias=False)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.mode == "bilinear":
            # 1x1 conv before resizing: same result as after, at a quarter of the cost.
            x = F.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            x = self.conv(x)
        return self.act(self.bn(x))


class DecoderBlock(nn.Module):
    """Upsample the deeper map, concatenate the encoder skip, refine with separable convs."""

    def __init__(
        self, in_ch: int, skip_ch: int, out_ch: int, mode: str, dropout: float, refine: int = 2
    ) -> None:
        super().__init__()
        self.up = Upsample2x(in_ch, out_ch, mode)
        convs = [SeparableConv(out_ch + skip_ch, out_ch)]
        convs += [SeparableConv(out_ch, out_ch) for _ in range(refine - 1)]
        self.refine = nn.Sequential(*convs)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.up(x)
        return self.dropout(self.refine(torch.cat([x, skip], dim=1)))


class GlobalContext(nn.Module):
    """Adds a projected global average to every position: cheap whole-image context that
    helps tell a person from person-coloured background (export-friendly: mean + add)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU6(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.proj(x.mean(dim=(2, 3), keepdim=True))


def decoder_channels(skip_channels: tuple[int, ...], scale: float, minimum: int) -> tuple[int, ...]:
    """Channel count of each decoder block, derived from the skip it merges with.

    Rounded to multiples of 8 whatever the encoder's divisor: the decoder is ours, not a donor's.
    """
    return tuple(make_divisible(max(minimum, c * scale)) for c in skip_channels)


class UNetDecoder(nn.Module):
    """Global context on the deepest map, one :class:`DecoderBlock` per skip (strides 16, 8, 4,
    2), then a ``final`` stage without skip that prepares the head's input.

    ``final_upsample=False`` (the sub-pixel head): a 1x1 ConvBNAct at stride 2 -- the head's
    pixel shuffle does the last x2. ``True`` (the older upsample head): an :class:`Upsample2x`
    to full resolution. ``out_stride`` tells the head which.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        mode: str = "bilinear",
        scale: float = 2.0,
        min_channels: int = 16,
        dropout: float = 0.1,
        context: bool = True,
        final_upsample: bool = False,
        last_refine: int = 2,
        final_conv: bool = True,
    ) -> None:
        super().__init__()
        skips = tuple(reversed(encoder_channels[:-1]))  # strides 16, 8, 4, 2
        self.block_channels = decoder_channels(skips, scale, min_channels)
        in_ch = encoder_channels[-1]
        # Registered first, then blocks, then final: the parameter order of the older flat
        # layout, so optimiser states of older last.pt files still line up on resume.
        self.context = GlobalContext(in_ch) if context else nn.Identity()
        blocks = []
        for i, (skip_ch, out_ch) in enumerate(zip(skips, self.block_channels)):
            # Dropout on the two coarse levels only: fine levels carry edge detail.
            refine = last_refine if i == len(skips) - 1 else 2
            blocks.append(DecoderBlock(in_ch, skip_ch, out_ch, mode, dropout if i < 2 else 0.0, refine))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final: nn.Module = (
            Upsample2x(in_ch, in_ch, mode) if final_upsample
            else ConvBNAct(in_ch, in_ch, 1) if final_conv else nn.Identity()
        )
        self.out_channels = in_ch
        self.out_stride = 1 if final_upsample else 2

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        y = self.context(features[-1])
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            y = block(y, skip)
        return self.final(y)
