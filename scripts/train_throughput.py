"""CPU/GPU training throughput (img/s) of one optimiser step, augmentation included, per option.

    python scripts/train_throughput.py --cache .carry/val224.npz --bg .carry/bg224.npz \
        --sizes 160 224 --batches 32 64 --threads 1 2 --compile

Each variant: 2 warm-up steps, then ``--steps`` timed steps of augment + forward + backward +
AdamW on real cached samples. Prints one row per variant and the fastest last.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from portraitseg.data.augment import AugmentConfig, BatchAugmenter
from portraitseg.data.cache import load_cache
from portraitseg.losses import segmentation_loss
from portraitseg.models import create_model


def step_time(model, aug, data, batch: int, steps: int, channels_last: bool) -> float:
    imgs, tgts, ign = data
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    gen = torch.Generator().manual_seed(0)

    def one() -> None:
        idx = torch.randint(len(imgs), (batch,), generator=gen)
        with torch.no_grad():
            x, y, m = aug(imgs[idx], tgts[idx], ign[idx], gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = segmentation_loss(model(x), y, m, 0.5, 2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        one()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--bg")
    ap.add_argument("--model", default="mobile-unet-050-bilinear")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224])
    ap.add_argument("--batches", type=int, nargs="+", default=[64])
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--channels-last", choices=["both", "true", "false"], default="both")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (first size/batch)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    c = load_cache(args.cache)
    data = tuple(torch.from_numpy(a) for a in (c.images, c.targets, c.ignore))
    bg = torch.from_numpy(load_cache(args.bg).images) if args.bg else None
    cls = {"both": [True, False], "true": [True], "false": [False]}[args.channels_last]
    rows = []
    for threads, size, batch, cl in itertools.product(args.threads, args.sizes, args.batches, cls):
        torch.set_num_threads(threads)
        model = create_model(args.model).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        aug = BatchAugmenter(AugmentConfig(out_size=size), bg)
        s = step_time(model, aug, data, batch, args.steps, cl)
        rows.append((f"threads={threads} size={size} batch={batch} channels_last={cl}", batch / s))
        print(f"{rows[-1][0]}: {s:.2f} s/step, {batch / s:.1f} img/s", flush=True)
    if args.compile:
        torch.set_num_threads(max(args.threads))
        model = create_model(args.model).train().to(memory_format=torch.channels_last)
        compiled = torch.compile(model)
        aug = BatchAugmenter(AugmentConfig(out_size=args.sizes[0]), bg)
        t = time.perf_counter()
        s = step_time(compiled, aug, data, args.batches[0], args.steps, True)
        label = f"compile threads={max(args.threads)} size={args.sizes[0]} batch={args.batches[0]}"
        rows.append((label, args.batches[0] / s))
        print(f"{label}: {s:.2f} s/step, {args.batches[0] / s:.1f} img/s "
              f"(incl. {time.perf_counter() - t:.0f} s compile+timing)", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"fastest: {best[0]} ({best[1]:.1f} img/s)")


if __name__ == "__main__":
    main()
