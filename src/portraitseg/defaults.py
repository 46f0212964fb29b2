"""Project-wide constants that several layers share (kept free of heavy imports, so the CLI,
the data cache and the model can all read them without loading torch)."""

from __future__ import annotations

# Square side (px) the bundled model was trained and exported at; training caches, augmentation
# and the model config default to it. Exported files carry their own size in their metadata.
INPUT_SIZE = 224

# Name of the registered model the bundled weights use (see ``portraitseg.models.registry``).
DEFAULT_MODEL = "mobile-unet-050-bilinear"

# Most threads any --threads flag takes (model threads in predict, eval, bench, bulk, finetune,
# video, webcam and serve; x264's own limit too). More only slows a run, and far more never starts:
# ONNX Runtime spent minutes creating 100000 threads, LiteRT crashed (SIGSEGV).
MAX_THREADS = 128

# Largest image (width x height) any reader decodes: predict/eval/cache/prepare (``--max-pixels``)
# and the server. Checked from the file header before decoding, so a decompression bomb (a small
# PNG declaring 30000x30000 = 2.7 GB of RGB) is refused instead of exhausting memory.
MAX_PIXELS = 25_000_000
