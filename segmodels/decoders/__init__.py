"""Decoders: each maps a list of encoder features to named decoded features (the main one
first), so that :class:`~segmodels.models.SegmentationModel` can put heads on them. One
decoder per file, each citing its paper."""

from .base import Decoder
from .deeplabv3p import DeepLabV3PlusDecoder
from .unet import UNetDecoder
from .unet3p import UNet3PlusDecoder
from .unetpp import UNetPlusPlusDecoder

__all__ = ["Decoder", "UNetDecoder", "UNetPlusPlusDecoder", "UNet3PlusDecoder", "DeepLabV3PlusDecoder"]
