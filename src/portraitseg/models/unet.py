"""Mobile-UNet: MobileNetV2 encoder + U-Net decoder with skip connections at strides 16/8/4/2."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SeparableConv, make_divisible
from .mobilenetv2 import MobileNetV2Encoder

UPSAMPLE_MODES = ("transpose", "bilinear")


@dataclass(frozen=True)
class MobileUNetConfig:
    """Everything needed to rebuild a Mobile-UNet; stored inside checkpoints and exports."""

    width: float = 0.5
    decoder: str = "bilinear"
    decoder_scale: float = 2.0  # decoder channels = encoder skip channels x this
    min_decoder_channels: int = 16
    dropout: float = 0.1
    context: bool = True
    input_size: int = 224

    def to_dict(self) -> dict:
        return asdict(self)


class Upsample2x(nn.Module):
    """x2 upsampling: a learned stride-2 transposed conv, or bilinear resize + 1x1 conv."""

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

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, mode: str, dropout: float) -> None:
        super().__init__()
        self.up = Upsample2x(in_ch, out_ch, mode)
        self.refine = nn.Sequential(SeparableConv(out_ch + skip_ch, out_ch), SeparableConv(out_ch, out_ch))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.up(x)
        return self.dropout(self.refine(torch.cat([x, skip], dim=1)))


def decoder_channels(skip_channels: tuple[int, ...], scale: float, minimum: int) -> tuple[int, ...]:
    """Channel count of each decoder block, derived from the skip it merges with."""
    return tuple(make_divisible(max(minimum, c * scale)) for c in skip_channels)


class GlobalContext(nn.Module):
    """Adds a projected global average to every position: cheap whole-image context that
    helps tell a person from person-coloured background (export-friendly: mean + add)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU6(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.proj(x.mean(dim=(2, 3), keepdim=True))


class MobileUNet(nn.Module):
    """Portrait segmenter: RGB image (N,3,H,W) in [0,1] -> person logits (N,1,H,W).

    The [0,1] -> [-1,1] normalisation happens inside the model, so every runtime (torch,
    ONNX, TFLite, browser) feeds plain ``rgb / 255`` -- the same contract as MediaPipe.
    H and W must be multiples of 32 (the encoder's total stride).
    """

    def __init__(self, config: MobileUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or MobileUNetConfig()
        cfg = self.config
        self.encoder = MobileNetV2Encoder(cfg.width)
        enc = self.encoder.out_channels  # strides 2, 4, 8, 16, 32
        skips = tuple(reversed(enc[:-1]))  # strides 16, 8, 4, 2
        dec = decoder_channels(skips, cfg.decoder_scale, cfg.min_decoder_channels)
        blocks = []
        in_ch = enc[-1]
        self.context = GlobalContext(in_ch) if cfg.context else nn.Identity()
        for i, (skip_ch, out_ch) in enumerate(zip(skips, dec)):
            # Dropout on the two coarse levels only: fine levels carry edge detail.
            drop = cfg.dropout if i < 2 else 0.0
            blocks.append(DecoderBlock(in_ch, skip_ch, out_ch, cfg.decoder, drop))
            in_ch = out_ch
        self.decoder = nn.ModuleList(blocks)
        self.head_up = Upsample2x(in_ch, in_ch, cfg.decoder)
        self.head = nn.Conv2d(in_ch, 1, kernel_size=3, padding=1)
        self.decoder_channels = dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        feats = self.encoder(x * 2.0 - 1.0)
        y = self.context(feats[-1])
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            y = block(y, skip)
        return self.head(self.head_up(y))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
