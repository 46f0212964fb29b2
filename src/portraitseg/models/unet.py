"""Mobile-UNet: MobileNetV2 encoder + U-Net decoder with skip connections at strides 16/8/4/2."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, SeparableConv, make_divisible
from .mobilenetv2 import MobileNetV2Encoder

UPSAMPLE_MODES = ("transpose", "bilinear")
HEADS = ("subpixel", "upsample")


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
    # "subpixel": the last x2 as a 3x3 conv to 4 phase maps at stride 2 + pixel shuffle (ESPCN);
    # "upsample": upsample the features to full resolution, then a 3x3 conv (checkpoints from
    # before the field existed). Same function up to where ReLU6 sits (see
    # to_subpixel_head), at a quarter of the head's pixels: the upsample head was 0.7 of the
    # default model's 3.3 ms per 224-px frame in onnxruntime on one core.
    head: str = "subpixel"
    # Encoder channel rounding (MobileNetV2Encoder): 8 = Keras rule (the default model), 4 = TF-slim's.
    divisor: int = 8

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
        self.encoder = MobileNetV2Encoder(cfg.width, divisor=cfg.divisor)
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
        if cfg.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {cfg.head!r}")
        if cfg.head == "subpixel":
            self.head_up: nn.Module = ConvBNAct(in_ch, in_ch, kernel=1)
            self.head = nn.Conv2d(in_ch, 4, kernel_size=3, padding=1)
            self.shuffle: nn.Module = nn.PixelShuffle(2)
        else:
            self.head_up = Upsample2x(in_ch, in_ch, cfg.decoder)
            self.head = nn.Conv2d(in_ch, 1, kernel_size=3, padding=1)
            self.shuffle = nn.Identity()
        self.decoder_channels = dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        feats = self.encoder(x * 2.0 - 1.0)
        y = self.context(feats[-1])
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            y = block(y, skip)
        return self.shuffle(self.head(self.head_up(y)))


# Bilinear x2 (align_corners=False) followed by a 3x3 conv, seen from the low-res grid (one
# axis): _BILINEAR_X2_TAPS[p, j, k] is the weight that conv tap k (offset k-1 at full res) puts
# on low-res neighbour j (offset j-1) for outputs of phase p (0: even, 1: odd row/column).
# Each full-res pixel is 1/4-3/4 of its two nearest low-res ones.
_BILINEAR_X2_TAPS = torch.tensor([
    [[0.75, 0.25, 0.00], [0.25, 0.75, 0.75], [0.00, 0.00, 0.25]],  # even outputs
    [[0.25, 0.00, 0.00], [0.75, 0.75, 0.25], [0.00, 0.25, 0.75]],  # odd outputs
])


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
    if cfg.head != "upsample" or cfg.decoder != "bilinear":
        raise ValueError(f"only bilinear models with the upsample head convert (got head={cfg.head!r}, "
                         f"decoder={cfg.decoder!r})")
    new = MobileUNet(MobileUNetConfig(**{**cfg.to_dict(), "head": "subpixel"})).eval()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(("head_up.", "head."))}
    missing, _ = new.load_state_dict(own, strict=False)
    assert all(k.startswith(("head_up.", "head.")) for k in missing), missing
    up, conv1, bn1 = model.head_up, new.head_up[0], new.head_up[1]
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
