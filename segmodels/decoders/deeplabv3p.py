"""DeepLabV3+'s decoder (Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import ASPP, ConvBNReLU, SeparableConv, upsample_to
from .base import Decoder

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class DeepLabV3PlusDecoder(Decoder):
    """ASPP on the deepest feature, then the decoder of Sec. 3.1 (Fig. 2): the stride-4
    low-level feature is projected by a 1x1 conv to ``low_level_channels`` (48), concatenated
    with the ASPP output upsampled 4x (bilinear), and refined by two 3x3 convs of
    ``aspp_channels`` (256). One output, ``main``, at stride 4.

    With ``separable`` (the default, as published: the abstract "apply the depthwise separable
    convolution to both Atrous Spatial Pyramid Pooling and decoder modules"; atrous separable
    convolution in Sec. 3.1, Fig. 3) ASPP's three atrous convs and the two refining 3x3 convs
    are depthwise separable (:class:`~segmodels.blocks.SeparableConv`); without it they are
    dense 3x3 convs, as in DeepLabV3's ASPP.

    Args:
        encoder_channels: width of each encoder feature, shallow to deep.
        encoder_reductions: stride of each encoder feature; one must be 4.
        output_stride: stride of the deepest feature, 16 (ASPP rates 6, 12, 18) or 8 (rates doubled).
        aspp_channels: width of ASPP and the decoder (256 in the paper).
        low_level_channels: width of the projected low-level feature (48 in the paper).
        separable: depthwise separable 3x3 convs in ASPP and the decoder (default) or dense ones.
    """

    def __init__(self, encoder_channels: Sequence[int], encoder_reductions: Sequence[int], output_stride: int = 16, aspp_channels: int = 256, low_level_channels: int = 48,
                 separable: bool = True):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        if 4 not in encoder_reductions:
            raise ValueError(f"DeepLabV3+ needs an encoder feature at stride 4, got strides {list(encoder_reductions)}")
        self.low_level_index = list(encoder_reductions).index(4)
        self.aspp = ASPP(encoder_channels[-1], aspp_channels, ASPP_RATES[output_stride], separable=separable)
        self.low_level_project = ConvBNReLU(encoder_channels[self.low_level_index], low_level_channels, kernel_size=1)
        refine_conv = SeparableConv if separable else ConvBNReLU
        self.refine = nn.Sequential(
            refine_conv(aspp_channels + low_level_channels, aspp_channels),
            refine_conv(aspp_channels, aspp_channels),
        )
        self.out_channels = {"main": aspp_channels}

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        low_level = self.low_level_project(features[self.low_level_index])  # B x 48 x H/4 x W/4
        context = upsample_to(self.aspp(features[-1]), low_level.shape[-2:])  # B x 256 x H/4 x W/4
        return {"main": self.refine(torch.cat([context, low_level], dim=1))}
