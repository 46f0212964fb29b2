"""Inference runtimes: one session-like object per model, created once and reused.

Every runtime turns an RGB uint8 image (H, W, 3) into a person probability map float32 (H, W)
at the image's original size, the same way for our model and for the peer models:

1. ``preprocess``: stretch the whole image (no letterbox) to the model input with
   ``cv2.INTER_AREA`` when shrinking (anti-aliased) or ``cv2.INTER_LINEAR`` otherwise, reorder
   channels, normalise ``(x - mean) / std * scale`` and lay out as NCHW or NHWC;
2. ``infer``: the model call alone (what a latency benchmark times);
3. ``postprocess``: raw output -> probability (sigmoid of 1-channel logits, softmax[1] of
   2-channel logits, or as is) -> bilinear resize back to (H, W).

``prob(image)`` chains the three. ``open_runtime(spec)`` builds the right runtime from
``"default"``, a ``.pt``/``.onnx``/``.tflite`` path or a peer-model name (see ``PEERS``).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .postprocess import shrink_linear

if TYPE_CHECKING:  # torch is imported lazily: peer-only use should not pay for it
    import torch

LAYOUTS = ("NCHW", "NHWC")
OUTPUT_KINDS = ("logits", "probability")
ANCHORS_ENV = "PORTRAITSEG_ANCHORS"
DEFAULT_ANCHORS = Path("..") / "shared" / "anchors"  # relative to the working directory
TORCH_SUFFIXES = (".pt", ".pth")
# Name of the JSON metadata buffer that `portraitseg export` embeds in .tflite files.
TFLITE_METADATA_KEY = "portraitseg"


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


@dataclass(frozen=True)
class PeerSpec:
    """A peer model in the anchors folder, exactly as its README describes it."""

    name: str
    filename: str
    input: InputFormat
    output: OutputFormat
    description: str

    @property
    def backend(self) -> str:
        return "tflite" if self.filename.endswith(".tflite") else "onnx"


_X255 = {"scale": 1.0 / 255.0}
PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            "mediapipe_selfie_256",
            "mediapipe_selfie_256.tflite",
            InputFormat((256, 256), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC"),
            "MediaPipe Selfie Segmentation, general (Apache-2.0)",
        ),
        PeerSpec(
            "mediapipe_selfie_landscape_144x256",
            "mediapipe_selfie_landscape_144x256.tflite",
            InputFormat((144, 256), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC"),
            "MediaPipe Selfie Segmentation, landscape 144x256 (Apache-2.0)",
        ),
        PeerSpec(
            "seed_munet_bilinear_128_uint8",
            "seed_munet_bilinear_128_uint8.tflite",
            InputFormat((128, 128), "NHWC", "RGB", **_X255),
            OutputFormat("probability", "NHWC", flattened=True),
            "original Keras project's Mobile-UNet (MNV2-0.5, bilinear), weight-only uint8 (MIT)",
        ),
        PeerSpec(
            "sinet_320",
            "sinet_320.onnx",
            # SINet's own recipe: BGR, subtract mean, divide by std, then divide by 255.
            InputFormat(
                (320, 320),
                "NCHW",
                "BGR",
                mean=(102.890434, 111.25247, 126.91212),
                std=(62.93292, 62.82138, 66.355705),
                scale=1.0 / 255.0,
            ),
            OutputFormat("logits", "NCHW"),  # 2 channels (bg, person) -> softmax[1]
            "SINet retrained on AISegment+Baidu, 87K params (MIT)",
        ),
        PeerSpec(
            "prisma_net_256",
            "prisma_net_256.onnx",
            InputFormat((256, 256), "NCHW", "RGB", **_X255),
            OutputFormat("probability", "NCHW"),
            "Prisma-Net, 0.9M params (MIT)",
        ),
    )
}
# Peer names are the file stems; the anchors README's short name is accepted too.
PEER_ALIASES = {"mediapipe_selfie_landscape": "mediapipe_selfie_landscape_144x256"}


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

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({self.name!r}, input={h}x{w}, threads={self.num_threads})"


class TorchRuntime(Runtime):
    """Our Mobile-UNet in PyTorch (CPU, eval mode), from a model or a checkpoint/"default"."""

    backend = "torch"

    def __init__(
        self,
        model: torch.nn.Module | str | Path,
        name: str | None = None,
        input_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        if isinstance(model, (str, Path)):
            from .checkpoint import load_model

            name = name or _spec_label(str(model))
            model = load_model(model)
        self.model = model.eval()
        self.name = name or "model"
        size = int(input_size or model.config.input_size)
        if size % 32:
            raise ValueError(f"{self.name}: input size {size} must be a multiple of 32")
        self.input_format = ours_input(size)
        self.output_format = OURS_OUTPUT
        self._threads = threads
        self._torch = torch

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        # torch's thread count is process-wide: set it for this call only (costs < 1 us), so
        # evaluating at 1 thread does not slow down whatever else runs in the process.
        previous = torch.get_num_threads()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(tensor)).numpy()
        finally:
            torch.set_num_threads(previous)


def _onnx_metadata(session) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map or {})


def _is_true(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes")


def _size_from_metadata(meta: dict[str, str]) -> tuple[int, int] | None:
    """A dynamic-shape export's working size: ``input_size`` ("256", "144x256"), else the
    training ``input_size`` inside the ``model_config`` JSON."""
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


def _layout_from_shape(shape: list) -> str:
    """NHWC when the last dim is 3 channels, NCHW when dim 1 is (the default otherwise)."""
    return "NHWC" if shape[-1] == 3 and shape[1] != 3 else "NCHW"


def _spatial_dims(shape: list, layout: str) -> tuple[object, object]:
    return (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])


def split_single_output_convs(path: str | Path) -> bytes | None:
    """The ONNX model at ``path`` with every k x k, one-output-channel Conv (a segmentation
    head) rewritten as a 1x1 Conv to k*k "tap" channels + Pad + k*k shifted Slices summed;
    None when no node qualifies (or the file cannot be parsed here).

    Same function, same weights, just re-arranged (outputs agree to ~1e-5): onnxruntime's CPU
    convolution works in blocks of 8-16 output channels, so a 1-channel 3x3 conv at 224x224
    costs as much as a 16-channel one (1.2 ms of the default model's 4 ms on one core); the
    rewritten form takes ~0.3 ms.
    """
    try:
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(str(path))
    except Exception:  # no onnx package, or a file onnxruntime may still read
        return None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes, new_inits, changed = [], [], False
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        w = numpy_helper.to_array(weight) if weight is not None else None
        k = w.shape[2] if w is not None and w.ndim == 4 else 0
        if not (
            w is not None and w.shape[0] == 1 and w.shape[2] == w.shape[3] == k and k % 2 == 1 and k > 1
            and attrs.get("group", 1) == 1 and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and list(attrs.get("strides", [1, 1])) == [1, 1]
            and list(attrs.get("dilations", [1, 1])) == [1, 1]
            and list(attrs.get("pads", [0, 0, 0, 0])) == [k // 2] * 4
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in inits)
        ):
            new_nodes.append(node)
            continue
        changed = True
        p, out = f"{node.output[0]}__taps", node.output[0]
        taps = np.ascontiguousarray(w[0].transpose(1, 2, 0).reshape(k * k, w.shape[1], 1, 1))  # tap dy*k+dx
        new_inits += [
            numpy_helper.from_array(taps.astype(w.dtype), f"{p}/w"),
            numpy_helper.from_array(np.array([0, 0, k // 2, k // 2] * 2, np.int64), f"{p}/pads"),
            numpy_helper.from_array(np.array([1, 2, 3], np.int64), f"{p}/axes"),
        ]
        new_nodes += [helper.make_node("Conv", [node.input[0], f"{p}/w"], [f"{p}/t"], kernel_shape=[1, 1]),
                      helper.make_node("Pad", [f"{p}/t", f"{p}/pads"], [f"{p}/tp"])]
        acc = ""
        big = np.iinfo(np.int64).max
        for dy in range(k):
            for dx in range(k):
                i = dy * k + dx
                ends = [i + 1, dy - (k - 1) or big, dx - (k - 1) or big]
                new_inits += [numpy_helper.from_array(np.array([i, dy, dx], np.int64), f"{p}/s{i}"),
                              numpy_helper.from_array(np.array(ends, np.int64), f"{p}/e{i}")]
                new_nodes.append(helper.make_node("Slice", [f"{p}/tp", f"{p}/s{i}", f"{p}/e{i}", f"{p}/axes"],
                                                  [f"{p}/sl{i}"]))
                if acc:
                    new_nodes.append(helper.make_node("Add", [acc, f"{p}/sl{i}"], [f"{p}/acc{i}"]))
                    acc = f"{p}/acc{i}"
                else:
                    acc = f"{p}/sl{i}"
        if len(node.input) > 2 and node.input[2]:
            new_nodes.append(helper.make_node("Add", [acc, node.input[2]], [out]))
        else:
            new_nodes.append(helper.make_node("Identity", [acc], [out]))
    if not changed:
        return None
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return model.SerializeToString()


class OnnxRuntime(Runtime):
    """An ONNX model through onnxruntime (CPU).

    Without ``input_format``/``output_format`` it assumes our export contract (RGB [0, 1],
    person logits), reads the input size and layout from the session's input shape, and
    honours ``metadata_props`` keys ``output_kind`` (logits/probability), ``layout``
    (NCHW/NHWC), ``flattened`` (true/false) and, for dynamic input shapes, ``input_size``.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = 1,
        input_format: InputFormat | None = None,
        output_format: OutputFormat | None = None,
        input_size: int | tuple[int, int] | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # some peer files trigger harmless initializer warnings
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            model = split_single_output_convs(path)
            source = str(path) if model is None else model
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({exc.__class__.__name__})") from exc
        self.path, self.name, self._threads = path, name or path.stem, threads
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_name = inp.name, self.session.get_outputs()[0].name
        meta = _onnx_metadata(self.session)
        self.input_format = input_format or self._input_from_session(inp.shape, meta, input_size)
        self.output_format = output_format or OutputFormat(
            kind=meta.get("output_kind", "logits"),
            layout=meta.get("layout", self.input_format.layout),
            flattened=_is_true(meta.get("flattened", "false")),
        )

    def _input_from_session(self, shape: list, meta: dict[str, str], size) -> InputFormat:
        if len(shape) != 4:
            raise ValueError(f"{self.path}: expected a 4-D image input, got shape {shape}")
        layout = meta.get("layout") or _layout_from_shape(shape)
        if size is not None:
            return ours_input(size, layout)
        h, w = _spatial_dims(shape, layout)
        if isinstance(h, int) and isinstance(w, int):
            return ours_input((h, w), layout)
        size = _size_from_metadata(meta)
        if size is None:
            raise ValueError(
                f"{self.path}: input height/width are dynamic ({shape}) and the metadata names no "
                "input size; pass input_size"
            )
        return ours_input(size, layout)

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: tensor})[0]


