"""PyTorch -> ONNX: the graph export, fp16 conversion, int8 (QDQ) quantisation, metadata.
(Reading ONNX files back is :mod:`portraitseg.runtimes.onnx`'s job.)"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from .config import INPUT_NAME, ExportConfig, output_name


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
            # reduce_range (7-bit weights): without VNNI (AVX2-only CPUs, like this project's VMs
            # now) ORT's u8 x s8 kernels saturate their 16-bit intermediate sums; with 8-bit
            # weights the int8 model's mean logit error on real photos was 15% of the logits'
            # spread there (tests/export/test_export.py), within the 10% limit with 7-bit ones.
            quantize_static(
                str(src), str(dst), _ImageReader(calib_inputs), quant_format=QuantFormat.QDQ,
                per_channel=per_channel, reduce_range=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
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
