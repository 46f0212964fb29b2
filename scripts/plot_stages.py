"""Plot the bundled model's training stages end to end: the five graphs of the original
project (train loss/accuracy, val loss/accuracy, learning rate) from docs/training/stage*_metrics.csv.

    python scripts/plot_stages.py docs/training
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GRAPHS = {"train_loss": "train loss", "train_acc": "train accuracy", "val_loss": "val loss",
          "val_acc": "val accuracy", "lr": "learning rate"}


def main(folder: str) -> None:
    root = Path(folder)
    stages = sorted(root.glob("stage*_metrics.csv"))
    rows = [list(csv.DictReader(p.open())) for p in stages]
    for key, title in GRAPHS.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        start = 0
        for path, stage in zip(stages, rows):
            x = [start + int(r["epoch"]) for r in stage]
            ax.plot(x, [float(r[key]) for r in stage], label=path.stem.replace("_metrics", ""))
            start = x[-1]
            ax.axvline(start, color="grey", lw=0.5, ls=":")
        ax.set_title(title)
        ax.set_xlabel("epoch (stages back to back)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(root / f"{key}.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/training")
