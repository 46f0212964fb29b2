"""Inference runtimes: one session-like object per model, created once and reused.

``open_model(spec, backend=...)`` (:mod:`.factory`) is the one way to get one. Modules:
``contracts`` (input/output formats, the one preprocessing, the ``Runtime`` base), ``onnx``,
``tflite``, ``torch`` (the only one importing torch, lazily) and ``peers``.
"""

from __future__ import annotations

from .contracts import (
    LAYOUTS,
    OURS_OUTPUT,
    OUTPUT_KINDS,
    InputFormat,
    OutputFormat,
    Runtime,
    check_image,
    ours_input,
    output_to_prob,
    prob_to_image_size,
    resize_image,
    sigmoid,
    to_input_tensor,
)
from .factory import (
    BACKENDS,
    DEFAULT_ONNX,
    DEFAULT_TFLITE,
    WEIGHTS_DIR,
    open_model,
    read_metadata,
    resolve_backend,
)
from .onnx import OnnxRuntime, read_onnx_metadata, split_single_output_convs
from .peers import ANCHORS_ENV, PEER_ALIASES, PEERS, PeerSpec, anchors_dir, peer_spec
from .tflite import TFLITE_METADATA_KEY, TFLiteRuntime, read_tflite_metadata
from .torch import TorchRuntime

__all__ = [
    "ANCHORS_ENV", "BACKENDS", "DEFAULT_ONNX", "DEFAULT_TFLITE", "LAYOUTS", "OURS_OUTPUT",
    "OUTPUT_KINDS", "PEERS", "PEER_ALIASES", "TFLITE_METADATA_KEY", "WEIGHTS_DIR", "InputFormat",
    "OnnxRuntime", "OutputFormat", "PeerSpec", "Runtime", "TFLiteRuntime", "TorchRuntime", "anchors_dir",
    "check_image", "open_model", "ours_input", "output_to_prob", "peer_spec", "prob_to_image_size",
    "read_metadata", "read_onnx_metadata", "read_tflite_metadata", "resize_image", "resolve_backend",
    "sigmoid", "split_single_output_convs", "to_input_tensor",
]

