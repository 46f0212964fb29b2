"""What a run writes besides checkpoints: metrics.csv (one row per epoch) and PNG graphs.

metrics.csv is rewritten whole from the checkpoint's history after each ``last.pt`` (and when a
run resumes), never appended to: a run killed between the two writes, or resumed from an older
``last.pt``, would otherwise list epochs twice or epochs the checkpoint does not have.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tqdm import tqdm

from ..outfiles import write_files

# (history column, graph title): one PNG per column, skipped while any epoch lacks it.
GRAPHS = (
    ("train_loss", "Training loss"),
    ("train_acc", "Training pixel accuracy"),
    ("val_loss", "Validation loss"),
    ("val_acc", "Validation pixel accuracy"),
    ("lr", "Learning rate"),
)


def print_row(row: dict[str, float]) -> None:
    """One epoch's metrics as one line (above any progress bar)."""
    tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> Path:
    """metrics.csv = ``history``, one row per epoch (atomic: temporary file + rename)."""
    columns = list(dict.fromkeys(key for row in history for key in row))  # first-seen order
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    path = run_dir / "metrics.csv"
    write_files({path: text.getvalue().encode()})
    return path


def read_metric_epochs(run_dir: Path) -> list[str]:
    """The epoch column of an existing metrics.csv (empty when there is none)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row.get("epoch", "") for row in csv.DictReader(f)]


def plot_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    """One PNG per :data:`GRAPHS` column against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    for key, title in GRAPHS:
        values = [r.get(key) for r in history]
        if any(v is None for v in values):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, values, marker="." if len(epochs) < 50 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        plt.close(fig)
        write_files({run_dir / f"{key}.png": png.getvalue()})
