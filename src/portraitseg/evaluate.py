"""Evaluate runtimes on labelled datasets: per-image rows and set summaries, side by side.

``evaluate(runtime, dataset)`` runs one model over one dataset. The summary's headline metrics
(``miou``, ``person_iou``, ``background_iou``, ``pixel_accuracy``, ``boundary_f1``) are computed
over all pixels of the set (summed counts, then ratios) on the model's probability resized to
the image (bilinear) and thresholded; ``mean_per_image`` holds the same metrics averaged per
image. Where the ground truth is a soft alpha matte (``alpha/`` folders), ``summary["alpha"]``
adds the matting errors (:mod:`portraitseg.matting`: SAD, MSE, Grad, MAD, per-image means) of
the FINAL alpha, i.e. after the same post-processing ``predict`` applies (guided upsampling,
keep-largest: :class:`~portraitseg.postprocess.PostprocessConfig`). Definitions: docs/metrics.md.
``compare`` runs several runtimes over several datasets for one side-by-side table; the
tables, CSV, JSON and gallery are in :mod:`portraitseg.reports`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from .matting import ALPHA_METRICS, AlphaErrors, alpha_errors, mean_errors
from .metrics import Aggregate, ImageMetrics, image_metrics
from .options import Bounds
from .postprocess import PostprocessConfig, Postprocessor
from .runtimes import Runtime, output_to_prob
from .runtimes.contracts import prob_to_image_size

DEFAULT_GALLERY_K = 8
# A probability strictly inside (0, 1), checked as every option's range is (portraitseg.options).
THRESHOLD = Bounds(low=0, high=1, low_open=True, high_open=True)


@dataclass
class ImageRow:
    """One image's metrics; ``ms`` times the probability (model call + resize), ``infer_ms``
    the model call; the matting errors are None where the truth is a hard mask."""

    name: str
    pixel_acc: float
    person_iou: float
    bg_iou: float
    miou: float
    boundary_f1: float
    ms: float
    infer_ms: float
    sad: float | None = None
    mse: float | None = None
    grad: float | None = None
    mad: float | None = None

    @classmethod
    def from_metrics(cls, name: str, m: ImageMetrics, ms: float, infer_ms: float,
                     alpha: AlphaErrors | None = None) -> ImageRow:
        v = m.values
        return cls(
            name=name,
            pixel_acc=v["pixel_accuracy"],
            person_iou=v["person_iou"],
            bg_iou=v["background_iou"],
            miou=v["miou"],
            boundary_f1=v["boundary_f1"],
            ms=ms,
            infer_ms=infer_ms,
            **(alpha.values if alpha is not None else {}),
        )


@dataclass
class GalleryItem:
    """What the worst-images gallery shows for one image."""

    name: str
    image: np.ndarray  # RGB uint8
    truth: np.ndarray  # bool
    pred: np.ndarray  # bool
    ignore: np.ndarray  # bool
    person_iou: float
    miou: float


@dataclass
class EvalResult:
    model: str
    dataset: str
    rows: list[ImageRow]
    summary: dict[str, Any]
    worst: list[GalleryItem] = field(default_factory=list)  # worst person IoU first
    skipped: list[str] = field(default_factory=list)


@dataclass
class Timed:
    """The model's probability at its own resolution (what post-processing starts from), at
    the image's size (``runtime.prob``: bilinear, what IoU/BF1 threshold), and the times."""

    lowres: np.ndarray
    prob: np.ndarray
    ms: float  # preprocess + model call + resize
    infer_ms: float  # model call


def _timed_prob(runtime: Runtime, image: np.ndarray) -> Timed:
    t0 = time.perf_counter()
    tensor = runtime.preprocess(image)
    t1 = time.perf_counter()
    raw = runtime.infer(tensor)
    t2 = time.perf_counter()
    # Runtime.postprocess in two steps, so the final alpha starts from the same low-res map.
    lowres = output_to_prob(raw, runtime.output_format, runtime.input_size)
    prob = prob_to_image_size(lowres, image.shape[:2])
    t3 = time.perf_counter()
    return Timed(lowres, prob, (t3 - t0) * 1000.0, (t2 - t1) * 1000.0)


class _WorstK:
    """Keeps the k images with the lowest person IoU (a bounded heap, so memory stays small)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[float, int, GalleryItem]] = []
        self._count = itertools.count()

    def offer(self, iou: float, make_item) -> None:
        if self.k <= 0:
            return
        entry = (-iou, next(self._count))
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (*entry, make_item()))
        elif -iou > self._heap[0][0]:
            heapq.heapreplace(self._heap, (*entry, make_item()))

    def items(self) -> list[GalleryItem]:
        return [item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], e[1]))]


def _dataset_label(dataset: Any) -> str:
    return str(getattr(dataset, "label", None) or getattr(dataset, "name", "dataset"))


def check_threshold(value: float, what: str = "threshold") -> float:
    """The probability threshold must lie strictly inside (0, 1) (:data:`THRESHOLD`): NaN
    compares False with everything (nothing would be person) and a value outside makes every
    pixel the same class, so either would score silently meaningless numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    problem = THRESHOLD.problem(number)
    if problem:
        raise ValueError(f"{what} {problem}; got {value}")
    return number


