"""Export: BatchNorm folding, ONNX fp32/fp16/int8 agreement with PyTorch, metadata, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from portraitseg import export as ex
from portraitseg.checkpoint import save_weights
from portraitseg.cli import main
from portraitseg.export import onnx as onnx_export
from portraitseg.models import create_model
from portraitseg.runtimes import ours_input, to_input_tensor

from .conftest import SIZE, Exported, need_vikram, randomise_bn

REQUIRED_KEYS = ("input_size", "layout", "channel_order", "normalisation", "output_kind", "flattened",
                 "model_config")


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def _torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- BatchNorm folding


@pytest.mark.parametrize("decoder", ["bilinear", "transpose"])
def test_fuse_batchnorm_matches_and_removes_every_bn(decoder: str) -> None:
    torch.manual_seed(1)
    m = randomise_bn(create_model(f"mobile-unet-035-{decoder}"), seed=1)
    assert ex.count_batchnorms(m) > 30
    fused = ex.fuse_batchnorm(m)
    assert ex.count_batchnorms(fused) == 0
    assert ex.count_batchnorms(m) > 30  # the original is untouched
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        ref, out = m(x), fused(x)
    assert torch.allclose(ref, out, atol=1e-5, rtol=1e-4), float((ref - out).abs().max())
    assert ex.check_fusion(m, fused) < 1e-4


@pytest.mark.parametrize("groups", [1, 2])
def test_fuse_conv_transpose_bn_with_groups(groups: int) -> None:
    torch.manual_seed(2)
    conv = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=groups, bias=True)
    bn = randomise_bn(nn.Sequential(nn.BatchNorm2d(6)), seed=2)[0]
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        ref = bn(conv(x))
        out = ex.fuse_conv_bn(conv, bn)(x)
    assert torch.allclose(ref, out, atol=1e-5)


class _Head(nn.Module):
    """Conv -> BN under names no fusion code knows (an encoder/decoder/head re-organisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.out(torch.relu(self.norm(self.proj(x))))


class _Skewed(_Head):
    """Registered conv-then-BN, but the BN is applied to something else: must not be folded silently."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.out(self.norm(torch.relu(self.proj(x))))


def test_fusion_is_generic_and_verified() -> None:
    torch.manual_seed(4)
    m = randomise_bn(_Head(), seed=4)
    fused = ex.fuse_batchnorm(m)
    assert ex.count_batchnorms(fused) == 0 and ex.check_fusion(m, fused) < 1e-4
    skewed = randomise_bn(_Skewed(), seed=4)
    with pytest.raises(ValueError, match="BatchNorm folding"):
        ex.check_fusion(skewed, ex.fuse_batchnorm(skewed))


def test_check_fusion_detects_a_wrong_fold(model: nn.Module) -> None:
    fused = ex.fuse_batchnorm(model)
    with torch.no_grad():
        fused.head.bias += 1.0
    with pytest.raises(ValueError, match="BatchNorm folding"):
        ex.check_fusion(model, fused)


# --------------------------------------------------------------------------- ONNX fp32


def test_onnx_fp32_matches_torch_logits_and_has_metadata(model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = ex.export_model(model, out, ex.ExportConfig())
    assert out.is_file() and not list(tmp_path.glob(".*"))  # staged file moved into place
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    got, ref = _ort_run(out, x), _torch_logits(model, x)
    assert got.shape == (1, 1, SIZE, SIZE)
    assert np.abs(got - ref).max() < 1e-4
    meta = ex.read_metadata(out)
    assert all(k in meta for k in REQUIRED_KEYS)
    assert meta["input_size"] == str(SIZE) and meta["layout"] == "NCHW" and meta["channel_order"] == "RGB"
    assert meta["normalisation"] == "rgb/255" and meta["output_kind"] == "logits" and meta["flattened"] == "0"
    assert json.loads(meta["model_config"]) == model.config.to_dict()
    assert result.verify.passed and result.verify.max_abs_diff < 1e-4


def test_onnx_dynamic_runs_at_two_sizes(tmp_path: Path) -> None:
    torch.manual_seed(3)
    m = randomise_bn(create_model("mobile-unet-035-transpose", input_size=SIZE), seed=3)
    out = tmp_path / "dyn.onnx"
    ex.export_model(m, out, ex.ExportConfig(dynamic=True, verify_count=2))
    assert ex.read_metadata(out)["input_size"] == "dynamic"
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 96, 160), (2, 3, 224, 128)]:
        x = rng.random(shape, dtype=np.float32)
        got = _ort_run(out, x)
        assert got.shape == (shape[0], 1, *shape[2:])
        assert np.abs(got - _torch_logits(m, x)).max() < 1e-4


def test_flattened_probability_output(model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "flat.onnx"
    ex.export_model(model, out, ex.ExportConfig(flatten=True, output_kind="probability", verify_count=2))
    meta = ex.read_metadata(out)
    assert meta["flattened"] == "1" and meta["output_kind"] == "probability"
    assert meta["output_name"] == "probability" and meta["output_shape"] == f"1x{SIZE * SIZE}"
    x = np.random.default_rng(2).random((1, 3, SIZE, SIZE), dtype=np.float32)
    got = _ort_run(out, x)
    assert got.shape == (1, SIZE * SIZE)
    ref = torch.sigmoid(torch.from_numpy(_torch_logits(model, x))).numpy().reshape(1, -1)
    assert np.abs(got - ref).max() < 1e-5


def test_verification_fails_on_a_wrong_export_and_leaves_no_file(model: nn.Module, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = onnx_export.export_onnx_bytes

    def broken(wrapper: nn.Module, cfg: ex.ExportConfig, size: int) -> bytes:
        bad = ex.ExportWrapper(ex.fuse_batchnorm(model), cfg.output_kind, cfg.flatten)
        with torch.no_grad():
            bad.model.head.bias += 2.0  # a plausible-looking but wrong graph
        return real_export(bad, cfg, size)

    monkeypatch.setattr(onnx_export, "export_onnx_bytes", broken)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match="verification failed"):
        ex.export_model(model, out, ex.ExportConfig(verify_count=1))
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int8"}, "calib-data"),
        ({"size": 100}, "multiple of 32"),
        ({"size": 224, "dynamic": True}, "exclude"),
        ({"format": "tflite", "dynamic": True}, "only supported for ONNX"),
        ({"precision": "int4"}, "precision"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ex.ExportConfig(**kwargs).validate()


# --------------------------------------------------------------------------- fp16 / int8 on real photos


def _real_inputs(size: int, count: int, offset: int) -> list[np.ndarray]:
    fmt = ours_input(size)  # the runtimes' own preprocessing
    return [to_input_tensor(img, fmt) for img in ex.load_images(need_vikram(), count, offset)]


def test_fp16_and_int8_agree_with_torch_on_real_images(model: nn.Module, fp16_onnx: Exported,
                                                       int8_onnx: Exported) -> None:
    """A random-init model's logits are nearly flat (|logit| ~ 0.05), so absolute errors say
    little; the checks are scale-free: fp16 keeps ~3 significant digits, so its logit error
    must stay below 1% of the logits' spread; int8 (256 levels per tensor, errors adding up
    over ~50 layers) must keep the spatial pattern: per-image correlation with the fp32
    logits >= 0.98 and mean error below 10% of their spread. The trained model gets the
    mask-level check in test_trained_default_int8_masks."""
    inputs = _real_inputs(SIZE, 6, offset=1)  # different photos from the calibration pick
    fp16, int8 = fp16_onnx.path, int8_onnx.path
    assert ex.read_metadata(int8)["int8_granularity"] in ("per-channel", "per-tensor")
    assert int8_onnx.result.bytes_written < fp16.stat().st_size  # 1-byte weights (plus scales)
    for x in inputs:
        ref = _torch_logits(model, x).ravel()
        spread = ref.std()
        d16 = np.abs(_ort_run(fp16, x).ravel() - ref)
        assert d16.max() < 0.01 * spread + 1e-5
        q8 = _ort_run(int8, x).ravel()
        assert np.corrcoef(q8, ref)[0, 1] >= 0.98
        assert np.abs(q8 - ref).mean() < 0.1 * spread


def test_int8_auto_granularity_scores_both(int8_onnx: Exported) -> None:
    res = int8_onnx.result
    assert set(res.int8_candidates) == {"per-channel", "per-tensor"}
    chosen = ex.read_metadata(int8_onnx.path)["int8_granularity"]
    scores = res.int8_candidates
    best = max(scores, key=lambda n: (round(scores[n]["mean_iou"], 4), -scores[n]["mean_abs_diff"]))
    assert chosen == best


def test_trained_default_int8_masks(default_int8_onnx: Exported, default_fp16_onnx: Exported) -> None:
    """With trained weights the masks themselves must survive quantisation."""
    res = default_int8_onnx.result
    # 0.95: ~the gap between our model and MediaPipe; quantisation must cost far less.
    assert res.verify.mean_iou >= 0.95 and res.verify.mean_abs_diff < 0.03
    res16 = default_fp16_onnx.result
    assert res16.verify.mean_iou >= 0.995 and res16.verify.max_abs_diff < 0.05
    assert int(res.metadata["input_size"]) % 32 == 0


# --------------------------------------------------------------------------- TFLite


def test_tflite_without_converter_fails_with_one_line(model: nn.Module, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    with pytest.raises(ValueError, match="litert-torch") as info:
        ex.export_model(model, tmp_path / "m.tflite", ex.ExportConfig(format="tflite"))
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not ex.tflite_available(),
                    reason="TFLite converter not installed: pip install '.[tflite-export]'")
def test_tflite_round_trip(model: nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    result = ex.export_model(model, out, ex.ExportConfig(format="tflite", verify_count=2))
    meta = ex.read_metadata(out)
    assert meta["layout"] == "NHWC" and meta["input_size"] == str(SIZE) and meta["output_kind"] == "logits"
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(out))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3] and list(outp["shape"]) == [1, SIZE, SIZE, 1]
    x = np.random.default_rng(3).random((1, 3, SIZE, SIZE), dtype=np.float32)
    interp.set_tensor(inp["index"], x.transpose(0, 2, 3, 1).copy())
    interp.invoke()
    got = interp.get_tensor(outp["index"]).transpose(0, 3, 1, 2)
    assert np.abs(got - _torch_logits(model, x)).max() < 1e-4
    assert result.verify.passed


# --------------------------------------------------------------------------- CLI


def test_cli_missing_model_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["export", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1


def test_cli_export_writes_and_prints_contract(model: nn.Module, tmp_path: Path,
                                               capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    weights = save_weights(model, tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(weights), "--size", "96", "--verify-count", "2"]) == 0
    out = tmp_path / "w-96-fp32.onnx"
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "layout = NCHW" in printed and "output_kind = logits" in printed and "verification" in printed
    assert ex.read_metadata(out)["input_size"] == "96"


def test_cli_int8_without_calibration_data_exits_2(model: nn.Module, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    weights = save_weights(model, tmp_path / "w.pt")
    assert main(["export", str(weights), "--precision", "int8"]) == 2
    assert "--calib-data" in capsys.readouterr().err


def test_tflite_metadata_written_by_export_is_read_by_the_runtime(tmp_path: Path) -> None:
    """One writer (export) and one reader (runtimes): the contract survives the round trip."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT runtime not installed: pip install '.[tflite]'")
    from portraitseg.export.tflite import add_tflite_metadata
    from portraitseg.runtimes import DEFAULT_TFLITE, TFLiteRuntime, read_tflite_metadata

    meta = {"output_kind": "probability", "input_size": "224", "layout": "NHWC"}
    tagged = tmp_path / "tagged.tflite"
    once = add_tflite_metadata(DEFAULT_TFLITE.read_bytes(), {"x": "1"})
    tagged.write_bytes(add_tflite_metadata(once, meta))
    assert read_tflite_metadata(tagged) == meta  # re-tagging replaces the entry
    assert ex.read_metadata(tagged) == meta
    assert TFLiteRuntime(tagged).output_format.kind == "probability"


