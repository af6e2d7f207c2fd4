"""DeepLabV3+ (Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018)."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ASPP, ConvBNReLU, SegmentationHead
from ..encoders import Encoder
from .base import SegmentationModel, upsample_to

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+: an encoder run at output stride 16 (or 8) with atrous convolution in its
    last stage(s), ASPP on its deepest feature, and a decoder (Sec. 3.1, Fig. 2) that
    projects the stride-4 low-level feature to 48 channels, concatenates it with the 4x
    upsampled ASPP output, refines with two 3x3 convolutions and upsamples 4x to the input.

    Args:
        encoder: an encoder built with ``output_stride`` 16 or 8 (``create_model`` does this).
        num_classes: output classes.
        output_stride: 16 (ASPP rates 6, 12, 18) or 8 (rates doubled).
        aspp_channels: width of ASPP and the decoder (256 in the paper).
        low_level_channels: width of the projected low-level feature (48 in the paper).
    """

    arch = "deeplabv3p"

    def __init__(self, encoder: Encoder, num_classes: int, output_stride: int = 16, aspp_channels: int = 256, low_level_channels: int = 48):
        super().__init__(encoder, num_classes)
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        if 4 not in encoder.reductions:
            raise ValueError("DeepLabV3+ needs an encoder feature at stride 4 for its decoder")
        self.output_stride = output_stride
        self.low_level_index = encoder.reductions.index(4)
        self.aspp = ASPP(encoder.out_channels[-1], aspp_channels, ASPP_RATES[output_stride])
        self.low_level_project = ConvBNReLU(encoder.out_channels[self.low_level_index], low_level_channels, kernel_size=1)
        self.refine = nn.Sequential(
            ConvBNReLU(aspp_channels + low_level_channels, aspp_channels),
            ConvBNReLU(aspp_channels, aspp_channels),
        )
        self.head = SegmentationHead(aspp_channels, num_classes)

    def segment(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        low_level = self.low_level_project(features[self.low_level_index])  # B x 48 x H/4 x W/4
        context = upsample_to(self.aspp(features[-1]), low_level.shape[-2:])  # B x 256 x H/4 x W/4
        logits = self.head(self.refine(torch.cat([context, low_level], dim=1)))
        return [upsample_to(logits, x.shape[-2:])]
