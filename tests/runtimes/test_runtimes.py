"""Runtimes: pre/post-processing, ONNX export agreement, and every peer model on a real image."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from portraitseg.checkpoint import save_weights
from portraitseg.data import open_dataset, read_rgb
from portraitseg.metrics import confusion
from portraitseg.models import create_model
from portraitseg.runtimes import (
    PEERS,
    TFLITE_METADATA_KEY,
    InputFormat,
    OnnxRuntime,
    OutputFormat,
    TFLiteRuntime,
    TorchRuntime,
    open_model,
    output_to_prob,
    resize_image,
    to_input_tensor,
)

ASSET = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


def shared_dir() -> Path:
    """The ``shared`` folder beside the repo root, or $PORTRAITSEG_SHARED."""
    env = os.environ.get("PORTRAITSEG_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture(scope="module")
def anchors() -> Path:
    path = shared_dir() / "anchors"
    if not path.is_dir():
        pytest.skip(f"peer models not found at {path} (set PORTRAITSEG_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="module")
def vikram_sample():
    root = shared_dir() / "data" / "vikram_val"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set PORTRAITSEG_SHARED to the shared folder)")
    return open_dataset(root, "val.txt").load(0)


@pytest.fixture(scope="module")
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mobile-unet-035-bilinear", input_size=128).eval()


def export_onnx(
    module: nn.Module,
    x: torch.Tensor,
    path: Path,
    metadata: dict[str, str] | None = None,
    dynamic_axes: dict | None = None,
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            x,
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(path))
    return path


# ----------------------------------------------------------------------------- pre/post processing


def test_resize_halves_then_antialiased_bilinear_when_shrinking_and_linear_when_enlarging() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    # Less than 2x: one bilinear step, nothing else.
    np.testing.assert_array_equal(
        resize_image(img, (40, 50)), cv2.resize(img, (50, 40), interpolation=cv2.INTER_LINEAR)
    )
    # 2x or more on both axes: exact 2x box halvings first (fast path), then bilinear.
    halved = cv2.resize(img, (40, 30), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(
        resize_image(img, (25, 35)), cv2.resize(halved, (35, 25), interpolation=cv2.INTER_LINEAR)
    )
    # More than 2x left on one axis after the halvings (720p -> 224x224 style): a 3-wide box
    # blur on that axis before the bilinear step, so no column is skipped.
    wide = rng.integers(0, 256, (36, 128, 3), dtype=np.uint8)
    halved = cv2.resize(wide, (64, 18), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(cv2.blur(halved, (3, 1), borderType=cv2.BORDER_REPLICATE), (20, 10),
                          interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_image(wide, (10, 20)), expected)
    # Close to a true area average on a smooth image.
    smooth = cv2.GaussianBlur(img, (0, 0), 3)
    direct = cv2.resize(smooth, (35, 25), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(resize_image(smooth, (25, 35)).astype(int) - direct).mean() < 1.5
    np.testing.assert_array_equal(
        resize_image(img, (120, 90)), cv2.resize(img, (90, 120), interpolation=cv2.INTER_LINEAR)
    )


def test_input_tensor_bgr_mean_std_and_layouts() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # R, G, B
    sinet = PEERS["sinet_320"].input
    fmt = InputFormat((4, 4), "NCHW", "BGR", sinet.mean, sinet.std, sinet.scale)
    x = to_input_tensor(img, fmt)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32
    expected_b = (30 - sinet.mean[0]) / sinet.std[0] / 255.0  # channel 0 is blue
    assert x[0, 0, 0, 0] == pytest.approx(expected_b, rel=1e-5)
    nhwc = to_input_tensor(img, InputFormat((4, 4), "NHWC"))
    assert nhwc.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(nhwc[0, 0, 0], [10 / 255, 20 / 255, 30 / 255], rtol=1e-6)
    with pytest.raises(ValueError, match="RGB uint8"):
        to_input_tensor(img.astype(np.float32), fmt)


def test_output_decoding_kinds_and_layouts() -> None:
    logits = np.array([[-20.0, 0.0], [20.0, 2.0]], np.float32)
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(
        output_to_prob(logits[None, None], OutputFormat("logits"), (2, 2)), sig, atol=1e-6
    )
    # Two-channel logits: softmax[1].
    two = np.stack([np.zeros_like(logits), logits])[None]
    np.testing.assert_allclose(output_to_prob(two, OutputFormat("logits"), (2, 2)), sig, atol=1e-6)
    # NHWC probability and flattened probability come back as (h, w) unchanged.
    prob = sig.astype(np.float32)
    np.testing.assert_array_equal(
        output_to_prob(prob[None, ..., None], OutputFormat("probability", "NHWC"), (2, 2)), prob
    )
    flat = OutputFormat("probability", "NHWC", flattened=True)
    np.testing.assert_array_equal(output_to_prob(prob.reshape(1, 4), flat, (2, 2)), prob)
    with pytest.raises(ValueError, match="does not fit"):
        output_to_prob(np.zeros((1, 5), np.float32), flat, (2, 2))


# ----------------------------------------------------------------------------- our model


def test_onnx_export_agrees_with_torch(tmp_path: Path, small_model: nn.Module) -> None:
    path = export_onnx(small_model, torch.rand(1, 3, 128, 128), tmp_path / "m.onnx")
    image = read_rgb(ASSET)
    torch_rt, onnx_rt = TorchRuntime(small_model), OnnxRuntime(path, threads=1)
    assert onnx_rt.input_size == torch_rt.input_size == (128, 128)
    assert onnx_rt.output_format.kind == "logits" and onnx_rt.num_threads == 1
    x = torch_rt.preprocess(image)
    np.testing.assert_allclose(onnx_rt.infer(x), torch_rt.infer(x), atol=1e-4)
    p_torch, p_onnx = torch_rt.prob(image), onnx_rt.prob(image)
    assert p_onnx.shape == image.shape[:2] and p_onnx.dtype == np.float32
    assert np.abs(p_onnx - p_torch).max() < 1e-4


class _NHWCFlatProb(nn.Module):
    """Our model behind an NHWC input and a flattened probability output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x.permute(0, 3, 1, 2))).flatten(1)


