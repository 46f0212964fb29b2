"""Export verification: the written file, opened through
:func:`~portraitseg.runtimes.open_model` exactly as users will run it, against the PyTorch
model on the same photos (or random images), with the same preprocessing
(:func:`~portraitseg.runtimes.to_input_tensor`) on both sides."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.datasets import IMAGE_SUFFIXES
from ..data.io import read_rgb
from ..metrics import mask_iou
from ..runtimes import Runtime, open_model, output_to_prob
from .config import VERIFY_MAX_PROB_DIFF, ExportConfig

# A trained Mobile-UNet's logits stay within a few tens (the bundled model: -8..9 on photos).
# Beyond this the weights are damaged: such an export "matches" PyTorch only because both
# sides compute the same garbage, so verification must not pass it.
MAX_ABS_LOGIT = 1e4


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a dataset root (its ``images/``) or of a plain folder, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    if (root / "images").is_dir():
        root = root / "images"
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def pick_spread(items: list[Path], count: int, offset: int = 0) -> list[Path]:
    """``count`` items spread evenly over the list (``offset`` shifts the pick), for variety."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[(int(i * step) + offset) % len(items)] for i in range(count)]


def load_images(folder: str | Path, count: int, offset: int = 0) -> list[np.ndarray]:
    return [read_rgb(p) for p in pick_spread(list_images(folder), count, offset)]


def random_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields plus noise: not photos, but not flat either."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img += rng.integers(-20, 21, img.shape, dtype=np.int16)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def lowres_prob(runtime: Runtime, image: np.ndarray) -> tuple[np.ndarray, float]:
    """Person probability at the model's resolution, and the model call's seconds; raw outputs
    that are not finite, or absurd for their kind, fail (:func:`check_raw_output`)."""
    x = runtime.preprocess(image)
    t0 = time.perf_counter()
    raw = runtime.infer(x)
    elapsed = time.perf_counter() - t0
    check_raw_output(raw, runtime)
    return output_to_prob(raw, runtime.output_format, runtime.input_size), elapsed


def check_raw_output(raw: np.ndarray, runtime: Runtime) -> None:
    """ValueError unless the model's raw output is finite and plausible: logits within
    :data:`MAX_ABS_LOGIT`, probabilities within [0, 1]."""
    out = np.asarray(raw, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{runtime.name}: the model outputs NaN/inf: its weights are damaged or diverged")
    peak = float(np.abs(out).max()) if out.size else 0.0
    if runtime.output_format.kind == "logits" and peak > MAX_ABS_LOGIT:
        raise ValueError(f"{runtime.name}: the model outputs logits of {peak:.3g}, far beyond a trained "
                         f"model's (limit {MAX_ABS_LOGIT:g}): its weights are damaged")
    if runtime.output_format.kind == "probability" and (out.min() < -1e-3 or out.max() > 1 + 1e-3):
        raise ValueError(f"{runtime.name}: the model outputs probabilities outside [0, 1] "
                         f"({out.min():.3g}..{out.max():.3g})")


def torch_reference(model: Any, size: int) -> Runtime:
    """The PyTorch model as a runtime at the export's size (what exports are compared with)."""
    return open_model(model, input_size=size, name="pytorch")


@dataclass
class VerifyReport:
    """Exported model vs PyTorch on the same inputs (probabilities; masks at 0.5)."""

    source: str
    images: int
    input_hw: tuple[int, int]
    max_abs_diff: float
    mean_abs_diff: float
    mean_iou: float
    min_iou: float
    ms_per_image: float
    tolerance: float | None = None

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def lines(self) -> list[str]:
        tol = "report only" if self.tolerance is None else f"limit {self.tolerance:g}"
        verdict = "ok" if self.passed else "FAILED"
        h, w = self.input_hw
        return [
            f"verification ({self.images} {self.source} images at {h}x{w}): {verdict}",
            f"  probability max |diff| vs PyTorch  {self.max_abs_diff:.3g}  ({tol})",
            f"  probability mean |diff|            {self.mean_abs_diff:.3g}",
            f"  mask IoU vs PyTorch (p>0.5)        mean {self.mean_iou:.4f}  min {self.min_iou:.4f}",
            f"  exported model time                {self.ms_per_image:.1f} ms/image",
        ]


def compare_outputs(exported: Runtime, reference: Runtime, images: list[np.ndarray]
                    ) -> tuple[list[float], list[float], list[float], float]:
    """Per-image (max |diff|, mean |diff|, mask IoU) of exported vs reference probabilities,
    and the exported model's ms per call."""
    max_d, mean_d, ious = [], [], []
    elapsed = 0.0
    for image in images:
        got, seconds = lowres_prob(exported, image)
        elapsed += seconds
        ref, _ = lowres_prob(reference, image)
        diff = np.abs(got - ref)
        max_d.append(float(diff.max()))
        mean_d.append(float(diff.mean()))
        ious.append(mask_iou(got > 0.5, ref > 0.5))
    return max_d, mean_d, ious, 1000.0 * elapsed / max(1, len(images))


def verify_export(path: str | Path, model: Any, cfg: ExportConfig, size: int) -> VerifyReport:
    """Run the written file on ``cfg.verify_data`` photos (else random images) vs PyTorch."""
    count = max(1, cfg.verify_count)
    if cfg.verify_data:
        files = list_images(cfg.verify_data)
        if cfg.calib_data and cfg.precision == "int8":
            # Judge int8 on photos it was not calibrated on, when there are enough of them.
            calib = set(pick_spread(list_images(cfg.calib_data), cfg.calib_count))
            files = [f for f in files if f not in calib] or files
        images, source = [read_rgb(p) for p in pick_spread(files, count)], "real"
    else:
        images, source = random_images(count, size, cfg.seed), "random"
    exported = open_model(Path(path), threads=cfg.threads, input_size=size)
    max_d, mean_d, ious, ms = compare_outputs(exported, torch_reference(model, size), images)
    return VerifyReport(source, len(images), (size, size), max(max_d), float(np.mean(mean_d)),
                        float(np.mean(ious)), min(ious), ms, VERIFY_MAX_PROB_DIFF[cfg.precision])
