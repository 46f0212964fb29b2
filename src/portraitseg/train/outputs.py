"""What a run writes besides checkpoints: metrics.csv (one row per epoch) and PNG graphs."""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

# (history column, graph title): one PNG per column, skipped while any epoch lacks it.
GRAPHS = (
    ("train_loss", "Training loss"),
    ("train_acc", "Training pixel accuracy"),
    ("val_loss", "Validation loss"),
    ("val_acc", "Validation pixel accuracy"),
    ("lr", "Learning rate"),
)


def log_row(run_dir: Path, row: dict[str, float]) -> None:
    """Append ``row`` to metrics.csv (header on first write) and print it."""
    path = run_dir / "metrics.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    tqdm.write(text)


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
        fig.savefig(run_dir / f"{key}.png", dpi=100)
        plt.close(fig)
