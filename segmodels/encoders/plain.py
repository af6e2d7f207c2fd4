"""The U-Net paper's contracting path (Ronneberger et al. 2015, Sec. 2)."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import DoubleConv
from .base import Encoder, dilation_schedule
from .registry import register_encoder


@register_encoder("plain", "U-Net encoder")
class PlainEncoder(Encoder):
    """Double 3x3 conv blocks, each followed by 2x2 max-pooling that halves the size and
    doubles the width: ``base, 2*base, ..., 16*base`` channels at strides 1..16.
    Trained from scratch. With ``output_stride`` (8 or 16 is a no-op at 4 stages), the pools
    past that stride are dropped and the following blocks are dilated instead."""

    def __init__(self, base_channels: int = 64, num_stages: int = 4, output_stride: int | None = None):
        widths = [base_channels * 2**i for i in range(num_stages + 1)]
        dilations = dilation_schedule(num_stages, output_stride)
        reductions = [1]
        for dilation in dilations:
            reductions.append(reductions[-1] * (1 if dilation > 1 else 2))
        super().__init__(widths, reductions)
        self.stem = DoubleConv(3, widths[0])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Identity() if dilation > 1 else nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1], dilation=dilation))
            for i, dilation in enumerate(dilations)
        )

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for stage in self.stages[: (num_levels or len(self.reductions)) - 1]:
            features.append(stage(features[-1]))
        return features
