"""BatchNorm folding: every Conv -> BatchNorm pair becomes one convolution before export.

Generic on purpose: pairs are found by walking the module tree (a convolution immediately
followed, in registration order, by a BatchNorm over its output channels, inside any module),
not by attribute names, so a re-organised model (encoder -> decoder -> head classes) needs no
special cases. :func:`check_fusion` then proves on random inputs that the folded model computes
the same function; a pair that is registered adjacently but not applied in sequence fails
there instead of exporting a wrong model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

FUSION_ATOL = 1e-4  # BatchNorm folding only reorders float rounding


def fuse_conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` whose weights and bias absorb the (eval-mode) BatchNorm after it."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        w = conv.weight
        if isinstance(conv, nn.ConvTranspose2d):
            # Weight is (in, out/groups, kh, kw): output channel o = g*(out/groups) + j.
            g = conv.groups
            w = w.view(g, w.shape[0] // g, w.shape[1], *w.shape[2:]) * scale.view(g, 1, -1, 1, 1)
            w = w.view_as(conv.weight)
        else:
            w = w * scale.view(-1, 1, 1, 1)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.weight = nn.Parameter(w.clone())
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
    return fused


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not (_is_conv(conv) and isinstance(bn, nn.BatchNorm2d)):
        return False
    out_channels = conv.out_channels  # type: ignore[union-attr]
    return bn.num_features == out_channels


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Eval-mode copy of ``model`` with every Conv->BatchNorm pair folded into one conv.

    A pair is two adjacent children of any module (``nn.Sequential`` blocks, or a module that
    registers ``conv`` then ``bn``). Where a resize sits between them (the bilinear decoder),
    folding is still exact: BatchNorm is a per-channel affine map and bilinear weights sum to 1.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if conv is not None and bn is not None and _foldable(conv, bn):
                module._modules[a] = fuse_conv_bn(conv, bn)  # type: ignore[arg-type]
                module._modules[b] = nn.Identity()
    return fused


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def check_fusion(model: nn.Module, fused: nn.Module, size: int = 64, seed: int = 0) -> float:
    """Max abs logit difference between ``model`` and ``fused``; ValueError if not equal."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=gen)
    with torch.no_grad():
        ref, out = model.eval()(x), fused.eval()(x)
    diff = float((ref - out).abs().max())
    tol = FUSION_ATOL * (1.0 + float(ref.abs().max()))
    if not diff <= tol:
        raise ValueError(f"BatchNorm folding changed the output by {diff:.3g} (> {tol:.3g})")
    return diff
