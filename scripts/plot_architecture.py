"""Draw docs/architecture.png: portraitseg's data flow, training (top) and inference (bottom).

    python scripts/plot_architecture.py [OUT.png]

Boxes are stages (the module that owns each in brackets), arrows what flows between them.
Edit the tables below, not the picture.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "architecture.png"
TRAIN, INFER, FILE, SHARED = "#dbe9f6", "#e2f2df", "#f4f4f4", "#fbeed5"

# name -> (x, y, label, colour); x, y are box centres on a 16 x 9 canvas.
BOXES: dict[str, tuple[float, float, str, str]] = {
    "datasets": (1.2, 7.6, "dataset folders\nimages/ + masks/\n[data.datasets]", FILE),
    "prepare": (1.2, 5.9, "synthetic\nbackgrounds\n[prepare]", TRAIN),
    "cache": (3.7, 7.6, "training cache .npz\n(one square size)\n[data.cache]", TRAIN),
    "augment": (6.3, 7.6, "batch augmentation\non the device\n[data.augment]", TRAIN),
    "model": (8.9, 7.6, "Mobile-UNet: encoder\n> decoder > head\n[models]", SHARED),
    "loss": (11.5, 7.6, "loss, AdamW, EMA,\nLR schedule, validation\n[train, losses,\nmetrics]", TRAIN),
    "ckpt": (14.3, 7.6, "checkpoint .pt\nconfig + weights\n[checkpoint]", FILE),
    "export": (14.3, 5.6, "fuse BN > ONNX\n/ TFLite, verify\nvia open_model\n[export]", TRAIN),
    "weights": (14.3, 3.6, "model file .onnx\n/ .tflite + metadata\n[weights/]", FILE),
    "open": (11.5, 3.6, "open_model(spec,\nbackend): onnx, tflite,\ntorch, peers [runtimes]", INFER),
    "frame": (1.2, 1.5, "image / frame\n(file, HTTP, camera)", FILE),
    "pre": (3.7, 1.5, "preprocess: resize\nto the input size\n[runtimes]", INFER),
    "prob": (6.3, 1.5, "probability map\nat model size\n[runtimes]", INFER),
    "post": (11.5, 1.5, "post-process: guided\nupsample, keep-largest\n[postprocess]", INFER),
    "temporal": (8.9, 1.5, "temporal smoothing\nat model size\n(video) [temporal]", INFER),
    "render": (14.3, 1.5, "render: mask,\ncut-out, composite\n[pipeline]", INFER),
    "eval": (6.3, 4.4, "eval: IoU, boundary\nF1 vs truth, peers\n[evaluate, metrics]", INFER),
}
# (from, to, label)
ARROWS = [
    ("datasets", "cache", "decode once"),
    ("datasets", "prepare", ""),
    ("prepare", "cache", "composited set"),
    ("cache", "augment", "uint8 batches"),
    ("augment", "model", "images in [0,1]"),
    ("model", "loss", "logits"),
    ("loss", "ckpt", "last.pt / best.pt"),
    ("ckpt", "export", ""),
    ("export", "weights", ""),
    ("weights", "open", ""),
    ("ckpt", "open", "torch backend"),
    ("frame", "pre", ""),
    ("pre", "prob", "Runtime"),
    ("prob", "temporal", ""),
    ("temporal", "post", ""),
    ("post", "render", "alpha"),
    ("open", "prob", ""),
    ("prob", "eval", ""),
]
W, H = 1.9, 1.15


def _edge(a: tuple[float, float], b: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Arrow end points on the box borders (boxes are W x H around their centres)."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    def clip(sx: float, sy: float) -> tuple[float, float]:
        t = min((W / 2) / abs(dx) if dx else 1e9, (H / 2) / abs(dy) if dy else 1e9)
        return sx * t, sy * t
    ox, oy = clip(dx, dy)
    return (x0 + ox, y0 + oy), (x1 - ox, y1 - oy)


def main(out: Path = OUT) -> Path:
    fig, ax = plt.subplots(figsize=(16, 9))
    ax.set_xlim(0, 15.6)
    ax.set_ylim(0.3, 8.6)
    ax.axis("off")
    title = {"fontsize": 13, "weight": "bold"}
    ax.text(0.1, 8.45, "training (needs the `train` extra: torch)", color="#2b5d8a", **title)
    ax.text(0.1, 0.42, "inference: one Pipeline for predict, serve, video, webcam, bench "
            "(core install: numpy, OpenCV, onnxruntime)", color="#3b7a35", **title)
    # The Pipeline: one object from frame to rendered output (inference.Segmenter holds one).
    ax.add_patch(FancyBboxPatch((2.6, 0.82), 12.9, 1.4, boxstyle="round,pad=0.05", fc="none",
                                ec="#3b7a35", lw=1.5, ls="--"))
    ax.text(15.45, 2.3, "Pipeline [pipeline]", ha="right", va="bottom", fontsize=10, color="#3b7a35")
    for x, y, label, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.05",
                                    fc=colour, ec="#555555", lw=1.2))
        ax.text(x, y, label, ha="center", va="center", fontsize=9.5)
    for a, b, label in ARROWS:
        start, end = _edge(BOXES[a][:2], BOXES[b][:2])
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.3})
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            diagonal = abs(end[1] - start[1]) > 0.3
            ax.text(mx - 0.1 if diagonal else mx, my + 0.1, label, ha="right" if diagonal else "center",
                    va="bottom", fontsize=8.5, style="italic", color="#333333")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
