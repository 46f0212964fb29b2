"""timm-style model registry: ``create_model("mobile-unet-050-bilinear", dropout=0.2)``."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..defaults import DEFAULT_MODEL
from .unet import MobileUNet, MobileUNetConfig

__all__ = ["DEFAULT_MODEL", "create_model", "list_models", "model_config", "register"]

_REGISTRY: dict[str, MobileUNetConfig] = {}


def register(name: str, config: MobileUNetConfig) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = config


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> MobileUNetConfig:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model, optionally overriding config fields (width, dropout, ...)."""
    return MobileUNet(model_config(name, **overrides))


def _register_defaults() -> None:
    for width in (0.35, 0.5, 0.75, 1.0):
        for decoder in ("bilinear", "transpose"):
            tag = f"{int(round(width * 100)):03d}"
            register(f"mobile-unet-{tag}-{decoder}", MobileUNetConfig(width=width, decoder=decoder))


_register_defaults()
