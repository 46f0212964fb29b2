"""PyTorch -> TFLite (litert-torch, no TensorFlow): conversion, fp16/int8 (ai-edge-quantizer)
and the contract metadata entry. The reader of that entry is
:func:`portraitseg.runtimes.read_tflite_metadata` (one copy, shared with the runtime)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from ..locate import install_hint
from ..runtimes import TFLITE_METADATA_KEY
from ..runtimes.tflite import decode_name
from .config import INPUT_NAME, ExportConfig, output_name


def tflite_missing() -> str:
    """What to install for ``--format tflite``, as the pip command that works for this install."""
    return (f"--format tflite needs the PyTorch->LiteRT converter: {install_hint('tflite-export')} "
            "(litert-torch; no TensorFlow needed)")


def _require_litert_torch() -> Any:
    try:
        import litert_torch
    except ImportError as exc:
        raise ValueError(tflite_missing()) from exc
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
    entry.name = TFLITE_METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    others = [m for m in (model.metadata or []) if decode_name(m.name) != TFLITE_METADATA_KEY]
    model.metadata = [*others, entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
