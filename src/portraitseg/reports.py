"""Reports of evaluation results: markdown tables, JSON summaries, per-image CSV and the
worst-images gallery, built as text/bytes so a command can check every target file before it
writes any (``portraitseg eval`` writes them through :mod:`portraitseg.outfiles`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import write_atomic
from .evaluate import DEFAULT_GALLERY_K, EvalResult, GalleryItem, ImageRow
from .matting import ALPHA_METRICS

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
    text = head + markdown_table(("metric", "over all pixels", "per-image mean"), body)
    if "alpha" in s:
        a = s["alpha"]
        text += (f"\nFinal alpha (after post-processing) against the true matte, {a['n_images']} images, "
                 "mean per image (lower is better; docs/metrics.md):\n\n")
        text += markdown_table(("metric", "unit", "per-image mean"),
                               [(label, unit, _fmt(a[key])) for key, label, unit in ALPHA_METRICS])
    return text


def comparison_table(
    results: dict[str, dict[str, EvalResult]], metrics: Sequence[tuple[str, str]] = TABLE_METRICS
) -> str:
    """Markdown table: one row per model, ``metric`` columns per dataset (over all pixels), the
    matting errors of the final alpha where a dataset has alpha truth, and the median
    model-call latency over every image evaluated."""
    datasets = list(dict.fromkeys(d for per in results.values() for d in per))
    columns = {d: _columns(results, d, metrics) for d in datasets}
    header = ["model"] + [f"{d} {label}" for d in datasets for _, label, _ in columns[d]]
    header.append("ms (model call)")
    body = []
    for model, per in results.items():
        cells = [model]
        for d in datasets:
            cells += [_fmt(_lookup(per[d].summary, path)) if d in per else "" for _, _, path in columns[d]]
        infer = [r.infer_ms for res in per.values() for r in res.rows]
        cells.append(f"{np.median(infer):.1f}" if infer else "")
        body.append(cells)
    return markdown_table(header, body)


def _columns(results: dict[str, dict[str, EvalResult]], dataset: str,
             metrics: Sequence[tuple[str, str]]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, label, summary path) per column of one dataset: the mask metrics, plus the
    matting errors when any model's result on it has them."""
    cols = [(key, label, (key,)) for key, label in metrics]
    if any("alpha" in per[dataset].summary for per in results.values() if dataset in per):
        cols += [(key, label, ("alpha", key)) for key, label, _ in ALPHA_METRICS]
    return cols


def _lookup(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def json_summary_nested(results: dict[str, dict[str, EvalResult]]) -> dict[str, Any]:
    """``{model: {dataset: summary}}``."""
    return {model: {d: r.summary for d, r in per.items()} for model, per in results.items()}


def json_summary(results: dict[str, dict[str, EvalResult]]) -> dict[str, Any]:
    """The flat summary for one model on one dataset, else ``{model: {dataset: summary}}``."""
    if len(results) == 1:
        (per,) = results.values()
        if len(per) == 1:
            return next(iter(per.values())).summary
    return json_summary_nested(results)


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_atomic(path, json_bytes(data))


def rows_csv(result: EvalResult) -> str:
    """Per-image CSV: name, pixel_acc, person_iou, bg_iou, miou, boundary_f1, ms, infer_ms, and
    sad, mse, grad, mad where the truth is alpha."""
    buf = io.StringIO()
    alpha = {key for key, _, _ in ALPHA_METRICS}
    has_alpha = any(r.mad is not None for r in result.rows)
    names = [f.name for f in fields(ImageRow) if has_alpha or f.name not in alpha]
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buf.getvalue()


def write_rows_csv(result: EvalResult, path: str | Path) -> Path:
    return write_text(path, rows_csv(result))


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
    """:func:`gallery_png`, written atomically."""
    return write_atomic(path, gallery_png(result, k))


def gallery_png(result: EvalResult, k: int | None = None) -> bytes:
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
    return buf.getvalue()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


REPORT_FILES = ("per_image.csv", "summary.json", "summary.md")
GALLERY_FILE = "worst.png"
COMPARISON_FILES = ("comparison.md", "comparison.json")


def report_paths(models: Iterable[str], datasets: Iterable[str], out_dir: str | Path,
                 gallery_k: int = DEFAULT_GALLERY_K) -> list[Path]:
    """Every file :func:`report_files` can write for these model and dataset labels (known
    before the run, so a command can check them first)."""
    out, names = Path(out_dir), REPORT_FILES + ((GALLERY_FILE,) if gallery_k > 0 else ())
    datasets = list(datasets)
    paths = [out / _slug(m) / _slug(d) / n for m in models for d in datasets for n in names]
    return paths + [out / n for n in COMPARISON_FILES]


def report_files(
    results: dict[str, dict[str, EvalResult]], out_dir: str | Path, gallery_k: int = DEFAULT_GALLERY_K
) -> dict[Path, bytes]:
    """The reports, encoded (nothing written yet): ``out/<model>/<dataset>/{per_image.csv,
    summary.json, summary.md, worst.png}`` and ``out/comparison.{md,json}``."""
    out = Path(out_dir)
    files: dict[Path, bytes] = {}

    def add(path: Path, data: bytes) -> None:
        if path in files:  # two labels with the same slug ("a/b" and "a_b")
            raise ValueError(f"{path}: two results would share this report file; rename a model")
        files[path] = data

    for model, per in results.items():
        for dataset, result in per.items():
            folder = out / _slug(model) / _slug(dataset)
            add(folder / "per_image.csv", rows_csv(result).encode("utf-8"))
            add(folder / "summary.json", json_bytes(result.summary))
            add(folder / "summary.md", summary_markdown(result).encode("utf-8"))
            if gallery_k > 0 and result.worst:
                add(folder / GALLERY_FILE, gallery_png(result, gallery_k))
    add(out / "comparison.md", comparison_table(results).encode("utf-8"))
    add(out / "comparison.json", json_bytes(json_summary_nested(results)))
    return files


def write_reports(
    results: dict[str, dict[str, EvalResult]], out_dir: str | Path, gallery_k: int = DEFAULT_GALLERY_K
) -> list[Path]:
    """Write :func:`report_files` (each atomically, replacing what is there); returns the paths.
    ``portraitseg eval --out`` goes through :mod:`portraitseg.outfiles` instead, which never
    replaces an earlier result unless ``--overwrite``."""
    from .outfiles import write_files

    return write_files(report_files(results, out_dir, gallery_k))
