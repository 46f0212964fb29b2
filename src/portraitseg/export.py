"""Export a Mobile-UNet to ONNX or TFLite (fp32 / fp16 / int8) and verify the result.

Every export:

1. folds BatchNorm into the preceding convolutions (:func:`fuse_batchnorm`, checked against
   the unfused model),
2. wraps the model for the chosen contract (:class:`ExportWrapper`: NCHW for ONNX, NHWC for
   TFLite, ``logits`` or ``probability`` output, optionally flattened to ``[N, H*W]``),
3. converts, optionally to fp16 or calibrated int8,
4. embeds the I/O contract as metadata (ONNX ``metadata_props``; a ``portraitseg`` metadata
   entry in the TFLite flatbuffer), writes the file atomically,
5. runs the written file on real (``verify_data``) or random images and compares its person
   probability with PyTorch's (:func:`verify_export`).

The default output is **logits** (what the PyTorch model returns, so fp32 exports compare
exactly); ``output_kind="probability"`` appends a sigmoid for consumers that expect
MediaPipe-style probabilities. Either way the choice is recorded in the metadata.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from . import __version__
from .data.datasets import IMAGE_SUFFIXES
from .data.io import read_rgb, write_atomic
from .models import MobileUNet
from .models.unet import Upsample2x

FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_KINDS = ("logits", "probability")
INT8_GRANULARITIES = ("auto", "per-channel", "per-tensor")
ONNX_OPSET = 17
INPUT_NAME = "image"
METADATA_KEY_TFLITE = "portraitseg"
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}

# Verification fails (ValueError) when the exported model's person probability differs from
# PyTorch's by more than this anywhere. fp32 must match to float rounding; fp16 weights and
# activations change logits by ~1e-3 relative, i.e. at most a few 1e-3 in probability on a
# trained model (slope of the sigmoid <= 0.25). int8 is judged by mask agreement instead,
# so it only gets the report (its error depends on the calibration set).
VERIFY_MAX_PROB_DIFF: dict[str, float | None] = {"fp32": 1e-4, "fp16": 0.05, "int8": None}
FUSION_ATOL = 1e-4  # BatchNorm folding only reorders float rounding
INT8_SELECTION_IMAGES = 12  # held-out photos that decide per-channel vs per-tensor


@dataclass(frozen=True)
class ExportConfig:
    """Options of one export; ``size=None`` means the model's training ``input_size``."""

    format: str = "onnx"
    precision: str = "fp32"
    size: int | None = None
    dynamic: bool = False
    flatten: bool = False
    output_kind: str = "logits"
    opset: int = ONNX_OPSET
    calib_data: str | None = None
    calib_count: int = 32
    int8_granularity: str = "auto"
    verify_data: str | None = None
    verify_count: int = 8
    threads: int = 1
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError with a one-line message for an impossible combination."""
        for name, value, allowed in (
            ("format", self.format, FORMATS),
            ("precision", self.precision, PRECISIONS),
            ("output kind", self.output_kind, OUTPUT_KINDS),
            ("int8 granularity", self.int8_granularity, INT8_GRANULARITIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.size is not None and (self.size <= 0 or self.size % 32):
            raise ValueError(f"--size must be a positive multiple of 32 (the stride); got {self.size}")
        if self.dynamic and self.size is not None:
            raise ValueError("--size and --dynamic exclude each other")
        if self.dynamic and self.format == "tflite":
            raise ValueError("--dynamic is only supported for ONNX; give TFLite a fixed --size")
        if self.precision == "int8" and not self.calib_data:
            raise ValueError("int8 needs --calib-data DIR with real photos to calibrate activation ranges")
        if self.calib_count < 1 or self.verify_count < 0:
            raise ValueError("--calib-count must be >= 1 and --verify-count >= 0")


# --------------------------------------------------------------------------- BatchNorm folding


def fuse_conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` whose weights and bias absorb the (eval-mode) BatchNorm after it."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        w = conv.weight
        if isinstance(conv, nn.ConvTranspose2d):
            # Weight is (in, out/groups, kh, kw): output channel o = g*(out/groups) + j.
            g = conv.groups
            w = w.view(g, w.shape[0] // g, w.shape[1], *w.shape[2:]) * scale.view(g, 1, -1, 1, 1)
            w = w.view_as(conv.weight)
        else:
            w = w * scale.view(-1, 1, 1, 1)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.weight = nn.Parameter(w.clone())
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
    return fused


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Eval-mode copy of ``model`` with every Conv->BatchNorm pair folded into one conv.

    Pairs are adjacent children of an ``nn.Sequential`` (``ConvBNAct``) and the ``conv``/``bn``
    of :class:`Upsample2x`. In the bilinear decoder the resize sits between them; folding is
    still exact because BatchNorm is a per-channel affine map and bilinear weights sum to 1.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if conv is not None and _is_conv(conv) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[a] = fuse_conv_bn(conv, bn)
                    module._modules[b] = nn.Identity()
        elif isinstance(module, Upsample2x) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def check_fusion(model: nn.Module, fused: nn.Module, size: int = 64, seed: int = 0) -> float:
    """Max abs logit difference between ``model`` and ``fused``; ValueError if not equal."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=gen)
    with torch.no_grad():
        ref, out = model.eval()(x), fused.eval()(x)
    diff = float((ref - out).abs().max())
    tol = FUSION_ATOL * (1.0 + float(ref.abs().max()))
    if not diff <= tol:
        raise ValueError(f"BatchNorm folding changed the output by {diff:.3g} (> {tol:.3g})")
    return diff


