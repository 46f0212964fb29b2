"""The encoder -> decoder -> head layout: older checkpoints load unchanged, the bundled weights
give the bundled ONNX's logits, export stays exact, and the encoder's channel divisor."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from portraitseg.checkpoint import bundled_weights_path, load_checkpoint, load_model, save_weights
from portraitseg.models import (
    MobileNetV2Encoder,
    MobileUNet,
    MobileUNetConfig,
    SegmentationHead,
    UNetDecoder,
    create_model,
    upgrade_state_dict,
)

ASSETS = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets"
BUNDLED_ONNX = bundled_weights_path("default.onnx")

pytestmark = pytest.mark.usefixtures("torch_threads")


def _legacy_keys(state: dict) -> dict:
    """Today's state dict in the flat layout that code before the encoder/decoder/head classes
    wrote (context.*, decoder.<i>.*, head_up.*, head.*)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^decoder\.context\.", "context.", k)
        k = re.sub(r"^decoder\.blocks\.(\d+)\.", r"decoder.\1.", k)
        k = re.sub(r"^decoder\.final\.", "head_up.", k)
        out[k] = v
    return out


def _photo(size: int = 224) -> np.ndarray:
    import cv2

    img = cv2.cvtColor(cv2.imread(str(ASSETS / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def _onnx_logits(model: bytes | str, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_model_is_encoder_decoder_head() -> None:
    model = create_model("mobile-unet-050-bilinear")
    assert [name for name, _ in model.named_children()] == ["encoder", "decoder", "head"]
    assert isinstance(model.encoder, MobileNetV2Encoder)
    assert isinstance(model.decoder, UNetDecoder) and isinstance(model.head, SegmentationHead)
    assert model.decoder.out_channels == model.head.in_channels
    assert model.head.upscale == model.decoder.out_stride == 2
    upsample = create_model("mobile-unet-050-bilinear", head="upsample", head_kernel=3)
    assert upsample.head.upscale == upsample.decoder.out_stride == 1
    # Every BatchNorm directly follows its conv (ConvBNAct) or is Upsample2x's `bn`: the two
    # patterns export's folding knows.
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.children())
            for i, kid in enumerate(kids):
                if isinstance(kid, nn.BatchNorm2d):
                    assert i > 0 and isinstance(kids[i - 1], (nn.Conv2d, nn.ConvTranspose2d))


def test_bundled_weights_load_and_give_the_bundled_onnx_logits() -> None:
    # default.pt was saved in the older flat layout and default.onnx exported from it by the
    # older code: the same weights in today's classes must compute the same logits on a photo.
    stored = load_checkpoint(bundled_weights_path())["model"]
    model = load_model("default")
    assert set(upgrade_state_dict(stored)) == set(model.state_dict())
    x = _photo()
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    ref = _onnx_logits(str(BUNDLED_ONNX), x)
    assert ours.shape == ref.shape == (1, 1, 224, 224)
    assert np.abs(ours - ref).max() < 1e-4  # measured 9e-6: BatchNorm folded in the ONNX file


def test_onnx_export_of_todays_layout_matches_the_bundled_onnx() -> None:
    model = load_model("default")
    x = _photo()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.from_numpy(x),), buf, input_names=["image"], output_names=["logits"],
                      dynamo=False)
    assert np.abs(_onnx_logits(buf.getvalue(), x) - _onnx_logits(str(BUNDLED_ONNX), x)).max() < 1e-4


@pytest.mark.parametrize(
    "overrides",
    [{}, {"decoder": "transpose"}, {"head": "upsample"}, {"context": False, "width": 0.35}],
)
def test_checkpoint_in_the_older_key_layout_loads_exactly(overrides: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("mobile-unet-050-bilinear", dropout=0.0, **overrides)
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 64, 64))  # non-trivial BN statistics
    model.eval()
    path = tmp_path / "old.pt"
    torch.save({"model_config": model.config.to_dict(), "model": _legacy_keys(model.state_dict())}, path)
    loaded = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # Plain load_state_dict (resume, EMA, --init-weights) takes the older keys too.
    fresh = MobileUNet(model.config).eval()
    fresh.load_state_dict(_legacy_keys(model.state_dict()))
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # Saved again, the file is in today's layout.
    again = load_checkpoint(save_weights(loaded, tmp_path / "new.pt"))["model"]
    assert list(again) == list(model.state_dict())


def test_parameter_order_matches_the_older_layout() -> None:
    # Optimiser states are stored by parameter index: a resumed older last.pt needs this order.
    model = create_model("mobile-unet-050-bilinear")
    names = [n for n, _ in model.named_parameters()]
    legacy = list(_legacy_keys(dict.fromkeys(names)))
    head_up = [i for i, n in enumerate(legacy) if n.startswith("head_up.")]
    context = [i for i, n in enumerate(legacy) if n.startswith("context.")]
    blocks = [i for i, n in enumerate(legacy) if re.match(r"decoder\.\d", n)]
    assert max(context) < min(blocks) and max(blocks) < min(head_up) < legacy.index("head.weight")


def test_encoder_divisor_four_gives_tf_slim_channels() -> None:
    enc = MobileNetV2Encoder(0.5, divisor=4)
    stage_channels = [enc.stem[0].out_channels]
    for stage in enc.stages:
        for block in stage:
            if block.out_channels != stage_channels[-1]:
                stage_channels.append(block.out_channels)
    assert stage_channels == [16, 8, 12, 16, 32, 48, 80, 160]
    assert enc.out_channels == (8, 12, 16, 48, 160)
    assert MobileNetV2Encoder(0.5).out_channels == (8, 16, 16, 48, 160)  # divisor 8: today's model
    model = MobileUNet(MobileUNetConfig(divisor=4)).eval()
    assert model.encoder.out_channels == enc.out_channels
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert MobileUNetConfig().divisor == 8
