"""Does ``torch.compile`` give the same training gradients as eager mode on this machine?

    PYTHONPATH=src python scripts/check_compile_grads.py [--size 160] [--batch 32]

One batch of the bundled sample photos (augmented, dropout off), the bundled weights, one
backward pass eager and compiled; prints per-layer gradient norms and cosine similarity.
On the 2-core CPU with torch 2.13 (2026-12-01): with --batch 4 the gradients agree (cosine 1.000);
with --batch 32 the whole gradient's cosine to eager is 0.12 (head exact, encoder wrong), and a
fine-tune with --compile true diverged -- why train refuses it on CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from portraitseg.checkpoint import load_model
from portraitseg.losses import segmentation_loss

ASSETS = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets"
WEIGHTS = ASSETS.parent / "weights" / "default.pt"


def batch(size: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    imgs = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (size, size)) for p in sorted(ASSETS.glob("*.jpg"))]
    x = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255).permute(0, 3, 1, 2)
    x = torch.cat([x, x.flip(3)])
    # n samples: the photos again with a little noise (training batches are 32-128 large, and
    # the compiled kernels can differ with the reduction size).
    gen = torch.Generator().manual_seed(0)
    x = x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]
    x = (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = (load_model(WEIGHTS)(x) > 0).float()  # the model's own masks as targets
    y = F.avg_pool2d(y, 3, 1, 1)  # soft edges, as the teacher labels have
    return x, y, torch.zeros_like(y)


def grads(model: torch.nn.Module, data) -> list[torch.Tensor]:
    x, y, ign = data
    model.train()
    loss = segmentation_loss(model(x), y, ign, 0.5, 2.0)
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    data = batch(args.size, args.batch)
    eager = load_model(WEIGHTS).to(memory_format=torch.channels_last)
    compiled = load_model(WEIGHTS).to(memory_format=torch.channels_last)
    for m in [*eager.modules(), *compiled.modules()]:
        if isinstance(m, torch.nn.Dropout2d):
            m.p = 0.0
    g_eager = grads(eager, data)
    g_comp = grads(torch.compile(compiled), data)
    biggest = max(float(g.norm()) for g in g_eager)
    worst = 1.0
    for (name, _), a, b in zip(eager.named_parameters(), g_eager, g_comp):
        cos = F.cosine_similarity(a.flatten(), b.flatten(), 0).item()
        if float(a.norm()) > 1e-4 * biggest:  # ignore numerically-zero gradients (noise either way)
            worst = min(worst, cos)
        print(f"{name:50s} |g| eager {a.norm():.3e} compiled {b.norm():.3e} cosine {cos:.3f}")
    whole = F.cosine_similarity(torch.cat([g.flatten() for g in g_eager]),
                                torch.cat([g.flatten() for g in g_comp]), 0).item()
    verdict = "OK" if worst > 0.99 else "compiled gradients differ"
    print(f"all gradients: cosine {whole:.4f}; worst non-zero parameter: cosine {worst:.3f} ({verdict})")


if __name__ == "__main__":
    main()