# --------------------------------------------------------------------------- export graph


class ExportWrapper(nn.Module):
    """The exported graph: layout change, optional sigmoid, optional flattening."""

    def __init__(self, model: nn.Module, output_kind: str = "logits", flatten: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.probability = output_kind == "probability"
        self.flatten = flatten
        self.channels_last = channels_last

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = image.permute(0, 3, 1, 2) if self.channels_last else image
        y = self.model(x)
        if self.probability:
            y = torch.sigmoid(y)
        if self.channels_last:
            y = y.permute(0, 2, 3, 1)
        if self.flatten:
            # [N, H*W]: one contiguous row per image, as the original project's GPU-delegate models.
            y = y.reshape(y.shape[0], -1)
        return y


def output_name(cfg: ExportConfig) -> str:
    return "probability" if cfg.output_kind == "probability" else "logits"


def contract_metadata(model: MobileUNet, cfg: ExportConfig, size: int | None,
                      extra: dict[str, str] | None = None) -> dict[str, str]:
    """The I/O contract stored inside the exported file (all values are strings)."""
    layout = "NHWC" if cfg.format == "tflite" else "NCHW"
    dims = {"N": "1", "H": str(size) if size else "H", "W": str(size) if size else "W", "C": "3"}
    if cfg.dynamic:
        dims["N"] = "N"
    in_shape = "x".join(dims[c] for c in layout)
    if cfg.flatten:
        out_shape = f"{dims['N']}x{size * size}" if size else f"{dims['N']}x(H*W)"
    else:
        out_shape = "x".join("1" if c == "C" else dims[c] for c in layout)
    meta = {
        "input_size": str(size) if size else "dynamic",
        "layout": layout,
        "channel_order": "RGB",
        "normalisation": "rgb/255",
        "output_kind": cfg.output_kind,
        "flattened": "1" if cfg.flatten else "0",
        "model_config": json.dumps(model.config.to_dict(), sort_keys=True),
        "input_name": INPUT_NAME,
        "output_name": output_name(cfg),
        "input_shape": in_shape,
        "output_shape": out_shape,
        "precision": cfg.precision,
        "producer": f"portraitseg {__version__}",
    }
    meta.update(extra or {})
    return meta


# --------------------------------------------------------------------------- images


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a dataset root (its ``images/``) or of a plain folder, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    if (root / "images").is_dir():
        root = root / "images"
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def pick_spread(items: list[Path], count: int, offset: int = 0) -> list[Path]:
    """``count`` items spread evenly over the list (``offset`` shifts the pick), for variety."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[(int(i * step) + offset) % len(items)] for i in range(count)]


def load_images(folder: str | Path, count: int, offset: int = 0) -> list[np.ndarray]:
    return [read_rgb(p) for p in pick_spread(list_images(folder), count, offset)]


def random_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields plus noise: not photos, but not flat either."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img += rng.integers(-20, 21, img.shape, dtype=np.int16)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def to_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 image -> float32 NCHW (1,3,H,W) in [0,1], stretched to ``size`` (H, W)."""
    h, w = size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- ONNX


def export_onnx_bytes(wrapper: nn.Module, cfg: ExportConfig, size: int) -> bytes:
    """TorchScript-based ONNX export (``dynamo=False``: stable on torch 2.11-2.13)."""
    x = torch.rand(1, 3, size, size)
    out = output_name(cfg)
    dynamic_axes = None
    if cfg.dynamic:
        out_axes = {0: "batch", 1: "pixels"} if cfg.flatten else {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, out: out_axes}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter warns that it is deprecated
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            wrapper.eval(), (x,), str(path), input_names=[INPUT_NAME], output_names=[out],
            opset_version=cfg.opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False,
        )
        return path.read_bytes()


