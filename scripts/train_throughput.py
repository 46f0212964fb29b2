"""CPU/GPU training throughput (img/s) of one optimiser step, augmentation included, per option.

    python scripts/train_throughput.py --cache .carry/val224.npz --bg .carry/bg224.npz \
        --sizes 224 --batches 64 --threads 2 --precision fp32 bf16 bf16-bn32 --freeze 0 8

Each variant: 2 warm-up steps, then ``--steps`` timed steps of augment + forward + backward +
AdamW on real cached samples; the augmentation's share is timed on its own. Variants run
interleaved over ``--rounds`` (the median is reported), so a busy machine slows all alike.
Options: ``--precision`` fp32 / bf16 (plain CPU autocast) / bf16-bn32 (BatchNorm kept fp32, what
``train --cpu-bf16`` does); ``--freeze S`` freezes the encoder up to stride S (0 = none);
``--channels-last``; ``--compile`` adds a torch.compile variant (rejected for CPU training).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass

import torch

from portraitseg.data.augment import AugmentConfig, BatchAugmenter
from portraitseg.data.cache import load_cache
from portraitseg.losses import segmentation_loss
from portraitseg.models import create_model
from portraitseg.train.precision import autocast_context, keep_batchnorm_fp32


@dataclass
class Variant:
    threads: int
    size: int
    batch: int
    channels_last: bool
    precision: str
    freeze: int

    @property
    def label(self) -> str:
        return (f"threads={self.threads} size={self.size} batch={self.batch} "
                f"channels_last={self.channels_last} "
                f"precision={self.precision} freeze_to_stride={self.freeze}")


def frozen_model(name: str, freeze: int) -> torch.nn.Module:
    """The model with the encoder's stages up to stride ``freeze`` frozen (no gradients, eval BatchNorm)."""
    model = create_model(name).train()
    if freeze:
        enc = model.encoder
        frozen = [enc.stem] + [st for st, stride in zip(enc.stages, enc.strides) if stride <= freeze]
        for part in frozen:
            part.requires_grad_(False)
            part.eval()
    return model


def make_step(model, aug, data, v: Variant, gen: torch.Generator):
    imgs, tgts, ign = data
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, 1e-4)
    bf16 = v.precision != "fp32"
    cpu = torch.device("cpu")
    timing = {"aug": 0.0}

    def one() -> None:
        idx = torch.randint(len(imgs), (v.batch,), generator=gen)
        t = time.perf_counter()
        with torch.no_grad():
            x, y, m = aug(imgs[idx], tgts[idx], ign[idx], gen)
        timing["aug"] += time.perf_counter() - t
        if v.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(cpu, bf16):
            logits = model(x)
        loss = segmentation_loss(logits, y, m, 0.5, 2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return one, timing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--bg")
    ap.add_argument("--model", default="mobile-unet-050-bilinear")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224])
    ap.add_argument("--batches", type=int, nargs="+", default=[64])
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--channels-last", choices=["both", "true", "false"], default="true")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "bf16-bn32"])
    ap.add_argument("--freeze", type=int, nargs="+", default=[0], help="freeze the encoder up to this stride")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (first variant)")
    args = ap.parse_args()
    c = load_cache(args.cache)
    data = tuple(torch.from_numpy(a) for a in (c.images, c.targets, c.ignore))
    bg = torch.from_numpy(load_cache(args.bg).images) if args.bg else None
    cls = {"both": [True, False], "true": [True], "false": [False]}[args.channels_last]
    variants = [Variant(*p) for p in itertools.product(
        args.threads, args.sizes, args.batches, cls, args.precision, args.freeze)]
    runners = []
    for v in variants:
        torch.manual_seed(0)
        model = frozen_model(args.model, v.freeze)
        if v.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if v.precision == "bf16-bn32":
            keep_batchnorm_fp32(model)
        aug = BatchAugmenter(AugmentConfig(out_size=v.size), bg)
        runners.append(make_step(model, aug, data, v, torch.Generator().manual_seed(0)))
    times: list[list[float]] = [[] for _ in variants]
    aug_share: list[list[float]] = [[] for _ in variants]
    for _ in range(args.rounds):
        for i, (v, (one, timing)) in enumerate(zip(variants, runners)):
            torch.set_num_threads(v.threads)
            for _ in range(2):
                one()
            timing["aug"] = 0.0
            t = time.perf_counter()
            for _ in range(args.steps):
                one()
            s = (time.perf_counter() - t) / args.steps
            times[i].append(s)
            aug_share[i].append(timing["aug"] / args.steps / s)
    rows = []
    for v, ts, shares in zip(variants, times, aug_share):
        s = statistics.median(ts)
        rows.append((v.label, v.batch / s))
        print(f"{v.label}: {s:.2f} s/step, {v.batch / s:.1f} img/s, augmentation "
              f"{100 * statistics.median(shares):.0f}% of the step", flush=True)
    if args.compile:
        v = variants[0]
        torch.set_num_threads(v.threads)
        model = create_model(args.model).train().to(memory_format=torch.channels_last)
        one, _ = make_step(torch.compile(model), BatchAugmenter(AugmentConfig(out_size=v.size), bg), data, v,
                           torch.Generator().manual_seed(0))
        t = time.perf_counter()
        one()
        one()
        t1 = time.perf_counter()
        for _ in range(args.steps):
            one()
        s = (time.perf_counter() - t1) / args.steps
        rows.append((f"compile {v.label}", v.batch / s))
        print(f"compile {v.label}: {s:.2f} s/step, {v.batch / s:.1f} img/s "
              f"(incl. {t1 - t:.0f} s compile)", flush=True)
    base = rows[0][1]
    for label, ips in rows:
        print(f"{ips / base:5.2f}x  {label}")


if __name__ == "__main__":
    main()
