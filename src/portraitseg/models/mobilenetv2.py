"""MobileNetV2 encoder (Sandler et al. 2018) that returns multi-scale features for a U-Net."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNAct, InvertedResidual, make_divisible

# (expand ratio t, channels c, repeats n, first stride s) from the MobileNetV2 paper, Table 2.
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor without the 1280-channel head and classifier.

    ``forward`` returns one feature map per stride (2, 4, 8, 16, 32): the last block output
    at each resolution, which is what the decoder's skip connections consume.
    ``out_channels`` lists their channel counts so decoders can size themselves.

    ``divisor`` is the multiple channel counts are rounded to. 8 is the torchvision/Keras rule
    (and the bundled model); TF-slim's DeepLab checkpoints were built with a finer rounding, so
    ``divisor=4`` reproduces their counts (width 0.5: stem 16, stages 8, 12, 16, 32, 48, 80, 160)
    and lets such weights be loaded.
    """

    def __init__(self, width: float = 0.5, in_channels: int = 3, divisor: int = 8) -> None:
        super().__init__()
        stem_ch = make_divisible(32 * width, divisor)
        self.stem = ConvBNAct(in_channels, stem_ch, 3, stride=2)
        stages: list[nn.Sequential] = []
        out_channels: list[int] = []
        strides: list[int] = []
        current = stem_ch
        stride_now = 2
        blocks: list[nn.Module] = []
        for t, c, n, s in MOBILENETV2_SETTINGS:
            out_ch = make_divisible(c * width, divisor)
            if s == 2:
                # A downsampling step closes the current resolution's stage.
                stages.append(nn.Sequential(*blocks))
                out_channels.append(current)
                strides.append(stride_now)
                blocks = []
                stride_now *= 2
            for i in range(n):
                blocks.append(InvertedResidual(current, out_ch, s if i == 0 else 1, t))
                current = out_ch
        stages.append(nn.Sequential(*blocks))
        out_channels.append(current)
        strides.append(stride_now)
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(out_channels)
        self.strides: tuple[int, ...] = tuple(strides)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        features = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
