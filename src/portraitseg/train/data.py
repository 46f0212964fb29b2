"""Training data on the device: caches, per-source draw probabilities and epoch index draws."""

from __future__ import annotations

import numpy as np
import torch

from ..data.cache import CacheArrays, concat_caches, load_cache

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load_labelled(paths: list[str], workers: int, limit: int | None, progress: bool = True) -> CacheArrays:
    """One or more labelled caches joined, optionally cut to the first ``limit`` samples."""
    if not paths:
        raise ValueError("no training cache given (build one with `portraitseg cache`)")
    data = concat_caches([load_cache(p, workers, progress) for p in paths])
    if limit:
        data = CacheArrays(
            data.images[:limit],
            data.targets[:limit],
            data.ignore[:limit],
            data.source[:limit],
            data.source_names,
            data.names[:limit],
        )
    if data.targets is None:
        raise ValueError(f"{paths[0]}: cache has no targets (an image-only cache?)")
    return data


def load_images(paths: str | list[str] | None, workers: int, progress: bool = True) -> CacheArrays | None:
    """Image-only cache(s) (backgrounds), or None."""
    if not paths:
        return None
    paths = [paths] if isinstance(paths, str) else list(paths)
    return concat_caches([load_cache(p, workers, progress) for p in paths])


def to_device(data: CacheArrays, device: torch.device) -> Tensors:
    return tuple(torch.from_numpy(a).to(device) for a in (data.images, data.targets, data.ignore))


def source_probs(data: CacheArrays, weights: dict[str, float], shares: bool) -> np.ndarray:
    """Per-sample draw probabilities from per-source weights.

    ``shares=False``: a weight multiplies the source's uniform per-sample probability (unlisted
    sources weigh 1). ``shares=True``: a weight is the source's share of all draws, split evenly
    over its samples (unlisted sources get none).
    """
    unknown = set(weights) - set(data.source_names)
    if unknown:
        raise ValueError(
            f"weights name unknown source(s) {sorted(unknown)}; the cache holds {data.source_names}"
        )
    counts = np.bincount(data.source, minlength=len(data.source_names)).astype(np.float64)
    default = 0.0 if shares else 1.0
    w = np.array([float(weights.get(name, default)) for name in data.source_names])
    if (w < 0).any() or not (w * (counts > 0)).any():
        raise ValueError(f"source weights must be >= 0 and not all zero: {weights}")
    per_sample = w / counts.clip(min=1) if shares else w
    probs = per_sample[data.source]
    return (probs / probs.sum()).astype(np.float32)


def epoch_indices(
    n: int, draws: int, probs: torch.Tensor | None, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The epoch's sample order: a permutation of all ``n``, or ``draws`` weighted draws."""
    if probs is None:
        return torch.randperm(n, generator=gen, device=device)
    return torch.multinomial(probs, draws, replacement=True, generator=gen)