def tflite_metadata(path: str | Path) -> dict[str, str]:
    """The JSON contract ``portraitseg export`` stores in a .tflite (empty for other files)."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(Path(path).read_bytes())
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            name = entry.Name()
            if (name.decode() if isinstance(name, bytes) else name) == TFLITE_METADATA_KEY:
                return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode())
    except (ValueError, UnicodeDecodeError, IndexError, AttributeError):
        return {}  # unreadable metadata: fall back to inference from shapes
    return {}


class TFLiteRuntime(Runtime):
    """A TFLite model through ai-edge-litert (XNNPACK on CPU).

    Without formats given, values are RGB [0, 1], the input layout comes from the input shape
    (NHWC if the last dim is 3), a ``[1, H*W]`` output is taken as flattened, and the output
    kind is ``output_kind`` if given, else the ``output_kind`` of the metadata that
    ``portraitseg export`` embeds, else logits (our model's contract).
    """

    backend = "tflite"

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = 1,
        input_format: InputFormat | None = None,
        output_format: OutputFormat | None = None,
        output_kind: str | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such TFLite model")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self.path, self.name, self._threads = path, name or path.stem, threads
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        shape = [int(d) for d in inp["shape"]]
        if len(shape) != 4:
            raise ValueError(f"{path}: expected a 4-D image input, got shape {shape}")
        layout = _layout_from_shape(shape)
        self.input_format = input_format or ours_input(_spatial_dims(shape, layout), layout)
        out_shape = [int(d) for d in out["shape"]]
        if output_format is None:
            meta = tflite_metadata(path)
            output_format = OutputFormat(
                kind=output_kind or meta.get("output_kind", "logits"),
                layout=_output_layout(out_shape, layout),
                flattened=len(out_shape) == 2,
            )
        self.output_format = output_format

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out_index)  # a copy: safe to keep


def _output_layout(shape: list[int], default: str) -> str:
    """Channels-last when a 4-D output ends in 1-2 channels after a spatial dim."""
    if len(shape) == 4:
        return "NHWC" if shape[-1] <= 2 < shape[1] else "NCHW"
    return default


# ----------------------------------------------------------------------------- factory


def anchors_dir(anchors: str | Path | None = None) -> Path:
    """Peer-model folder: the argument, else $PORTRAITSEG_ANCHORS, else ../shared/anchors."""
    if anchors is not None:
        return Path(anchors)
    return Path(os.environ.get(ANCHORS_ENV) or DEFAULT_ANCHORS)


def peer_spec(name: str) -> PeerSpec:
    key = PEER_ALIASES.get(name, name)
    if key not in PEERS:
        raise ValueError(f"unknown peer model {name!r}; known: {', '.join(PEERS)}")
    return PEERS[key]


def _peer_for_file(path: Path) -> PeerSpec | None:
    return next((p for p in PEERS.values() if p.filename == path.name), None)


def _spec_label(spec: str) -> str:
    return spec if spec == "default" else Path(spec).stem


def open_peer(spec: PeerSpec, anchors: str | Path | None = None, threads: int | None = 1) -> Runtime:
    path = anchors_dir(anchors) / spec.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: peer model file not found (set --anchors or ${ANCHORS_ENV} to the anchors folder)"
        )
    return _open_file(path, spec.name, threads, spec)


def _open_file(path: Path, name: str, threads: int | None, peer: PeerSpec | None) -> Runtime:
    formats = {"input_format": peer.input, "output_format": peer.output} if peer else {}
    if path.suffix == ".onnx":
        return OnnxRuntime(path, name, threads, **formats)
    return TFLiteRuntime(path, name, threads, **formats)


def open_runtime(spec: str | Path, threads: int | None = 1, anchors: str | Path | None = None) -> Runtime:
    """Build a runtime from ``"default"`` (bundled weights), a ``.pt``/``.pth`` checkpoint, an
    ``.onnx`` or ``.tflite`` file, or a peer name from ``PEERS`` (looked up in ``anchors``,
    ``$PORTRAITSEG_ANCHORS`` or ``../shared/anchors``). A file whose name is a peer's file name
    gets that peer's pre/post-processing."""
    text = str(spec)
    path = Path(text)
    if text == "default" or path.suffix in TORCH_SUFFIXES:
        return TorchRuntime(text, name=_spec_label(text), threads=threads)
    if path.suffix in (".onnx", ".tflite"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        peer = _peer_for_file(path)
        return _open_file(path, peer.name if peer else path.stem, threads, peer)
    if text in PEERS or text in PEER_ALIASES:
        return open_peer(peer_spec(text), anchors, threads)
    raise ValueError(
        f"{text}: not a model: give 'default', a .pt/.onnx/.tflite file or a peer name ({', '.join(PEERS)})"
    )