def onnx_to_fp16(model_bytes: bytes) -> bytes:
    """fp16 weights and compute, float32 input/output (ORT's bundled float16 converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load_from_string(model_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warns about values clamped to the fp16 range
        model16 = convert_float_to_float16(model, keep_io_types=True)
    _toposort(model16.graph)
    return model16.SerializeToString()


def _toposort(graph: Any) -> None:
    """Reorder nodes so each comes after its inputs' producers. The float16 converter appends
    its input Cast nodes at the end, which onnxruntime tolerates but the ONNX checker rejects."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("ONNX graph has a cycle or an input no node produces")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


class _ImageReader:
    """onnxruntime CalibrationDataReader over preprocessed calibration tensors."""

    def __init__(self, inputs: list[np.ndarray]) -> None:
        self._it = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}


def quantize_onnx_int8(model_bytes: bytes, calib_inputs: list[np.ndarray], per_channel: bool) -> bytes:
    """Static int8 QDQ quantisation (uint8 activations, int8 weights: ORT's CPU fast path)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        # Quiet the quantiser: it logs a pre-processing hint (our graph is already folded and
        # shape-inferred) and ORT lists every Clip bound that QDQ makes unused, ~100 lines.
        root.setLevel(logging.ERROR)
        ort.set_default_logger_severity(3)
        try:
            quantize_static(
                str(src), str(dst), _ImageReader(calib_inputs), quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.setLevel(level)
            ort.set_default_logger_severity(2)  # onnxruntime's default (warnings)
        return _drop_unused_initializers(dst.read_bytes())


def _drop_unused_initializers(model_bytes: bytes) -> bytes:
    """QDQ quantisation folds ReLU6's Clip into the quantisation ranges but leaves its bounds
    (Constant nodes and initializers) behind; onnxruntime warns about each one on every load."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    inits = [t for t in graph.initializer if t.name in used]
    if len(nodes) == len(graph.node) and len(inits) == len(graph.initializer):
        return model_bytes
    kept_nodes = [type(n)() for n in nodes]
    for dst, src in zip(kept_nodes, nodes):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model.SerializeToString()


def add_onnx_metadata(model_bytes: bytes, metadata: dict[str, str]) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "portraitseg"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    return model.SerializeToString()


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# --------------------------------------------------------------------------- TFLite


TFLITE_MISSING = (
    "--format tflite needs the PyTorch->LiteRT converter: pip install 'portraitseg[tflite-export]' "
    "(litert-torch; no TensorFlow needed)"
)


def _require_litert_torch() -> Any:
    try:
        import litert_torch
    except ImportError as exc:
        raise ValueError(TFLITE_MISSING) from exc
    return litert_torch


def tflite_available() -> bool:
    try:
        _require_litert_torch()
    except ValueError:
        return False
    return True


def export_tflite_bytes(wrapper: nn.Module, cfg: ExportConfig, size: int) -> bytes:
    """float32 TFLite via litert-torch (torch.export -> LiteRT; NHWC in and out)."""
    litert_torch = _require_litert_torch()
    sample = {INPUT_NAME: torch.rand(1, size, size, 3)}
    named = _NamedOutput(wrapper, output_name(cfg))
    model = litert_torch.signature("serving_default", named.eval(), sample_kwargs=sample).convert()
    return bytes(model.model_content())


