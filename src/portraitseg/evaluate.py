"""Evaluate runtimes on labelled datasets: per-image rows, set summaries, reports, side by side.

``evaluate(runtime, dataset)`` runs one model over one dataset. The summary's headline metrics
(``miou``, ``person_iou``, ``background_iou``, ``pixel_accuracy``, ``boundary_f1``) are computed
over all pixels of the set (summed counts, then ratios); ``mean_per_image`` holds the same
metrics averaged per image. ``compare`` runs several runtimes over several datasets for one
side-by-side table. Writers produce a per-image CSV, summary JSON, markdown, and a PNG gallery
of the worst images, each written atomically (temporary file + rename).
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .data.io import write_atomic
from .metrics import Aggregate, ImageMetrics, image_metrics
from .runtimes import Runtime

DEFAULT_GALLERY_K = 8
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("miou", "mIoU"),
    ("person_iou", "pIoU"),
    ("boundary_f1", "BF1"),
)
SUMMARY_LABELS: tuple[tuple[str, str], ...] = (
    ("miou", "mIoU"),
    ("person_iou", "person IoU"),
    ("background_iou", "background IoU"),
    ("pixel_accuracy", "pixel accuracy"),
    ("boundary_f1", "boundary F1"),
)


@dataclass
class ImageRow:
    """One image's metrics; ``ms`` times the whole ``prob`` call, ``infer_ms`` the model call."""

    name: str
    pixel_acc: float
    person_iou: float
    bg_iou: float
    miou: float
    boundary_f1: float
    ms: float
    infer_ms: float

    @classmethod
    def from_metrics(cls, name: str, m: ImageMetrics, ms: float, infer_ms: float) -> ImageRow:
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


