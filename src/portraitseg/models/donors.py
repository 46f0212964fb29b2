"""Pretrained MobileNetV2-0.5 encoders from MIT-licensed donor models (``../shared/anchors``).

The original project's first insight: start from a pretrained network. Two peer files carry
one with our encoder's layer sequence:

- ``seed_munet_bilinear_128_uint8.tflite`` (the original Keras Mobile-UNet): Keras channel
  counts (= ours, ``divisor=8``); BatchNorm folded into each conv's bias; most 1x1 kernels
  int8 with per-channel scales.
- ``deeplab_mnv2_dm05_aiseg_513.onnx`` (DeepLabV3+ trained on 34k half-body portraits): float
  weights with separate BatchNorms (epsilon 1e-3); TF-slim channel counts, loaded with
  ``divisor=4``.

Both list their encoder convs in forward order (stem, then expand / depthwise / project per
block), which is the order of our encoder's ``ConvBNAct`` modules, so the mapping is by
position with every shape checked. Only strides and padding differ from ours (Keras pads
stride-2 convs bottom/right only, the DeepLab file runs its last stages at stride 1): the
filters carry over, and fine-tuning absorbs the shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blocks import ConvBNAct
from .mobilenetv2 import MobileNetV2Encoder

DONOR_DIVISORS = {".tflite": 8, ".onnx": 4}


@dataclass
class ConvBN:
    """One donor conv in PyTorch layout (O, I/groups, kH, kW) with its affine BatchNorm."""

    weight: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    dilation: int = 1  # the donor ran this conv dilated (stored as a zero-stuffed bigger kernel)


def encoder_convs(encoder: MobileNetV2Encoder) -> list[ConvBNAct]:
    """The encoder's conv+BN units in forward order."""
    return [m for m in encoder.modules() if isinstance(m, ConvBNAct)]


def _dequantize(values: np.ndarray, quant: dict) -> np.ndarray:
    scales, zeros = quant["scales"], quant["zero_points"]
    if len(scales) == 0:
        return values.astype(np.float32)
    shape = [1] * values.ndim
    shape[quant["quantized_dimension"]] = -1
    return (values.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape).astype(np.float32)


def read_seed_tflite(path: str | Path, count: int) -> list[ConvBN]:
    """The first ``count`` convs of a Keras MobileNetV2 TFLite file (BN folded into the bias)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(path))
    interp.allocate_tensors()
    details = interp.get_tensor_details()
    ops = interp._get_ops_details()
    # Some kernels are made at run time by a DEQUANTIZE op: read its int8 input instead.
    dequantized_from = {o["outputs"][0]: o["inputs"][0] for o in ops if o["op_name"] == "DEQUANTIZE"}

    def constant(index: int) -> np.ndarray:
        index = dequantized_from.get(index, index)
        return _dequantize(interp.get_tensor(index), details[index]["quantization_parameters"])

    convs: list[ConvBN] = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(convs) == count:
            continue
        kernel, bias = constant(op["inputs"][1]), constant(op["inputs"][2])
        # CONV_2D kernels are (O, kH, kW, I); DEPTHWISE_CONV_2D kernels (1, kH, kW, C).
        order = (0, 3, 1, 2) if op["op_name"] == "CONV_2D" else (3, 0, 1, 2)
        n = len(bias)
        convs.append(
            ConvBN(kernel.transpose(order).copy(), np.ones(n), bias, np.zeros(n), np.ones(n), 0.0)
        )
    return convs


def read_deeplab_onnx(path: str | Path, count: int) -> list[ConvBN]:
    """The first ``count`` Conv -> BatchNormalization pairs of the TF-slim MobileNetV2 encoder."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    convs: list[ConvBN] = []
    for node in graph.node:
        if node.op_type != "BatchNormalization" or not node.name.startswith("MobilenetV2/"):
            continue
        conv = producer[node.input[0]]
        if conv.op_type != "Conv":
            raise ValueError(f"{path}: {node.name} does not follow a Conv")
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (inits[name] for name in node.input[1:5])
        weight, dilation = _undilate(inits[conv.input[1]])
        convs.append(ConvBN(weight, gamma, beta, mean, var, float(eps), dilation))
        if len(convs) == count:
            break
    return convs


@torch.no_grad()
def load_donor_encoder(encoder: MobileNetV2Encoder, path: str | Path) -> MobileNetV2Encoder:
    """Copy a donor file's encoder weights into ``encoder`` (in place; shapes must match)."""
    path = Path(path)
    units = encoder_convs(encoder)
    if path.suffix == ".tflite":
        donor = read_seed_tflite(path, len(units))
        _stem_to_signed_input(donor[0])
    elif path.suffix == ".onnx":
        donor = read_deeplab_onnx(path, len(units))
    else:
        raise ValueError(f"{path}: donor must be a .tflite (seed Mobile-UNet) or .onnx (DeepLab) file")
    if len(donor) != len(units):
        raise ValueError(f"{path}: {len(donor)} encoder convs, ours has {len(units)}")
    for i, (unit, src) in enumerate(zip(units, donor)):
        conv, bn = unit[0], unit[1]
        if tuple(conv.weight.shape) != src.weight.shape:
            raise ValueError(
                f"{path}: conv {i} is {src.weight.shape}, ours {tuple(conv.weight.shape)} "
                f"(wrong width or divisor? .onnx donors need divisor=4)"
            )
        # np.array copies: the donor's arrays may be read-only views of the model file, and torch
        # warns (with a source line) on a non-writable array.
        conv.weight.copy_(torch.from_numpy(np.array(src.weight, dtype=np.float32)))
        unit.donor_dilation = src.dilation  # kept for tests that replay the donor's geometry
        _set_bn(bn, src)
    return encoder


def _undilate(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """A TF atrous 3x3 conv exported as a zero-stuffed (2d+1)x(2d+1) kernel -> (3x3, d)."""
    k = weight.shape[-1]
    if k <= 3:
        return weight, 1
    d = (k - 1) // 2
    taps = weight[..., ::d, ::d]
    if k != 2 * d + 1 or not np.allclose(np.abs(weight).sum(), np.abs(taps).sum()):
        raise ValueError(f"{k}x{k} kernel is not a dilated 3x3 one")
    return np.ascontiguousarray(taps), d


def _stem_to_signed_input(stem: ConvBN) -> None:
    """The seed's encoder reads RGB in [0, 1]; ours reads ``2x - 1``. With ``x = (e + 1) / 2``
    the stem conv is ``W/2 * e`` plus the constant ``sum(W)/2``, which joins the folded bias
    (exact away from the zero-padded border, where the donor saw 0 and ours sees -1 -> 0)."""
    stem.beta = stem.beta + stem.weight.sum(axis=(1, 2, 3)) / 2
    stem.weight = stem.weight / 2


def _set_bn(bn: nn.BatchNorm2d, src: ConvBN) -> None:
    # Our BatchNorm's epsilon differs from the donor's; moving the difference into the variance
    # keeps the normalisation exact. A folded BN (eps 0) becomes var = 1 - eps: scale 1.
    bn.weight.copy_(torch.from_numpy(src.gamma.astype(np.float32)))
    bn.bias.copy_(torch.from_numpy(src.beta.astype(np.float32)))
    bn.running_mean.copy_(torch.from_numpy(src.mean.astype(np.float32)))
    var = src.var.astype(np.float64) + src.eps - bn.eps
    bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))


__all__ = ["DONOR_DIVISORS", "encoder_convs", "load_donor_encoder", "read_deeplab_onnx", "read_seed_tflite"]
