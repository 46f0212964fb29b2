"""The runtime contract: what every backend takes and returns, and the one preprocessing.

Every runtime turns an RGB uint8 image (H, W, 3) into a person probability map float32 (H, W)
at the image's original size, the same way for our model and for the peer models:

1. ``preprocess`` (:func:`to_input_tensor`, the only input preprocessing in the package):
   stretch the whole image (no letterbox) to the model input (box halvings + anti-aliased
   bilinear when shrinking, bilinear otherwise), reorder channels, normalise
   ``(x - mean) / std * scale`` and lay out as NCHW or NHWC;
2. ``infer``: the model call alone (what a latency benchmark times);
3. ``postprocess``: raw output -> probability (sigmoid of 1-channel logits, softmax[1] of
   2-channel logits, or as is) -> bilinear resize back to (H, W).

``prob(image)`` chains the three. Backends live in the sibling modules (``onnx``, ``tflite``,
``torch``); :func:`portraitseg.runtimes.open_model` picks one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from ..postprocess import shrink_linear

LAYOUTS = ("NCHW", "NHWC")
OUTPUT_KINDS = ("logits", "probability")


@dataclass(frozen=True)
class InputFormat:
    """How a model wants its input. Values are computed as ``(pixel - mean) / std * scale`` with
    pixel in 0..255 and mean/std given in the model's channel order."""

    size: tuple[int, int]  # (height, width)
    layout: str = "NCHW"
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")


@dataclass(frozen=True)
class OutputFormat:
    """How to read a model's output: logits or probability, layout, and whether the spatial
    map comes flattened as ``[1, H*W]`` (then it has the input's height and width)."""

    kind: str = "logits"
    layout: str = "NCHW"
    flattened: bool = False

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")


# Our own model's contract: RGB in [0, 1], NCHW, person logits (N, 1, H, W).
OURS_OUTPUT = OutputFormat(kind="logits", layout="NCHW")


def ours_input(size: int | tuple[int, int], layout: str = "NCHW") -> InputFormat:
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return InputFormat(size=hw, layout=layout)


# ----------------------------------------------------------------------------- pre/post processing


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Stretch to (h, w) as the model input: exact 2x box halvings, then an anti-aliased
    bilinear step when shrinking (:func:`~portraitseg.postprocess.shrink_linear`); bilinear
    when enlarging on either axis."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    if not shrinking:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    # Versus one area resize: 720p -> 224x224 in 0.3 ms instead of 2.0 ms on one core, with the
    # same or slightly higher mIoU on every validation set (docs/benchmark.md).
    return shrink_linear(image, (w, h))


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {desc}")


def to_input_tensor(image: np.ndarray, fmt: InputFormat) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, 3, h, w) or (1, h, w, 3) as ``fmt`` says."""
    check_image(image)
    x = resize_image(image, fmt.size)
    if fmt.channel_order == "BGR":
        x = x[..., ::-1]
    x = x.astype(np.float32)
    if fmt.mean != (0.0, 0.0, 0.0) or fmt.std != (1.0, 1.0, 1.0):
        x = (x - np.asarray(fmt.mean, np.float32)) / np.asarray(fmt.std, np.float32)
    x *= np.float32(fmt.scale)
    x = x.transpose(2, 0, 1) if fmt.layout == "NCHW" else x
    return np.ascontiguousarray(x[None])


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large negative logits.
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def output_to_prob(raw: np.ndarray, fmt: OutputFormat, input_hw: tuple[int, int]) -> np.ndarray:
    """First batch item of a raw output -> person probability (h, w) at model resolution."""
    out = np.asarray(raw, dtype=np.float32)[0]
    if fmt.flattened or out.ndim == 1:
        h, w = input_hw
        if out.size % (h * w):
            raise ValueError(f"flattened output of {out.size} values does not fit the {h}x{w} input")
        c = out.size // (h * w)
        out = out.reshape((h, w, c) if fmt.layout == "NHWC" else (c, h, w))
    if out.ndim == 2:
        out = out[None]
    elif fmt.layout == "NHWC":
        out = out.transpose(2, 0, 1)
    if out.shape[0] == 1:
        return sigmoid(out[0]) if fmt.kind == "logits" else out[0]
    if out.shape[0] == 2:
        # Two channels (background, person): softmax[1] == sigmoid(l1 - l0).
        return sigmoid(out[1] - out[0]) if fmt.kind == "logits" else out[1]
    raise ValueError(f"expected 1 or 2 output channels, got output shape {tuple(np.shape(raw))}")


def prob_to_image_size(prob: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a probability map to (H, W), clipped to [0, 1]."""
    h, w = size_hw
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- runtimes


class Runtime(ABC):
    """Base: subclasses set ``name``, ``input_format``, ``output_format`` and implement ``infer``."""

    name: str
    input_format: InputFormat
    output_format: OutputFormat
    backend: str = ""

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input (height, width)."""
        return self.input_format.size

    @property
    @abstractmethod
    def num_threads(self) -> int | None:
        """Intra-op threads the backend runs with (None: backend default)."""

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> the model's input tensor."""
        return to_input_tensor(image, self.input_format)

    @abstractmethod
    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The model call alone: input tensor -> raw output array."""

    def postprocess(self, raw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """Raw output -> probability float32 (H, W) in [0, 1] at ``size_hw``."""
        return prob_to_image_size(output_to_prob(raw, self.output_format, self.input_size), size_hw)

    def prob(self, image: np.ndarray) -> np.ndarray:
        """Person probability float32 (H, W) in [0, 1] for an RGB uint8 image (H, W, 3)."""
        return self.postprocess(self.infer(self.preprocess(image)), image.shape[:2])

    def for_thread(self) -> Runtime:
        """A runtime safe to call from one more thread: ``self`` where the backend's session is
        thread-safe (onnxruntime, torch), a fresh copy where it is not (a TFLite interpreter)."""
        return self

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({self.name!r}, input={h}x{w}, threads={self.num_threads})"


# ----------------------------------------------------------------------------- metadata helpers


def is_true(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes")


def size_from_metadata(meta: dict[str, str]) -> tuple[int, int] | None:
    """An export's working size from its metadata: ``input_size`` ("256", "144x256"), else the
    training ``input_size`` inside the ``model_config`` JSON (dynamic-shape exports)."""
    text = meta.get("input_size", "")
    parts = text.replace("x", ",").split(",")
    if text and all(p.strip().isdigit() for p in parts):
        hw = [int(p) for p in parts]
        return (hw[0], hw[0]) if len(hw) == 1 else (hw[0], hw[1])
    try:
        size = int(json.loads(meta.get("model_config", "{}")).get("input_size"))
    except (TypeError, ValueError, AttributeError):
        return None
    return (size, size)


def layout_from_shape(shape: list) -> str:
    """NHWC when the last dim is 3 channels, NCHW when dim 1 is (the default otherwise)."""
    return "NHWC" if shape[-1] == 3 and shape[1] != 3 else "NCHW"


def spatial_dims(shape: list, layout: str) -> tuple[object, object]:
    return (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])


def output_layout(shape: list[int], default: str) -> str:
    """Channels-last when a 4-D output ends in 1-2 channels after a spatial dim."""
    if len(shape) == 4:
        return "NHWC" if shape[-1] <= 2 < shape[1] else "NCHW"
    return default
