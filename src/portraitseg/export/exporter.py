"""``export_model``: fold, wrap, convert, (quantise), embed the contract, write, verify.

Every export:

1. folds BatchNorm into the preceding convolutions (:mod:`.fuse`, checked against the
   unfused model),
2. wraps the model for the chosen contract (:class:`ExportWrapper`: NCHW for ONNX, NHWC for
   TFLite, ``logits`` or ``probability`` output, optionally flattened to ``[N, H*W]``),
3. converts (:mod:`.onnx`, :mod:`.tflite`), optionally to fp16 or calibrated int8,
4. embeds the I/O contract as metadata (ONNX ``metadata_props``; a ``portraitseg`` metadata
   entry in the TFLite flatbuffer), writes the file atomically,
5. opens the written file through :func:`~portraitseg.runtimes.open_model` and compares its
   person probability with PyTorch's (:mod:`.verify`).

The default output is **logits** (what the PyTorch model returns, so fp32 exports compare
exactly); ``output_kind="probability"`` appends a sigmoid for consumers that expect
MediaPipe-style probabilities. Either way the choice is recorded in the metadata.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..checkpoint import check_weights
from ..data.io import read_rgb
from ..outfiles import check_outputs, write_files
from ..runtimes import open_model, ours_input, to_input_tensor
from . import onnx as onnx_export
from . import tflite as tflite_export
from .config import INPUT_NAME, INT8_SELECTION_IMAGES, SUFFIXES, ExportConfig, output_name
from .fuse import check_fusion, fuse_batchnorm
from .verify import VerifyReport, compare_outputs, list_images, pick_spread, torch_reference, verify_export


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


def contract_metadata(model: Any, cfg: ExportConfig, size: int | None,
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
    """Calibration input tensors (the runtime's own preprocessing), and held-out photos (others
    of the same folder) to pick the int8 granularity without judging it on its calibration data."""
    files = list_images(cfg.calib_data or "")
    calib = pick_spread(files, cfg.calib_count)
    rest = [f for f in files if f not in set(calib)]
    held = pick_spread(rest, min(INT8_SELECTION_IMAGES, len(rest))) if rest else calib[:INT8_SELECTION_IMAGES]
    fmt = ours_input(size)  # NCHW: the ONNX graph's layout; the TFLite quantiser transposes
    return [to_input_tensor(read_rgb(p), fmt) for p in calib], [read_rgb(p) for p in held]


def _quantize_int8(float_bytes: bytes, model: nn.Module, cfg: ExportConfig, size: int
                   ) -> tuple[bytes, dict[str, dict[str, float]], dict[str, str]]:
    """Quantise with the requested granularity, or both and keep the one that agrees best
    with the float model (mean mask IoU, then mean |probability diff|)."""
    tflite = cfg.format == "tflite"
    quantize = tflite_export.quantize_tflite_int8 if tflite else onnx_export.quantize_onnx_int8
    calib, held = _calibration_sets(cfg, size)
    names = ("per-channel", "per-tensor") if cfg.int8_granularity == "auto" else (cfg.int8_granularity,)
    candidates: dict[str, bytes] = {}
    scores: dict[str, dict[str, float]] = {}
    reference = torch_reference(model, size)
    for name in names:
        candidates[name] = quantize(float_bytes, calib, per_channel=name == "per-channel")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"candidate{SUFFIXES[cfg.format]}"
            # Metadata tells the runtime how to read the output (logits vs probability, flat).
            path.write_bytes(_with_metadata(candidates[name], contract_metadata(model, cfg, size), cfg))
            candidate = open_model(path, threads=cfg.threads, input_size=size)
            max_d, mean_d, ious, _ = compare_outputs(candidate, reference, held)
        scores[name] = {"mean_iou": float(np.mean(ious)), "mean_abs_diff": float(np.mean(mean_d)),
                        "max_abs_diff": max(max_d)}
    best = max(names, key=lambda n: (round(scores[n]["mean_iou"], 4), -scores[n]["mean_abs_diff"]))
    meta = {"int8_granularity": best, "calibration_images": str(len(calib)),
            "calibration_data": Path(cfg.calib_data or "").resolve().name}
    return candidates[best], scores, meta


def _with_metadata(model_bytes: bytes, meta: dict[str, str], cfg: ExportConfig) -> bytes:
    if cfg.format == "tflite":
        return tflite_export.add_tflite_metadata(model_bytes, meta)
    return onnx_export.add_onnx_metadata(model_bytes, meta)


def default_output_path(model_spec: str, cfg: ExportConfig, input_size: int) -> Path:
    """``<model>-<size|dyn>-<precision>[-prob][-flat].<ext>`` in the current folder."""
    stem = "portraitseg" if str(model_spec) == "default" else Path(model_spec).stem
    size = "dyn" if cfg.dynamic else str(cfg.size or input_size)
    parts = [stem, size, cfg.precision]
    parts += (["prob"] if cfg.output_kind == "probability" else []) + (["flat"] if cfg.flatten else [])
    return Path("-".join(parts) + SUFFIXES[cfg.format])


def export_model(model: Any, path: str | Path, cfg: ExportConfig) -> ExportResult:
    """Fold, convert, (quantise), embed the contract, write atomically, verify (see the module
    docstring); ``model`` is a Mobile-UNet (anything with a ``config.input_size``)."""
    cfg.validate()
    path = Path(path)
    if path.suffix != SUFFIXES[cfg.format]:
        raise ValueError(f"{path}: an export to {cfg.format} must end in {SUFFIXES[cfg.format]}")
    check_outputs({"output": path}, overwrite=True, make_folders=True)  # before minutes of converting
    model = model.eval()
    size = cfg.size or model.config.input_size
    if size % 32:
        raise ValueError(f"model input_size {size} is not a multiple of 32; pass --size")
    # Damaged weights give garbage that PyTorch and the export agree on: refuse them here.
    check_weights(model.state_dict(), "model")
    fused = fuse_batchnorm(model)
    fusion_diff = check_fusion(model, fused)
    wrapper = ExportWrapper(fused, cfg.output_kind, cfg.flatten, channels_last=cfg.format == "tflite")
    if cfg.format == "tflite":
        data = tflite_export.export_tflite_bytes(wrapper, cfg, size)
    else:
        data = onnx_export.export_onnx_bytes(wrapper, cfg, size)
    extra: dict[str, str] = {}
    int8_scores: dict[str, dict[str, float]] = {}
    if cfg.precision == "fp16":
        to_fp16 = tflite_export.tflite_to_fp16 if cfg.format == "tflite" else onnx_export.onnx_to_fp16
        data = to_fp16(data)
    elif cfg.precision == "int8":
        data, int8_scores, extra = _quantize_int8(data, model, cfg, size)
    meta = contract_metadata(model, cfg, None if cfg.dynamic else size, extra)
    data = _with_metadata(data, meta, cfg)
    # Verify the bytes as written, under a hidden name, and only then move them into place:
    # a failed verification leaves no broken model behind.
    staged = path.with_name(f".{path.stem}.verify{path.suffix}")
    write_files({staged: data})  # a full disk or read-only folder: one line naming the file
    try:
        try:
            report = verify_export(staged, model, cfg, size)
        except ValueError as exc:
            raise ValueError(f"{path}: verification failed: {exc}") from None
        if not report.passed:
            raise ValueError(f"{path}: verification failed: max |probability diff| {report.max_abs_diff:.3g} "
                             f"exceeds {report.tolerance:g} for {cfg.precision}")
        try:
            staged.replace(path)
        except OSError as exc:
            raise ValueError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        staged.unlink(missing_ok=True)
    return ExportResult(path, meta, report, fusion_diff, len(data), int8_scores)


def export_summary(result: ExportResult) -> dict[str, Any]:
    """JSON-friendly summary (for scripts and docs)."""
    return {"path": str(result.path), "bytes": result.bytes_written, "metadata": result.metadata,
            "verify": asdict(result.verify), "int8_candidates": result.int8_candidates,
            "fusion_max_diff": result.fusion_max_diff}