def _timed_prob(runtime: Runtime, image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Probability map plus (total ms, model-call ms)."""
    t0 = time.perf_counter()
    tensor = runtime.preprocess(image)
    t1 = time.perf_counter()
    raw = runtime.infer(tensor)
    t2 = time.perf_counter()
    prob = runtime.postprocess(raw, image.shape[:2])
    t3 = time.perf_counter()
    return prob, (t3 - t0) * 1000.0, (t2 - t1) * 1000.0


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


def evaluate(
    runtime: Runtime,
    dataset: Any,
    threshold: float = 0.5,
    progress: bool = True,
    limit: int | None = None,
    keep_worst: int = DEFAULT_GALLERY_K,
    dataset_name: str | None = None,
) -> EvalResult:
    """Run ``runtime`` on every sample of ``dataset`` (the first ``limit`` if given) and score
    ``prob >= threshold`` against ``target >= 0.5``, excluding ``ignore`` pixels.

    Bad files raise :class:`~portraitseg.data.DataError` naming the file unless the dataset
    was opened with ``on_error="skip"``; then they are listed in ``result.skipped``.
    """
    name = dataset_name or _dataset_label(dataset)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    agg, rows, worst = Aggregate(), [], _WorstK(keep_worst)
    samples = itertools.islice(iter(dataset), total)
    # disable=None: bars only on a terminal, so logs and CI output stay clean.
    bar = tqdm(
        samples, total=total, desc=f"{runtime.name} | {name}", disable=None if progress else True, leave=False
    )
    for sample in bar:
        prob, ms, infer_ms = _timed_prob(runtime, sample.image)
        pred, truth = prob >= threshold, sample.target >= 0.5
        metrics = image_metrics(pred, truth, sample.ignore)
        agg.add(metrics)
        rows.append(ImageRow.from_metrics(sample.name, metrics, ms, infer_ms))
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
    return EvalResult(runtime.name, name, rows, summary, worst.items(), skipped)


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
) -> dict[str, dict[str, EvalResult]]:
    """Evaluate every runtime on every ``(label, dataset)``: ``{model: {dataset: result}}``."""
    results: dict[str, dict[str, EvalResult]] = {}
    for runtime in runtimes:
        results[runtime.name] = {
            label: evaluate(runtime, ds, threshold, progress, limit, keep_worst, dataset_name=label)
            for label, ds in datasets
        }
    return results


# ----------------------------------------------------------------------------- reports


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_markdown(result: EvalResult) -> str:
    """One model on one dataset: each metric over all pixels and as a per-image mean."""
    s = result.summary
    per = s["mean_per_image"]
    body = [(label, _fmt(s[key]), _fmt(per[key])) for key, label in SUMMARY_LABELS]
    head = (
        f"**{result.model}** on **{result.dataset}**: {s['n_images']} images, threshold {s['threshold']}, "
        f"model call {s['infer_ms_median']:.1f} ms median ({s['threads']} thread(s))\n\n"
    )
    return head + markdown_table(("metric", "over all pixels", "per-image mean"), body)


def comparison_table(
    results: dict[str, dict[str, EvalResult]], metrics: Sequence[tuple[str, str]] = TABLE_METRICS
) -> str:
    """Markdown table: one row per model, ``metric`` columns per dataset (over all pixels), and
    the median model-call latency over every image evaluated."""
    datasets = list(dict.fromkeys(d for per in results.values() for d in per))
    header = ["model"] + [f"{d} {label}" for d in datasets for _, label in metrics] + ["ms (model call)"]
    body = []
    for model, per in results.items():
        cells = [model]
        for d in datasets:
            cells += [_fmt(per[d].summary[key]) if d in per else "" for key, _ in metrics]
        infer = [r.infer_ms for res in per.values() for r in res.rows]
        cells.append(f"{np.median(infer):.1f}" if infer else "")
        body.append(cells)
    return markdown_table(header, body)


def json_summary(results: dict[str, dict[str, EvalResult]]) -> dict[str, Any]:
    """The flat summary for one model on one dataset, else ``{model: {dataset: summary}}``."""
    if len(results) == 1:
        (per,) = results.values()
        if len(per) == 1:
            return next(iter(per.values())).summary
    return {model: {d: r.summary for d, r in per.items()} for model, per in results.items()}


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_rows_csv(result: EvalResult, path: str | Path) -> Path:
    """Per-image CSV: name, pixel_acc, person_iou, bg_iou, miou, boundary_f1, ms, infer_ms."""
    buf = io.StringIO()
    names = [f.name for f in fields(ImageRow)]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return write_text(path, buf.getvalue())


def _error_map(item: GalleryItem) -> np.ndarray:
    """Prediction coloured by correctness: person hit white, false person red, missed person
    blue, ignored pixels grey."""
    out = np.zeros((*item.pred.shape, 3), np.uint8)
    out[item.pred & item.truth] = (255, 255, 255)
    out[item.pred & ~item.truth] = (230, 40, 40)
    out[~item.pred & item.truth] = (40, 90, 230)
    out[item.ignore] = (128, 128, 128)
    return out


def _truth_map(item: GalleryItem) -> np.ndarray:
    out = np.where(item.truth, 255, 0).astype(np.uint8)
    out[item.ignore] = 128
    return out


def write_gallery(result: EvalResult, path: str | Path, k: int | None = None) -> Path:
    """PNG of the worst-k images by person IoU: rows of image | truth | prediction."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    items = result.worst[: k or len(result.worst)]
    if not items:
        raise ValueError(f"{result.model} on {result.dataset}: no images kept for a gallery")
    fig, axes = plt.subplots(len(items), 3, figsize=(9, 3 * len(items)), squeeze=False)
    for ax_row, item in zip(axes, items):
        panels = (
            (item.image, f"{item.name}"),
            (_truth_map(item), "truth (grey = ignored)"),
            (_error_map(item), f"pred IoU {item.person_iou:.3f} mIoU {item.miou:.3f}"),
        )
        for ax, (img, title) in zip(ax_row, panels):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        f"{result.model} on {result.dataset}: worst {len(items)} by person IoU "
        "(white hit, red false person, blue missed)",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def write_reports(
    results: dict[str, dict[str, EvalResult]], out_dir: str | Path, gallery_k: int = DEFAULT_GALLERY_K
) -> list[Path]:
    """``out/<model>/<dataset>/{per_image.csv, summary.json, summary.md, worst.png}`` and
    ``out/comparison.{md,json}``. Returns the paths written."""
    out = Path(out_dir)
    written: list[Path] = []
    for model, per in results.items():
        for dataset, result in per.items():
            folder = out / _slug(model) / _slug(dataset)
            written.append(write_rows_csv(result, folder / "per_image.csv"))
            written.append(write_json(folder / "summary.json", result.summary))
            written.append(write_text(folder / "summary.md", summary_markdown(result)))
            if gallery_k > 0 and result.worst:
                written.append(write_gallery(result, folder / "worst.png", gallery_k))
    written.append(write_text(out / "comparison.md", comparison_table(results)))
    nested = {m: {d: r.summary for d, r in per.items()} for m, per in results.items()}
    written.append(write_json(out / "comparison.json", nested))
    return written
