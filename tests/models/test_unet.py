"""Mobile-UNet: shapes, parameter counts, width-derived channels, registry, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from portraitseg.models import (
    DEFAULT_MODEL,
    MobileUNet,
    MobileUNetConfig,
    count_parameters,
    create_model,
    list_models,
    model_config,
    to_head_kernel,
    to_subpixel_head,
)

# Exact counts of the current architecture: a change to blocks/encoder/decoder must show up
# here (update the numbers deliberately, and re-train/re-export the bundled weights).
EXACT_PARAMS = {
    "mobile-unet-035-bilinear": 291_572,
    "mobile-unet-050-bilinear": 561_100,
    "mobile-unet-050-transpose": 621_004,
    "mobile-unet-075-bilinear": 1_225_068,
}
# The same models with the older full-resolution 3x3 head (checkpoints from before it changed).
EXACT_PARAMS_UPSAMPLE_HEAD = {
    "mobile-unet-050-bilinear": 561_177,
    "mobile-unet-050-transpose": 621_849,
}


pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.mark.parametrize("head", ["subpixel", "upsample"])
@pytest.mark.parametrize("decoder", ["bilinear", "transpose"])
@pytest.mark.parametrize("hw", [(64, 64), (96, 128), (224, 224)])
def test_output_is_one_logit_map_at_input_size(decoder: str, hw: tuple[int, int], head: str) -> None:
    model = create_model(f"mobile-unet-050-{decoder}", head=head).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 1, *hw)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_train_mode_backward_reaches_every_parameter() -> None:
    model = create_model(DEFAULT_MODEL, dropout=0.0).train()
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_default_model_is_under_one_million_parameters() -> None:
    assert DEFAULT_MODEL == "mobile-unet-050-bilinear"
    assert count_parameters(create_model(DEFAULT_MODEL)) < 1_000_000


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(name: str) -> None:
    assert count_parameters(create_model(name)) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS_UPSAMPLE_HEAD))
def test_exact_parameter_counts_with_the_upsample_head(name: str) -> None:
    old_layout = create_model(name, head="upsample", head_kernel=3)
    assert count_parameters(old_layout) == EXACT_PARAMS_UPSAMPLE_HEAD[name]


def test_bad_head_fails() -> None:
    with pytest.raises(ValueError, match="head must be one of"):
        create_model(DEFAULT_MODEL, head="deconv")


def _upsample_head_model(seed: int) -> MobileUNet:
    torch.manual_seed(seed)
    model = create_model(DEFAULT_MODEL, head="upsample", head_kernel=3, dropout=0.0)
    with torch.no_grad():  # non-trivial BN statistics everywhere, as after training
        model.train()(torch.rand(4, 3, 64, 64))
    return model.eval()


def test_subpixel_conversion_is_exact_where_relu6_is_inactive() -> None:
    model = _upsample_head_model(0)
    # Keep the head's pre-activations inside (0, 6): ReLU6 is then the identity wherever it
    # sits, and the converted head must compute the same function (but for the outer two-pixel ring,
    # where the upsampling clamped and the zero padding now sits at low resolution).
    with torch.no_grad():
        up = model.decoder.final
        up.conv.weight.mul_(0.01)
        up.bn.running_mean.zero_()
        up.bn.running_var.fill_(1.0)
        up.bn.weight.fill_(1.0)
        up.bn.bias.fill_(3.0)
    new = to_subpixel_head(model)
    assert new.config.head == "subpixel" and new.config.width == model.config.width
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        ref, out = model(x), new(x)
    assert out.shape == ref.shape == (2, 1, 96, 64)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)


def test_subpixel_conversion_only_moves_relu6() -> None:
    model = _upsample_head_model(1)
    new = to_subpixel_head(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), new(x)
    # Not the same function (ReLU6 moved), but the same masks nearly everywhere.
    agree = ((ref > 0) == (out > 0)).float().mean().item()
    assert agree > 0.98
    with pytest.raises(ValueError, match="only bilinear models with the 3x3 upsample head"):
        to_subpixel_head(new)


def test_head_kernel_growing_is_exact_and_shrinking_is_exact_on_flat_features() -> None:
    model = _upsample_head_model(2)
    model = to_subpixel_head(model)
    small = to_head_kernel(model, 1)
    assert small.config.head_kernel == 1 and small.head.weight.shape[-1] == 1
    assert count_parameters(small) == count_parameters(model) - 4 * 16 * 8
    flat = torch.rand(1, 16, 1, 1).expand(1, 16, 12, 12).contiguous()
    with torch.no_grad():
        # Away from the zero padding a flat map sees every tap alike: the summed centre tap is exact.
        torch.testing.assert_close(small.head(flat)[..., 2:-2, 2:-2], model.head(flat)[..., 2:-2, 2:-2])
        x = torch.rand(2, 3, 64, 64)
        ref = small(x)
        torch.testing.assert_close(to_head_kernel(small, 3)(x), ref)
        agree = ((model(x) > 0) == (ref > 0)).float().mean().item()
    assert agree > 0.9


def test_lean_stride2_stage_drops_one_refine_conv_and_the_final_1x1() -> None:
    full = create_model(DEFAULT_MODEL, head_kernel=1)
    lean = create_model(DEFAULT_MODEL, head_kernel=1, last_refine=1, final_conv=False)
    assert len(lean.decoder.blocks[3].refine) == 1 and len(full.decoder.blocks[3].refine) == 2
    assert all(len(b.refine) == 2 for b in lean.decoder.blocks[:3])
    assert isinstance(lean.decoder.final, torch.nn.Identity)
    assert count_parameters(lean) == 560_348
    assert count_parameters(full) == 561_100
    assert lean.eval()(torch.rand(1, 3, 96, 64)).shape == (1, 1, 96, 64)


def test_old_checkpoints_without_head_kernel_load_as_3x3(tmp_path: Path) -> None:
    from portraitseg.checkpoint import config_from_dict

    cfg = model_config(DEFAULT_MODEL).to_dict()
    del cfg["head_kernel"]
    assert config_from_dict(cfg).head_kernel == 3


def test_transpose_decoder_has_more_parameters_than_bilinear() -> None:
    # 2x2 transposed convs carry 4x the weights of the bilinear path's 1x1 convs.
    bil = count_parameters(create_model("mobile-unet-050-bilinear"))
    tr = count_parameters(create_model("mobile-unet-050-transpose"))
    assert tr > bil


@pytest.mark.parametrize(
    ("width", "encoder", "decoder"),
    [
        (0.35, (8, 8, 16, 32, 112), (64, 32, 16, 16)),
        (0.5, (8, 16, 16, 48, 160), (96, 32, 32, 16)),
        (0.75, (16, 24, 24, 72, 240), (144, 48, 48, 32)),
        (1.0, (16, 24, 32, 96, 320), (192, 64, 48, 32)),
    ],
)
def test_channels_follow_width(width: float, encoder: tuple, decoder: tuple) -> None:
    model = MobileUNet(MobileUNetConfig(width=width))
    assert model.encoder.out_channels == encoder
    assert model.decoder_channels == decoder
    assert model.encoder.strides == (2, 4, 8, 16, 32)
    # The encoder really emits those channel counts.
    with torch.no_grad():
        feats = model.eval().encoder(torch.rand(1, 3, 64, 64))
    assert tuple(f.shape[1] for f in feats) == encoder
    assert tuple(64 // f.shape[-1] for f in feats) == (2, 4, 8, 16, 32)


def test_registry_lists_all_variants() -> None:
    names = list_models()
    for w in ("035", "050", "075", "100"):
        for d in ("bilinear", "transpose"):
            assert f"mobile-unet-{w}-{d}" in names


def test_registry_unknown_name_lists_available() -> None:
    with pytest.raises(KeyError, match="mobile-unet-999-bilinear.*available: .*mobile-unet-050-bilinear"):
        create_model("mobile-unet-999-bilinear")


def test_registry_unknown_override_field_fails() -> None:
    with pytest.raises(TypeError):
        create_model(DEFAULT_MODEL, no_such_field=1)


def test_bad_decoder_mode_fails() -> None:
    with pytest.raises(ValueError, match="decoder must be one of"):
        create_model(DEFAULT_MODEL, decoder="nearest")


def test_overrides_are_applied_and_registry_is_untouched() -> None:
    model = create_model("mobile-unet-050-bilinear", width=0.75, dropout=0.0, context=False)
    assert model.config.width == 0.75
    assert model.config.dropout == 0.0
    assert not model.config.context
    assert model.encoder.out_channels[-1] == 240
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in model.modules())
    # Overrides make a copy: the registered config keeps its defaults.
    assert model_config("mobile-unet-050-bilinear").width == 0.5
    assert model_config("mobile-unet-050-bilinear").dropout == 0.1


def test_config_round_trips_through_dict() -> None:
    cfg = model_config("mobile-unet-075-transpose", input_size=256)
    assert MobileUNetConfig(**cfg.to_dict()) == cfg


def test_torchscript_trace_matches_eager() -> None:
    # Tracing, not torch.jit.script: forward uses reversed() over a list, which the
    # TorchScript compiler rejects; every export path (ONNX/TFLite) traces anyway.
    model = create_model(DEFAULT_MODEL).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), model(x))
        y = torch.rand(1, 3, 96, 128)  # traced graphs keep working at other sizes
        torch.testing.assert_close(traced(y), model(y))


@pytest.mark.parametrize("decoder", ["bilinear", "transpose"])
def test_onnx_export_runs_and_matches(decoder: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create_model(f"mobile-unet-050-{decoder}").eval()
    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == (1, 1, 64, 64)
    assert abs(out - ref).max() < 1e-3
