"""Mixed precision for training: bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16,
AMX) when asked, with BatchNorm kept in fp32.

Why BatchNorm stays fp32: under plain CPU autocast a BatchNorm sees the bf16 conv output and its
weight/bias gradients are reduced from bf16 values; on real batches a few of those gradients came
out far from fp32's (scripts/check_bf16_grads.py, MODEL_CARD.md "Training speed"). The loss casts
the logits to fp32, and AdamW's state follows the fp32 parameters, so only convolutions run in bf16.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def keep_batchnorm_fp32(model: nn.Module) -> nn.Module:
    """Make every BatchNorm of ``model`` compute in fp32 under autocast, without changing its
    parameter or buffer names (forward pre/post hooks, so state dicts stay as they are)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not getattr(module, "_fp32", False):
            module.register_forward_pre_hook(_to_fp32_pre)
            module._fp32 = True  # type: ignore[attr-defined]
    return model


def _to_fp32_pre(module: nn.Module, args: tuple) -> tuple:
    (x,) = args
    return (x.float(),)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 / AMX).

    Without it, autocast sends every bf16 convolution to ATen's reference im2col path, one call per
    group for depthwise convs: on an AVX2-only VM a training step ran 5-11x SLOWER than fp32
    (MODEL_CARD.md "Training speed"), so bf16 is only worth asking for where this is true.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def use_bf16(device: torch.device, amp: bool, cpu_bf16: bool, native: bool | None = None) -> bool:
    """Whether a run on ``device`` trains under bf16 autocast: ``amp`` on CUDA; on the CPU,
    ``cpu_bf16`` where the CPU computes bf16 natively (``native``, default: detected)."""
    if device.type == "cuda":
        return amp
    if device.type != "cpu" or not cpu_bf16:
        return False
    if native is not None:
        return native
    if not cpu_has_native_bf16():
        print("note: bf16 training asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): "
              "training in fp32, which is several times faster here", flush=True)
        return False
    return True
