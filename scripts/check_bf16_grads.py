"""Does bf16 autocast on the CPU give the same training gradients as fp32 on real batches?

    python scripts/check_bf16_grads.py --cache .carry/train224.npz --bg .carry/bg224.npz \
        [--batches 8] [--batch 32] [--size 224] [--weights src/portraitseg/weights/default.pt]

For each of ``--batches`` real training batches (cached samples through the training
augmentation, dropout off, the bundled weights in train mode), one backward pass in fp32 and one
under each bf16 variant; prints the whole-gradient cosine to fp32 per batch, the worst parameters
(whose gradient is not numerically zero) and a verdict. Variants:

- ``bf16``: plain ``torch.autocast("cpu", torch.bfloat16)``;
- ``bf16-bn32``: the same, with every BatchNorm run in fp32 (``portraitseg.train.precision``),
  which is what ``train --cpu-bf16 true`` uses.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from portraitseg.checkpoint import load_model
from portraitseg.data.augment import AugmentConfig, BatchAugmenter
from portraitseg.data.cache import load_cache
from portraitseg.losses import segmentation_loss
from portraitseg.train.precision import autocast_context, keep_batchnorm_fp32


def grads(model: torch.nn.Module, x, y, ign, variant: str) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with autocast_context(torch.device("cpu"), variant != "fp32"):
        logits = model(x)
    loss = segmentation_loss(logits, y, ign, 0.5, 2.0)  # loss in fp32 (it casts the logits)
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--bg")
    ap.add_argument("--weights", default="src/portraitseg/weights/default.pt")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    c = load_cache(args.cache)
    imgs, tgts, ign = (torch.from_numpy(a) for a in (c.images, c.targets, c.ignore))
    bg = torch.from_numpy(load_cache(args.bg).images) if args.bg else None
    aug = BatchAugmenter(AugmentConfig(out_size=args.size), bg)
    models = {}
    for variant in ("fp32", "bf16", "bf16-bn32"):
        m = load_model(args.weights).train().to(memory_format=torch.channels_last)
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout2d):
                mod.p = 0.0  # the same function in every variant
        if variant == "bf16-bn32":
            keep_batchnorm_fp32(m)
        models[variant] = m
    names = [n for n, _ in models["fp32"].named_parameters()]
    gen = torch.Generator().manual_seed(0)
    worst: dict[str, list[tuple[float, str]]] = {"bf16": [], "bf16-bn32": []}
    whole: dict[str, list[float]] = {"bf16": [], "bf16-bn32": []}
    for b in range(args.batches):
        idx = torch.randint(len(imgs), (args.batch,), generator=gen)
        with torch.no_grad():
            x, y, m = aug(imgs[idx], tgts[idx], ign[idx], gen)
        x = x.contiguous(memory_format=torch.channels_last)
        ref = grads(models["fp32"], x, y, m, "fp32")
        biggest = max(float(g.norm()) for g in ref)
        line = [f"batch {b}"]
        for variant in ("bf16", "bf16-bn32"):
            g = grads(models[variant], x, y, m, variant)
            cw = cosine(torch.cat([t.flatten() for t in ref]), torch.cat([t.flatten() for t in g]))
            whole[variant].append(cw)
            per = [(cosine(a, bb), n) for n, a, bb in zip(names, ref, g) if float(a.norm()) > 1e-4 * biggest]
            worst[variant].extend(per)
            line.append(f"{variant}: whole {cw:.4f}, worst param {min(per)[0]:.3f} ({min(per)[1]})")
        print("; ".join(line), flush=True)
    for variant in ("bf16", "bf16-bn32"):
        per = sorted(worst[variant])
        cos = torch.tensor(whole[variant])
        below = sum(1 for c, _ in per if c < 0.99)
        print(f"{variant}: whole-gradient cosine mean {cos.mean():.4f} min {cos.min():.4f}; "
              f"per-parameter cosine < 0.99 in {below}/{len(per)} (parameter, batch) pairs; "
              f"worst: {', '.join(f'{n} {c:.3f}' for c, n in per[:4])}")


if __name__ == "__main__":
    main()