def test_onnx_metadata_layout_kind_flattened(tmp_path: Path, small_model: nn.Module) -> None:
    meta = {"output_kind": "probability", "layout": "NHWC", "flattened": "true"}
    path = export_onnx(_NHWCFlatProb(small_model), torch.rand(1, 128, 128, 3), tmp_path / "nhwc.onnx", meta)
    rt = OnnxRuntime(path)
    assert rt.input_format.layout == "NHWC" and rt.input_size == (128, 128)
    assert rt.output_format == OutputFormat("probability", "NHWC", flattened=True)
    image = read_rgb(ASSET)
    assert np.abs(rt.prob(image) - TorchRuntime(small_model).prob(image)).max() < 1e-4


def test_onnx_dynamic_size_comes_from_metadata(tmp_path: Path, small_model: nn.Module) -> None:
    axes = {"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}}
    bare = export_onnx(small_model, torch.rand(1, 3, 128, 128), tmp_path / "dyn.onnx", dynamic_axes=axes)
    with pytest.raises(ValueError, match="dynamic"):
        OnnxRuntime(bare)
    assert OnnxRuntime(bare, input_size=96).input_size == (96, 96)
    # As `portraitseg export --dynamic` writes it: no fixed size, the training size in model_config.
    meta = {"input_size": "dynamic", "model_config": json.dumps(small_model.config.to_dict())}
    tagged = export_onnx(small_model, torch.rand(1, 3, 128, 128), tmp_path / "dyn_meta.onnx", meta, axes)
    rt = OnnxRuntime(tagged)
    assert rt.input_size == (128, 128)
    image = read_rgb(ASSET)
    assert np.abs(rt.prob(image) - TorchRuntime(small_model).prob(image)).max() < 1e-4


def test_checkpoint_spec_opens_torch_runtime(tmp_path: Path, small_model: nn.Module) -> None:
    path = save_weights(small_model, tmp_path / "tiny.pt")
    rt = open_model(str(path), threads=1)
    assert isinstance(rt, TorchRuntime) and rt.name == "tiny" and rt.input_size == (128, 128)
    image = read_rgb(ASSET)
    before = torch.get_num_threads()
    np.testing.assert_allclose(rt.prob(image), TorchRuntime(small_model).prob(image), atol=1e-6)
    assert torch.get_num_threads() == before  # the process-wide setting is left as it was


def test_open_model_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown peer|not a model"):
        open_model("no_such_model")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        open_model(str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="mediapipe_selfie_256.tflite"):
        open_model("mediapipe_selfie_256", anchors=tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx"):
        open_model(str(bad))


# ----------------------------------------------------------------------------- peers (real files)


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_spec_matches_model_file(anchors: Path, name: str) -> None:
    spec = PEERS[name]
    rt = open_model(name, anchors=anchors)
    if spec.backend == "onnx":
        shape = rt.session.get_inputs()[0].shape
    else:
        shape = list(rt.interpreter.get_input_details()[0]["shape"])
    h, w = (shape[1], shape[2]) if spec.input.layout == "NHWC" else (shape[2], shape[3])
    assert (h, w) == spec.input.size
    assert shape[3 if spec.input.layout == "NHWC" else 1] == 3


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_runs_on_real_image(anchors: Path, vikram_sample, name: str) -> None:
    rt = open_model(name, threads=1, anchors=anchors)
    prob = rt.prob(vikram_sample.image)
    assert prob.shape == vikram_sample.image.shape[:2] and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    iou = confusion(prob >= 0.5, vikram_sample.target >= 0.5).person_iou
    # Every peer is a working person segmenter: wrong channel order or normalisation breaks this.
    assert iou > 0.5, f"{name}: person IoU {iou:.3f}"
    if name == "mediapipe_selfie_256":
        assert iou > 0.8


def test_peer_file_path_and_env_resolution(anchors: Path, vikram_sample, monkeypatch) -> None:
    monkeypatch.setenv("PORTRAITSEG_ANCHORS", str(anchors))
    by_name = open_model("mediapipe_selfie_landscape")  # README short name, found via the env var
    assert by_name.name == "mediapipe_selfie_landscape_144x256" and by_name.input_size == (144, 256)
    # A peer's file given by path keeps that peer's pre/post-processing.
    by_path = open_model(str(anchors / "sinet_320.onnx"))
    assert by_path.name == "sinet_320" and by_path.input_format.channel_order == "BGR"


def with_tflite_metadata(src: Path, dst: Path, metadata: dict[str, str]) -> Path:
    """Copy of a .tflite with a JSON metadata buffer, as `portraitseg export` embeds it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA_KEY, len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    builder = flatbuffers.Builder(src.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_tflite_output_kind_from_embedded_metadata(anchors: Path, vikram_sample, tmp_path: Path) -> None:
    src = anchors / PEERS["mediapipe_selfie_256"].filename
    assert TFLiteRuntime(src).output_format.kind == "logits"  # no metadata: our contract
    tagged = with_tflite_metadata(src, tmp_path / "mp.tflite", {"output_kind": "probability"})
    rt = TFLiteRuntime(tagged)
    assert rt.output_format.kind == "probability" and rt.input_format.layout == "NHWC"
    peer = open_model("mediapipe_selfie_256", anchors=anchors)
    np.testing.assert_allclose(rt.prob(vikram_sample.image), peer.prob(vikram_sample.image), atol=1e-6)


def test_tflite_layout_and_flattened_output_inferred(anchors: Path, vikram_sample) -> None:
    path = anchors / PEERS["seed_munet_bilinear_128_uint8"].filename
    generic = TFLiteRuntime(path, output_kind="probability", threads=2)
    assert generic.input_format.layout == "NHWC" and generic.input_size == (128, 128)
    assert generic.output_format.flattened and generic.num_threads == 2
    peer = open_model("seed_munet_bilinear_128_uint8", anchors=anchors)
    np.testing.assert_allclose(generic.prob(vikram_sample.image), peer.prob(vikram_sample.image), atol=1e-5)


def test_split_single_output_convs_is_the_same_function(tmp_path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from portraitseg.runtimes import split_single_output_convs

    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    b = np.array([0.25], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    rewritten = split_single_output_convs(path)
    assert rewritten is not None and b"Slice" in rewritten
    x = rng.standard_normal((1, 4, 9, 7)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert out.shape == ref.shape == (1, 1, 9, 7)
    np.testing.assert_allclose(out, ref, atol=1e-5)