class _NamedOutput(nn.Module):
    """Returning a dict names the TFLite signature output (``logits``/``probability``)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: D102
        return {self.name: self.model(image)}


def _tflite_quantizer(model_bytes: bytes) -> Any:
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(model_bytes)


def tflite_to_fp16(model_bytes: bytes) -> bytes:
    """fp16 weights (TFLite's "float16 quantisation"): half the size, float compute and IO."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = _tflite_quantizer(model_bytes)
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=AlgorithmName.FLOAT_CASTING)
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def quantize_tflite_int8(model_bytes: bytes, calib_inputs: list[np.ndarray], per_channel: bool) -> bytes:
    """Full-integer int8 ops with float32 input/output (quantise/dequantise at the edges)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    q = _tflite_quantizer(model_bytes)
    q.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                        activation_num_bits=8, weight_num_bits=8, weight_granularity=granularity)
    # Keep the float32 rgb/255 contract at the model boundary, like the other precisions.
    for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        q.update_quantization_recipe(regex=".*", operation_name=edge, algorithm_key=AlgorithmName.NO_QUANTIZE)
    data = [{INPUT_NAME: np.ascontiguousarray(x.transpose(0, 2, 3, 1))} for x in calib_inputs]
    calib = q.calibrate({"serving_default": data}, num_threads=1)
    return bytes(q.quantize(calib, enable_progress_report=False).quantized_model)


def add_tflite_metadata(model_bytes: bytes, metadata: dict[str, str]) -> bytes:
    """Store the contract JSON as a named metadata buffer in the flatbuffer."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    # The quantiser writes weights after the flatbuffer and points at them by offset; a
    # repack would drop that tail, so pull such buffers inline first (models here are MBs).
    for b in model.buffers or []:
        if b.offset and b.offset > 1:
            b.data = np.frombuffer(model_bytes, np.uint8, count=b.size, offset=b.offset)
            b.offset, b.size = 0, 0
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY_TFLITE
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _as_str(m.name) != METADATA_KEY_TFLITE] + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _as_str(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(Path(path).read_bytes())
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _as_str(entry.Name()) == METADATA_KEY_TFLITE:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return {}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The embedded contract of an exported ``.onnx`` or ``.tflite`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported model not found")
    if path.suffix == ".tflite":
        return read_tflite_metadata(path)
    return read_onnx_metadata(path)


# --------------------------------------------------------------------------- running exports


ProbFn = Callable[[np.ndarray], np.ndarray]


def _to_probability(y: np.ndarray, meta: dict[str, str], n: int, h: int, w: int) -> np.ndarray:
    y = y.astype(np.float32).reshape(n, h, w)
    if meta.get("output_kind", "logits") == "logits":
        y = 1.0 / (1.0 + np.exp(-y))
    return y


def load_exported(path: str | Path, threads: int = 1) -> ProbFn:
    """A function: float32 NCHW batch in [0,1] -> person probability (N, H, W), any format."""
    path = Path(path)
    meta = read_metadata(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

        def run_tflite(x: np.ndarray) -> np.ndarray:
            n, _, h, w = x.shape
            ys = []
            for xi in x:  # fixed batch of 1
                interp.set_tensor(inp["index"], np.ascontiguousarray(xi.transpose(1, 2, 0)[None]))
                interp.invoke()
                ys.append(interp.get_tensor(out["index"]).copy())
            return _to_probability(np.concatenate(ys), meta, n, h, w)

        return run_tflite

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    fixed_batch = session.get_inputs()[0].shape[0] == 1

    def run_onnx(x: np.ndarray) -> np.ndarray:
        n, _, h, w = x.shape
        if fixed_batch:
            y = np.concatenate([session.run(None, {in_name: x[i : i + 1]})[0] for i in range(n)])
        else:
            y = session.run(None, {in_name: x})[0]
        return _to_probability(y, meta, n, h, w)

    return run_onnx


def torch_probability(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model.eval()(torch.from_numpy(x)))[:, 0].numpy()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# --------------------------------------------------------------------------- verification


@dataclass
class VerifyReport:
    """Exported model vs PyTorch on the same inputs (probabilities; masks at 0.5)."""

    source: str
    images: int
    input_hw: tuple[int, int]
    max_abs_diff: float
    mean_abs_diff: float
    mean_iou: float
    min_iou: float
    ms_per_image: float
    tolerance: float | None = None

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def lines(self) -> list[str]:
        tol = "report only" if self.tolerance is None else f"limit {self.tolerance:g}"
        verdict = "ok" if self.passed else "FAILED"
        h, w = self.input_hw
        return [
            f"verification ({self.images} {self.source} images at {h}x{w}): {verdict}",
            f"  probability max |diff| vs PyTorch  {self.max_abs_diff:.3g}  ({tol})",
            f"  probability mean |diff|            {self.mean_abs_diff:.3g}",
            f"  mask IoU vs PyTorch (p>0.5)        mean {self.mean_iou:.4f}  min {self.min_iou:.4f}",
            f"  exported model time                {self.ms_per_image:.1f} ms/image",
        ]


def compare_outputs(run: ProbFn, model: nn.Module, inputs: list[np.ndarray]
                    ) -> tuple[list[float], list[float], list[float], float]:
    """Per-image (max |diff|, mean |diff|, IoU) of exported vs torch, and ms/image."""
    max_d, mean_d, ious = [], [], []
    elapsed = 0.0
    for x in inputs:
        t0 = time.perf_counter()
        got = run(x)
        elapsed += time.perf_counter() - t0
        ref = torch_probability(model, x)
        diff = np.abs(got - ref)
        max_d.append(float(diff.max()))
        mean_d.append(float(diff.mean()))
        ious.append(mask_iou(got > 0.5, ref > 0.5))
    return max_d, mean_d, ious, 1000.0 * elapsed / max(1, len(inputs))


def verify_export(path: str | Path, model: nn.Module, cfg: ExportConfig, size: int) -> VerifyReport:
    """Run the written file on ``cfg.verify_data`` photos (else random images) vs PyTorch."""
    count = max(1, cfg.verify_count)
    if cfg.verify_data:
        files = list_images(cfg.verify_data)
        if cfg.calib_data and cfg.precision == "int8":
            # Judge int8 on photos it was not calibrated on, when there are enough of them.
            calib = set(pick_spread(list_images(cfg.calib_data), cfg.calib_count))
            files = [f for f in files if f not in calib] or files
        images, source = [read_rgb(p) for p in pick_spread(files, count)], "real"
    else:
        images, source = random_images(count, size, cfg.seed), "random"
    inputs = [to_input(img, (size, size)) for img in images]
    run = load_exported(path, cfg.threads)
    max_d, mean_d, ious, ms = compare_outputs(run, model, inputs)
    return VerifyReport(source, len(inputs), (size, size), max(max_d), float(np.mean(mean_d)),
                        float(np.mean(ious)), min(ious), ms, VERIFY_MAX_PROB_DIFF[cfg.precision])


# --------------------------------------------------------------------------- orchestration


@dataclass
class ExportResult:
    path: Path
    metadata: dict[str, str]
    verify: VerifyReport
    fusion_max_diff: float
    bytes_written: int
    int8_candidates: dict[str, dict[str, float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.bytes_written / 1e6:.2f} MB)", "metadata:"]
        out += [f"  {k} = {v}" for k, v in self.metadata.items()]
        out.append(f"BatchNorm folding: max |logit diff| {self.fusion_max_diff:.3g}")
        if self.int8_candidates:
            out.append("int8 weight granularity (agreement with fp32 on held-out calibration photos):")
            for name, s in self.int8_candidates.items():
                out.append(f"  {name:12s} mean IoU {s['mean_iou']:.4f}  mean |dp| {s['mean_abs_diff']:.4f}"
                           f"  max |dp| {s['max_abs_diff']:.3f}")
        return out + self.verify.lines()


def _calibration_sets(cfg: ExportConfig, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Calibration inputs, and held-out inputs (other photos of the same folder) to pick
    the int8 granularity without judging it on the data it was calibrated on."""
    files = list_images(cfg.calib_data or "")
    calib = pick_spread(files, cfg.calib_count)
    rest = [f for f in files if f not in set(calib)]
    held = pick_spread(rest, min(INT8_SELECTION_IMAGES, len(rest))) if rest else calib[:INT8_SELECTION_IMAGES]
    to_x = [to_input(read_rgb(p), (size, size)) for p in calib]
    return to_x, [to_input(read_rgb(p), (size, size)) for p in held]


def _quantize_int8(float_bytes: bytes, model: nn.Module, cfg: ExportConfig, size: int
                   ) -> tuple[bytes, dict[str, dict[str, float]], dict[str, str]]:
    """Quantise with the requested granularity, or both and keep the one that agrees best
    with the float model (mean mask IoU, then mean |probability diff|)."""
    quantize = quantize_tflite_int8 if cfg.format == "tflite" else quantize_onnx_int8
    calib, held = _calibration_sets(cfg, size)
    names = ("per-channel", "per-tensor") if cfg.int8_granularity == "auto" else (cfg.int8_granularity,)
    candidates: dict[str, bytes] = {}
    scores: dict[str, dict[str, float]] = {}
    suffix = SUFFIXES[cfg.format]
    for name in names:
        candidates[name] = quantize(float_bytes, calib, per_channel=name == "per-channel")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"candidate{suffix}"
            # Metadata tells the runner how to read the output (logits vs probability, flat).
            path.write_bytes(_with_metadata(candidates[name], contract_metadata(model, cfg, size), cfg))
            max_d, mean_d, ious, _ = compare_outputs(load_exported(path, cfg.threads), model, held)
        scores[name] = {"mean_iou": float(np.mean(ious)), "mean_abs_diff": float(np.mean(mean_d)),
                        "max_abs_diff": max(max_d)}
    best = max(names, key=lambda n: (round(scores[n]["mean_iou"], 4), -scores[n]["mean_abs_diff"]))
    meta = {"int8_granularity": best, "calibration_images": str(len(calib)),
            "calibration_data": Path(cfg.calib_data or "").resolve().name}
    return candidates[best], scores, meta


def _with_metadata(model_bytes: bytes, meta: dict[str, str], cfg: ExportConfig) -> bytes:
    if cfg.format == "tflite":
        return add_tflite_metadata(model_bytes, meta)
    return add_onnx_metadata(model_bytes, meta)


def default_output_path(model_spec: str, cfg: ExportConfig, input_size: int) -> Path:
    """``<model>-<size|dyn>-<precision>[-prob][-flat].<ext>`` in the current folder."""
    stem = "portraitseg" if str(model_spec) == "default" else Path(model_spec).stem
    size = "dyn" if cfg.dynamic else str(cfg.size or input_size)
    parts = [stem, size, cfg.precision]
    parts += (["prob"] if cfg.output_kind == "probability" else []) + (["flat"] if cfg.flatten else [])
    return Path("-".join(parts) + SUFFIXES[cfg.format])


def export_model(model: MobileUNet, path: str | Path, cfg: ExportConfig) -> ExportResult:
    """Fold, convert, (quantise), embed the contract, write atomically, verify."""
    cfg.validate()
    path = Path(path)
    if path.suffix != SUFFIXES[cfg.format]:
        raise ValueError(f"{path}: a {cfg.format} export must end in {SUFFIXES[cfg.format]}")
    model = model.eval()
    size = cfg.size or model.config.input_size
    if size % 32:
        raise ValueError(f"model input_size {size} is not a multiple of 32; pass --size")
    fused = fuse_batchnorm(model)
    fusion_diff = check_fusion(model, fused)
    wrapper = ExportWrapper(fused, cfg.output_kind, cfg.flatten, channels_last=cfg.format == "tflite")
    if cfg.format == "tflite":
        data = export_tflite_bytes(wrapper, cfg, size)
    else:
        data = export_onnx_bytes(wrapper, cfg, size)
    extra: dict[str, str] = {}
    int8_scores: dict[str, dict[str, float]] = {}
    if cfg.precision == "fp16":
        data = tflite_to_fp16(data) if cfg.format == "tflite" else onnx_to_fp16(data)
    elif cfg.precision == "int8":
        data, int8_scores, extra = _quantize_int8(data, model, cfg, size)
    meta = contract_metadata(model, cfg, None if cfg.dynamic else size, extra)
    data = _with_metadata(data, meta, cfg)
    # Verify the bytes as written, under a hidden name, and only then move them into place:
    # a failed verification leaves no broken model behind.
    staged = write_atomic(path.with_name(f".{path.stem}.verify{path.suffix}"), data)
    try:
        report = verify_export(staged, model, cfg, size)
        if not report.passed:
            raise ValueError(f"{path}: verification failed: max |probability diff| {report.max_abs_diff:.3g} "
                             f"exceeds {report.tolerance:g} for {cfg.precision}")
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)
    return ExportResult(path, meta, report, fusion_diff, len(data), int8_scores)


def export_summary(result: ExportResult) -> dict[str, Any]:
    """JSON-friendly summary (for scripts and docs)."""
    return {"path": str(result.path), "bytes": result.bytes_written, "metadata": result.metadata,
            "verify": asdict(result.verify), "int8_candidates": result.int8_candidates,
            "fusion_max_diff": result.fusion_max_diff}
