"""``open_model``: the one way to open a model as a :class:`~portraitseg.runtimes.Runtime`.

It takes ``"default"`` (the bundled model), a ``.pt``/``.pth`` checkpoint, an exported
``.onnx``/``.tflite`` file (ours: the contract comes from the file's metadata), a peer name or
peer file (``PEERS``: their own pre/post-processing), or an in-memory PyTorch model.

``"default"`` means one thing everywhere (``predict``, ``eval``, ``serve``, ``video``,
``webcam``, ``bench``, the Python API): the bundled model on the fastest installed backend,
i.e. ``default.tflite`` through LiteRT/XNNPACK when ``ai_edge_litert`` is importable (8.0 vs
8.7 ms per 720p frame for ONNX on one core, docs/benchmark.md), else ``default.onnx`` through
onnxruntime, else the PyTorch checkpoint.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..locate import install_hint
from .contracts import Runtime
from .onnx import OnnxRuntime, read_onnx_metadata
from .peers import PEERS, PeerSpec, is_peer_name, peer_for_file, peer_path, peer_spec
from .tflite import TFLiteRuntime, read_tflite_metadata
from .torch import TORCH_SUFFIXES, TorchRuntime

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_ONNX = WEIGHTS_DIR / "default.onnx"
DEFAULT_TFLITE = WEIGHTS_DIR / "default.tflite"  # same weights, for LiteRT (phones, XNNPACK)
DEFAULT_SPEC = "default"
# "auto": the fastest installed one (see the module docstring). For a file, its suffix decides.
BACKENDS = ("auto", "tflite", "onnx", "torch")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(backend: str = "auto") -> str:
    """``"auto"`` -> the fastest installed backend for the bundled model; others are checked."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend != "auto":
        return backend
    if _installed("ai_edge_litert") and DEFAULT_TFLITE.is_file():
        return "tflite"
    return "onnx" if _installed("onnxruntime") else "torch"


def _open_default(backend: str, threads: int | None) -> Runtime:
    backend = resolve_backend(backend)
    if backend == "tflite":
        if not _installed("ai_edge_litert"):
            raise ValueError(f"backend 'tflite' needs the LiteRT runtime: {install_hint('tflite')}")
        return TFLiteRuntime(DEFAULT_TFLITE, name=DEFAULT_SPEC, threads=threads)
    if backend == "onnx":
        return OnnxRuntime(DEFAULT_ONNX, name=DEFAULT_SPEC, threads=threads)
    return TorchRuntime(DEFAULT_SPEC, name=DEFAULT_SPEC, threads=threads)


def _open_file(path: Path, threads: int | None, peer: PeerSpec | None = None,
               input_size: int | None = None) -> Runtime:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    peer = peer or peer_for_file(path)
    name = peer.name if peer else path.stem
    if path.suffix == ".tflite" and not _installed("ai_edge_litert"):
        # Checked here so `eval --peers all` names the fix instead of failing inside the import.
        raise ValueError(f"{path}: .tflite models need the LiteRT runtime: {install_hint('tflite')}")
    if peer:
        return _runtime_class(path)(path, name, threads, input_format=peer.input, output_format=peer.output)
    if path.suffix == ".onnx":
        return OnnxRuntime(path, name, threads, input_size=input_size)
    return TFLiteRuntime(path, name, threads)  # fixed input shape: the file decides


def _runtime_class(path: Path) -> type[OnnxRuntime] | type[TFLiteRuntime]:
    return OnnxRuntime if path.suffix == ".onnx" else TFLiteRuntime


def open_model(
    spec: str | Path | Any,
    backend: str = "auto",
    threads: int | None = None,
    anchors: str | Path | None = None,
    name: str | None = None,
    input_size: int | None = None,
) -> Runtime:
    """Open ``spec`` (see the module docstring) as a runtime.

    ``backend`` chooses among the bundled files for ``"default"`` (``"auto"``, ``"tflite"``,
    ``"onnx"``, ``"torch"``); a file is opened by its suffix and a peer by its own format.
    ``threads``: intra-op threads (``None``: the backend's default, all cores). ``anchors``:
    the peer-model folder (else ``$PORTRAITSEG_ANCHORS``, else ``../shared/anchors`` from the
    working folder or beside the repo checkout).
    ``name`` overrides the runtime's label (tables, reports). ``input_size``: the working size
    where the model takes several (PyTorch, dynamic-shape ONNX); ``None`` reads it from the
    model config or the export's metadata (fixed-shape files always use their own).
    """
    resolve_backend(backend)  # validate even where the spec decides
    if not isinstance(spec, (str, Path)):  # an in-memory nn.Module (export verification, tests)
        return TorchRuntime(spec, name=name or "model", input_size=input_size, threads=threads)
    text = str(spec)
    path = Path(text)
    if text == DEFAULT_SPEC:
        runtime = _open_default(backend, threads)
    elif path.suffix in TORCH_SUFFIXES:
        runtime = TorchRuntime(path, name=path.stem, input_size=input_size, threads=threads)
    elif path.suffix in (".onnx", ".tflite"):
        runtime = _open_file(path, threads, input_size=input_size)
    elif is_peer_name(text):
        peer = peer_spec(text)
        runtime = _open_file(peer_path(peer, anchors), threads, peer)
    else:
        raise ValueError(
            f"{text}: not a model: give 'default', a .pt/.onnx/.tflite file or a peer name "
            f"({', '.join(PEERS)})"
        )
    if name:
        runtime.name = name
    return runtime


def read_metadata(path: str | Path) -> dict[str, str]:
    """The contract ``portraitseg export`` embeds in an ``.onnx`` or ``.tflite`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported model not found")
    return read_tflite_metadata(path) if path.suffix == ".tflite" else read_onnx_metadata(path)