# --------------------------------------------------------------------------- issue 17: damaged inputs


def test_damaged_weights_are_not_exported(model: nn.Module, tmp_path: Path) -> None:
    """One weight of 2.4e24 (flipped exponent bits): PyTorch and the export computed the same
    garbage, so the export 'passed' its own verification."""
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.decoder.blocks[0].refine[0][1][0].weight.view(-1)[7] = 2.4e24
    with pytest.raises(ValueError, match=r"holds a value of 2.4e\+24, far beyond any trained weight"):
        ex.export_model(bad, tmp_path / "bad.onnx", ex.ExportConfig(verify_count=1))
    assert not any(tmp_path.iterdir())


def test_verification_fails_on_absurd_outputs(model: nn.Module, tmp_path: Path) -> None:
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.head.bias += 5e4  # every weight plausible, every logit absurd
    with pytest.raises(ValueError, match=r"bad.onnx: verification failed: .*logits of 5e\+04"):
        ex.export_model(bad, tmp_path / "bad.onnx", ex.ExportConfig(verify_count=1))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("opset", ["1", "10", "24", "99"])
def test_opset_out_of_range_is_one_line(opset: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 1: torch cannot export Resize; 10: an export that fails verification; 24, 99: torch refuses.
    with pytest.raises(SystemExit) as info:
        main(["export", "default", "--opset", opset, "-o", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    assert f"argument --opset: must be in [11, 23]; got {opset}" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--opset must be in \[11, 23\]"):
        ex.ExportConfig(opset=int(opset)).validate()


def test_cli_refuses_a_pt_that_runs_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from crafted_pt import write_code_running_pt

    marker = tmp_path / "PWNED"
    evil = write_code_running_pt(tmp_path / "evil.pt", marker, key="x")
    assert main(["export", str(evil), "-o", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "evil.pt: not a portraitseg checkpoint: loading it would run code" in err
    assert len(err.splitlines()) == 1 and not marker.exists() and not (tmp_path / "e.onnx").exists()


def test_cli_refuses_a_damaged_checkpoint(model: nn.Module, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    weights = save_weights(model, tmp_path / "w.pt")
    raw = bytearray(weights.read_bytes())
    start = raw.find(model.head.weight.detach().numpy().tobytes()[:32])
    for i in range(start, start + 256):
        raw[i] ^= 0x5A
    weights.write_bytes(bytes(raw))
    assert main(["export", str(weights), "-o", str(tmp_path / "w.onnx")]) == 2
    assert "w.pt: corrupted checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "w.onnx").exists()


def test_unwritable_output_is_one_line_before_converting(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(["export", "default", "-o", str(ro / "m.onnx"), "--size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "m.onnx" in err
    assert f"cannot write in {ro}: Read-only file system" in err
