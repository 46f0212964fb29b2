"""TFLite models through ai-edge-litert (XNNPACK on CPU), and the reader of the metadata that
``portraitseg export`` embeds in .tflite files (the one copy; export writes, this reads)."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .contracts import (
    InputFormat,
    OutputFormat,
    Runtime,
    layout_from_shape,
    ours_input,
    output_layout,
    spatial_dims,
)

# Name of the JSON metadata buffer that `portraitseg export` embeds in .tflite files.
TFLITE_METADATA_KEY = "portraitseg"

# LiteRT's C++ runtime prints this to stderr (fd 2, not Python's logging) when a process's first
# interpreter gets its XNNPACK delegate, so every command printed it; LiteRT has no switch for it.
DELEGATE_INFO = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
# fd 2 is process-wide: two threads redirecting it at once would restore each other's pipe.
_FD2_LOCK = threading.Lock()


@contextmanager
def stderr_without(line: bytes) -> Iterator[None]:
    """Pass everything written to fd 2 inside the block on to the real stderr as it comes,
    except lines equal to ``line``: real errors stay visible (also if the process dies in the
    block), only the known notice is dropped."""
    with _FD2_LOCK:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to filter
            yield
            return
        read, write = os.pipe()
        forwarder = threading.Thread(target=_forward, args=(read, saved, line), daemon=True)
        forwarder.start()
        os.dup2(write, 2)
        os.close(write)  # fd 2 is now the pipe's only write end
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # closes the pipe's write end: the forwarder reads to its end
            forwarder.join()
            os.close(saved)


def _forward(read: int, out: int, drop: bytes) -> None:
    with os.fdopen(read, "rb", buffering=0) as pipe:
        for text in iter(pipe.readline, b""):
            while text and text.rstrip(b"\r\n") != drop:
                text = text[os.write(out, text):]


def decode_name(value: bytes | str | None) -> str:
    """A flatbuffer name (bytes or str, maybe None) as str."""
    return value.decode() if isinstance(value, bytes) else (value or "")


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The JSON contract ``portraitseg export`` stores in a .tflite (empty for other files, or
    when it cannot be read: callers then fall back to inferring it from the tensor shapes)."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(Path(path).read_bytes())
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if decode_name(entry.Name()) == TFLITE_METADATA_KEY:
                return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode())
    except (ValueError, UnicodeDecodeError, IndexError, AttributeError):
        return {}
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
            with stderr_without(DELEGATE_INFO):  # printed by allocate_tensors (see DELEGATE_INFO)
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
        layout = layout_from_shape(shape)
        self.input_format = input_format or ours_input(spatial_dims(shape, layout), layout)
        out_shape = [int(d) for d in out["shape"]]
        if output_format is None:
            meta = read_tflite_metadata(path)
            output_format = OutputFormat(
                kind=output_kind or meta.get("output_kind", "logits"),
                layout=output_layout(out_shape, layout),
                flattened=len(out_shape) == 2,
            )
        self.output_format = output_format

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def for_thread(self) -> TFLiteRuntime:
        # One interpreter holds one set of tensors: concurrent invokes would overwrite them.
        return TFLiteRuntime(self.path, self.name, self._threads, self.input_format, self.output_format)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out_index)  # a copy: safe to keep
