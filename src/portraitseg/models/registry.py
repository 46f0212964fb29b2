"""timm-style model registry: ``create_model("mobile-unet-050-bilinear", dropout=0.2)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from .unet import MobileNetV2Encoder, MobileUNet, MobileUNetConfig  # noqa: F401

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


def _register_defaults(factory: Callable[[str, MobileUNetConfig], None] = register) -> None:
    for width in (0.35, 0.5, 0.75, 1.0):
        for decoder in ("bilinear", "transpose"):
            tag = f"{int(round(width * 100)):03d}"
            factory(f"mobile-unet-{tag}-{decoder}", MobileUNetConfig(width=width, decoder=decoder))


_register_defaults()

DEFAULT_MODEL = "mobile-unet-050-bilinear"
