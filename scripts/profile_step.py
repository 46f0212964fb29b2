"""Time one training step's parts on the current device (augmentation, forward+backward).

    PYTHONPATH=src python scripts/profile_step.py --cache .carry/val224.npz --bg .carry/bg224.npz
Prints ms/step for each variant and, last, ``BEST_CHANNELS_LAST=<true|false>``.
"""

from __future__ import annotations

import argparse
import time

import torch

from portraitseg.data.augment import AugmentConfig, BatchAugmenter
from portraitseg.data.cache import load_cache
from portraitseg.losses import segmentation_loss
from portraitseg.models import create_model


def timed(fn, steps: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--bg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--model", default="mobile-unet-050-bilinear")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    data = load_cache(args.cache)
    bg = torch.from_numpy(load_cache(args.bg).images).to(dev) if args.bg else None
    imgs, tgts, ign = (torch.from_numpy(a).to(dev) for a in (data.images, data.targets, data.ignore))
    idx = torch.randint(len(imgs), (args.batch,), device=dev)
    aug = BatchAugmenter(AugmentConfig(), bg)
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"augment: {timed(lambda: aug(imgs[idx], tgts[idx], ign[idx], gen), args.steps, dev):.2f} ms/batch")
    x, y, m = aug(imgs[idx], tgts[idx], ign[idx], gen)
    results = {}
    for cl in (True, False):
        for amp in (True, False):
            model = create_model(args.model).to(dev)
            xin = x
            if cl:
                model = model.to(memory_format=torch.channels_last)
                xin = x.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), 1e-3)

            def step(model=model, opt=opt, xin=xin, amp=amp):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                    out = model(xin)
                loss = segmentation_loss(out, y, m, 0.5, 2.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            ms = timed(step, args.steps, dev)
            results[(cl, amp)] = ms
            print(
                f"train step channels_last={cl} bf16={amp}: "
                f"{ms:.2f} ms/step, {args.batch / ms * 1000:.0f} img/s"
            )
    best = min(results, key=results.get)
    print(f"BEST_CHANNELS_LAST={'true' if best[0] else 'false'}")
    print(f"BEST_AMP={'true' if best[1] else 'false'}")


if __name__ == "__main__":
    main()