def evaluate(
    runtime: Runtime,
    dataset: Any,
    threshold: float = 0.5,
    progress: bool = True,
    limit: int | None = None,
    keep_worst: int = DEFAULT_GALLERY_K,
    dataset_name: str | None = None,
    postprocess: PostprocessConfig | None = None,
) -> EvalResult:
    """Run ``runtime`` on every sample of ``dataset`` (the first ``limit`` if given) and score
    ``prob >= threshold`` against ``target >= 0.5``, excluding ``ignore`` pixels. Soft (alpha)
    targets also get the matting errors of the final alpha made with ``postprocess`` (default:
    :class:`~portraitseg.postprocess.PostprocessConfig`, as ``predict``).

    Bad files raise :class:`~portraitseg.data.DataError` naming the file unless the dataset
    was opened with ``on_error="skip"``; then they are listed in ``result.skipped``.
    """
    check_threshold(threshold)
    name = dataset_name or _dataset_label(dataset)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    agg, rows, worst = Aggregate(), [], _WorstK(keep_worst)
    alphas: list[AlphaErrors] = []
    post = Postprocessor(postprocess)  # validates the config before any model call
    samples = itertools.islice(iter(dataset), total)
    # disable=None: bars only on a terminal, so logs and CI output stay clean.
    bar = tqdm(
        samples, total=total, desc=f"{runtime.name} | {name}", disable=None if progress else True, leave=False
    )
    for sample in bar:
        timed = _timed_prob(runtime, sample.image)
        pred, truth = timed.prob >= threshold, sample.target >= 0.5
        metrics = image_metrics(pred, truth, sample.ignore)
        agg.add(metrics)
        alpha = None
        if getattr(sample, "soft", False):  # hard masks have no matte to compare the alpha with
            # The alpha lives in the postprocessor's workspace: used here, before the next call.
            alpha = alpha_errors(post(timed.lowres, sample.image), sample.target, sample.ignore)
            alphas.append(alpha)
        rows.append(ImageRow.from_metrics(sample.name, metrics, timed.ms, timed.infer_ms, alpha))
        worst.offer(
            rows[-1].person_iou,
            lambda s=sample, p=pred, t=truth, r=rows[-1]: GalleryItem(
                s.name, s.image, t, p, s.ignore, r.person_iou, r.miou
            ),
        )
    skipped = list(getattr(getattr(dataset, "skipped", None), "errors", []))
    if not rows:
        note = f" ({len(skipped)} skipped)" if skipped else ""
        from .data.io import NoSamplesError

        raise NoSamplesError(f"{name}: no images were evaluated{note}", skipped)
    summary = _summary(runtime, name, agg, rows, threshold, skipped)
    if alphas:
        summary["alpha"] = _alpha_summary(alphas, post.cfg)
    return EvalResult(runtime.name, name, rows, summary, worst.items(), skipped)


def _alpha_summary(errors: list[AlphaErrors], cfg: PostprocessConfig) -> dict[str, Any]:
    """Per-image means of the matting errors, with their units and the post-processing used."""
    return {
        **mean_errors(errors),
        "n_images": len(errors),
        "aggregation": "mean per image",
        "units": {key: unit for key, _, unit in ALPHA_METRICS},
        "postprocess": asdict(cfg),
    }


def _summary(
    runtime: Runtime, dataset: str, agg: Aggregate, rows: list[ImageRow], threshold: float, skipped: list[str]
) -> dict[str, Any]:
    infer = np.array([r.infer_ms for r in rows])
    total = np.array([r.ms for r in rows])
    c = agg.confusion
    return {
        "model": runtime.name,
        "dataset": dataset,
        "n_images": agg.n_images,
        **agg.over_all_pixels(),
        "mean_per_image": agg.mean_per_image(),
        "counts": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
        "threshold": threshold,
        "backend": runtime.backend,
        "input_size": list(runtime.input_size),
        "threads": runtime.num_threads,
        "infer_ms_median": float(np.median(infer)),
        "infer_ms_mean": float(infer.mean()),
        "total_ms_mean": float(total.mean()),
        "n_skipped": len(skipped),
        "skipped": skipped,
    }


def compare(
    runtimes: Sequence[Runtime],
    datasets: Sequence[tuple[str, Any]],
    threshold: float = 0.5,
    progress: bool = True,
    limit: int | None = None,
    keep_worst: int = DEFAULT_GALLERY_K,
    postprocess: PostprocessConfig | None = None,
) -> dict[str, dict[str, EvalResult]]:
    """Evaluate every runtime on every ``(label, dataset)``: ``{model: {dataset: result}}``."""
    check_threshold(threshold)
    results: dict[str, dict[str, EvalResult]] = {}
    for runtime in runtimes:
        results[runtime.name] = {
            label: evaluate(runtime, ds, threshold, progress, limit, keep_worst, label, postprocess)
            for label, ds in datasets
        }
    return results
