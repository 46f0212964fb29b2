"""Flicker and moving-frame IoU with vs without temporal smoothing, on clips generated from
real photos (docs/video.md):

    python -m portraitseg.bench.temporal ../shared/data --clips 6
"""

from __future__ import annotations

import numpy as np

from ..metrics import mask_iou
from ..temporal import SmoothingConfig, TemporalSmoother, flicker, lowres_gray


def measure(
    data_root: str, n_clips: int = 5, width: int = 480, height: int = 270, cfg: SmoothingConfig | None = None
) -> dict[str, float]:
    """Flicker and moving-frame IoU with vs without smoothing on clips generated from the
    first ``n_clips`` photos of ``data_root/vikram_val`` (the model runs once per frame; the
    smoothing is replayed on the same probabilities)."""
    from ..inference import Segmenter
    from ..testclips import ClipConfig, clip_from_dataset

    seg = Segmenter(threads=1)
    sums: dict[str, list[float]] = {
        "flicker_off": [],
        "flicker_on": [],
        "iou_moving_off": [],
        "iou_moving_on": [],
        "iou_all_off": [],
        "iou_all_on": [],
    }
    for k in range(n_clips):
        clip = clip_from_dataset(data_root, k, ClipConfig(width=width, height=height, seed=k))
        raw = [seg.lowres_prob(f) for f in clip.frames]
        sm = TemporalSmoother(cfg)
        for tag, smooth in (("off", False), ("on", True)):
            sm.reset()
            alphas = []
            for f, p in zip(clip.frames, raw):
                q = sm.update(p, lowres_gray(f, p.shape)) if smooth else p
                alphas.append(seg.postprocessor(q, f).copy())
            sums[f"flicker_{tag}"].append(flicker(alphas, clip.masks, clip.frames))
            sums[f"iou_moving_{tag}"].append(
                float(np.mean([mask_iou(a, g) for a, g, m in zip(alphas, clip.masks, clip.moving) if m]))
            )
            all_ious = [mask_iou(a, g) for a, g in zip(alphas, clip.masks)]
            sums[f"iou_all_{tag}"].append(float(np.mean(all_ious)))
    out = {k: round(float(np.mean(v)), 5) for k, v in sums.items()}
    out["flicker_factor"] = round(out["flicker_off"] / max(out["flicker_on"], 1e-12), 3)
    out["per_clip_factor"] = [
        round(a / max(b, 1e-12), 3) for a, b in zip(sums["flicker_off"], sums["flicker_on"])
    ]
    out["n_clips"] = n_clips
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Flicker / IoU with vs without temporal smoothing.")
    parser.add_argument("data_root", help="the shared data folder (vikram_val/, backgrounds/textures/)")
    parser.add_argument("--clips", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.data_root, args.clips), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
