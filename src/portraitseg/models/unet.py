"""Mobile-UNet: MobileNetV2 encoder -> U-Net decoder (skips at strides 16/8/4/2) -> segmentation head."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..defaults import INPUT_SIZE
from .decoder import UPSAMPLE_MODES, DecoderBlock, GlobalContext, UNetDecoder, Upsample2x, decoder_channels
from .head import SegmentationHead
from .mobilenetv2 import MobileNetV2Encoder

HEADS = ("subpixel", "upsample")

__all__ = [  # the decoder parts stay importable from here (export folds Upsample2x's BatchNorm)
    "HEADS",
    "UPSAMPLE_MODES",
    "DecoderBlock",
    "GlobalContext",
    "MobileNetV2Encoder",
    "MobileUNet",
    "MobileUNetConfig",
    "SegmentationHead",
    "UNetDecoder",
    "Upsample2x",
    "count_parameters",
    "decoder_channels",
    "upgrade_state_dict",
]


@dataclass(frozen=True)
class MobileUNetConfig:
    """Everything needed to rebuild a Mobile-UNet; stored inside checkpoints and exports."""

    width: float = 0.5
    decoder: str = "bilinear"
    decoder_scale: float = 2.0  # decoder channels = encoder skip channels x this
    min_decoder_channels: int = 16
    dropout: float = 0.1
    context: bool = True
    input_size: int = INPUT_SIZE
    # "subpixel": the last x2 as a 3x3 conv to 4 phase maps at stride 2 + pixel shuffle (ESPCN);
    # "upsample": upsample the features to full resolution, then a 3x3 conv (checkpoints from
    # before the field existed). Same function up to where ReLU6 sits (see
    # to_subpixel_head), at a quarter of the head's pixels: the upsample head was 0.7 of the
    # default model's 3.3 ms per 224-px frame in onnxruntime on one core.
    head: str = "subpixel"
    # Encoder channel rounding (MobileNetV2Encoder): 8 = the bundled model; 4 = TF-slim's counts.
    divisor: int = 8
    # The head conv's kernel. 1 = the bundled model since stage 5; 3 = stages 1-4 (checkpoints
    # without the field). The 3x3 16->4 conv at stride 2 was the slowest op of the whole model
    # (0.38 of 3.9 ms in onnxruntime; TFLite model call 3.11 -> 2.58 ms with the 1x1).
    head_kernel: int = 1
    # The stride-2 decoder stage, the costliest part of the decoder (it runs at half the input
    # resolution): separable convs in its block, and whether a 1x1 ConvBNAct follows it.
    last_refine: int = 2
    final_conv: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class MobileUNet(nn.Module):
    """Portrait segmenter: RGB image (N,3,H,W) in [0,1] -> person logits (N,1,H,W).

    ``encoder`` -> ``decoder`` -> ``head`` (the segmentation_models_pytorch shape); each part
    sizes itself from the one before (``encoder.out_channels``, ``decoder.out_channels``).
    The [0,1] -> [-1,1] normalisation happens inside the model, so every runtime (torch,
    ONNX, TFLite, browser) feeds plain ``rgb / 255`` -- the same contract as MediaPipe.
    H and W must be multiples of 32 (the encoder's total stride).
    """

    def __init__(self, config: MobileUNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MobileUNetConfig()
        if cfg.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {cfg.head!r}")
        self.encoder = MobileNetV2Encoder(cfg.width, divisor=cfg.divisor)
        self.decoder = UNetDecoder(
            self.encoder.out_channels,
            mode=cfg.decoder,
            scale=cfg.decoder_scale,
            min_channels=cfg.min_decoder_channels,
            dropout=cfg.dropout,
            context=cfg.context,
            final_upsample=cfg.head == "upsample",
            last_refine=cfg.last_refine,
            final_conv=cfg.final_conv,
        )
        self.head = SegmentationHead(
            self.decoder.out_channels, classes=1, upscale=self.decoder.out_stride, kernel=cfg.head_kernel
        )

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Channels of the four skip-merging decoder blocks (coarse to fine)."""
        return self.decoder.block_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.decoder(self.encoder(x * 2.0 - 1.0)))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that also accepts the older flat layout's keys."""
        return super().load_state_dict(upgrade_state_dict(state_dict), strict=strict, assign=assign)


# The layout before encoder/decoder/head classes: context, decoder blocks and the head's input
# stage were direct children of the model. (prefix regex, replacement), applied once per key.
_LEGACY_KEYS = (
    (re.compile(r"^context(\.|$)"), r"decoder.context\1"),
    (re.compile(r"^decoder\.(\d+)(\.|$)"), r"decoder.blocks.\1\2"),
    (re.compile(r"^head_up(\.|$)"), r"decoder.final\1"),
)


def _upgrade_key(key: str) -> str:
    for pattern, repl in _LEGACY_KEYS:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def upgrade_state_dict(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """State dict (or checkpoint ``model`` entry) in today's key layout; others pass unchanged.

    Older files (the bundled weights before this layout, any checkpoint saved by that code)
    name ``context.*``, ``decoder.<i>.*`` and ``head_up.*``; today those live under
    ``decoder.context``, ``decoder.blocks.<i>`` and ``decoder.final``. ``head.*`` kept its name.
    """
    if not any(k.startswith("head_up.") for k in state):  # every older model had a head_up
        return state
    out: OrderedDict[str, Any] = OrderedDict((_upgrade_key(k), v) for k, v in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # per-module versions (BatchNorm reads them), keyed by module path
        out._metadata = OrderedDict((_upgrade_key(k), v) for k, v in metadata.items())  # type: ignore[attr-defined]
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
