"""Model zoo: Mobile-UNet variants built from a MobileNetV2 encoder and a U-Net decoder."""

from .mobilenetv2 import MobileNetV2Encoder
from .registry import DEFAULT_MODEL, create_model, list_models, model_config, register
from .unet import MobileUNet, MobileUNetConfig, count_parameters, to_subpixel_head

__all__ = [
    "DEFAULT_MODEL",
    "MobileNetV2Encoder",
    "MobileUNet",
    "MobileUNetConfig",
    "count_parameters",
    "create_model",
    "list_models",
    "model_config",
    "register",
    "to_subpixel_head",
]
