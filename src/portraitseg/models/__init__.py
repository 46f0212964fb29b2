"""Model zoo: Mobile-UNet variants = MobileNetV2 encoder -> U-Net decoder -> segmentation head."""

from .convert import to_head_kernel, to_subpixel_head
from .decoder import UNetDecoder
from .head import SegmentationHead
from .mobilenetv2 import MobileNetV2Encoder
from .registry import DEFAULT_MODEL, create_model, list_models, model_config, register
from .unet import MobileUNet, MobileUNetConfig, count_parameters, upgrade_state_dict

__all__ = [
    "DEFAULT_MODEL",
    "MobileNetV2Encoder",
    "MobileUNet",
    "MobileUNetConfig",
    "SegmentationHead",
    "UNetDecoder",
    "count_parameters",
    "create_model",
    "list_models",
    "model_config",
    "register",
    "to_head_kernel",
    "to_subpixel_head",
    "upgrade_state_dict",
]
