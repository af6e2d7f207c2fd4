"""Encoders: modules mapping an image to a list of multi-scale features, shallow to deep.

Every encoder exposes ``out_channels`` and ``reductions`` (the stride of each feature with
respect to the input), so any decoder in :mod:`segmodels.decoders` fits any encoder, as in
segmentation_models_pytorch. Encoders are registered with :func:`register_encoder` and
built by name with :func:`create_encoder`.
"""

from __future__ import annotations

from .base import Encoder, EncoderRequirements, PretrainedWeightsMissing
from .efficientnet import EfficientNetLite0Encoder
from .plain import PlainEncoder
from .registry import ENCODERS, create_encoder, register_encoder
from .resnet import ResNetEncoder

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderRequirements",
    "PretrainedWeightsMissing",
    "create_encoder",
    "register_encoder",
    "PlainEncoder",
    "EfficientNetLite0Encoder",
    "ResNetEncoder",
]
