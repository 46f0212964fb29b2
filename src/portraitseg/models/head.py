"""Segmentation head: decoder features -> one logit map at input resolution."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Conv2d):
    """A kxk conv to ``classes * upscale**2`` maps, then a pixel shuffle by ``upscale`` (ESPCN).

    ``upscale=2`` is the sub-pixel head (the conv runs at half resolution, a quarter of the
    pixels); ``upscale=1`` is a plain conv. A ``Conv2d`` subclass rather than a container so the
    head's ``weight``/``bias`` keep their names in state dicts (older files load as they are) and
    tools that treat the head as a conv (BatchNorm folding, tests nudging its bias) keep working.
    """

    def __init__(self, in_ch: int, classes: int = 1, upscale: int = 2, kernel: int = 3) -> None:
        super().__init__(in_ch, classes * upscale * upscale, kernel_size=kernel, padding=kernel // 2)
        self.upscale = upscale
        self.shuffle: nn.Module = nn.PixelShuffle(upscale) if upscale > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.shuffle(super().forward(x))
