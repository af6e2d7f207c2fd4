"""Pyramid pooling as the dashboard teaches it: two context modules no shipped model uses,
shown beside DeepLabV3+'s ASPP (:class:`segmodels.blocks.ASPP`, the one the models run).

* :class:`SPP`: Spatial Pyramid Pooling (He, Zhang, Ren & Sun, ECCV 2014, Sec. 2.3): max-pool a
  feature map of any size into fixed grids of bins (1x1, 2x2, 4x4 by default) and concatenate
  them, so the output length is ``C * sum(b^2)`` whatever the input height and width.
* :class:`PyramidPoolingModule`: PSPNet's pyramid pooling (Zhao, Shi, Qi, Wang & Jia, CVPR
  2017, Sec. 3.2, Fig. 3): average-pool the feature map into 1x1, 2x2, 3x3 and 6x6 bins,
  reduce each to ``C / 4`` channels with a 1x1 convolution, upsample bilinearly and
  concatenate with the input: ``C + 4 (C / 4) = 2C`` channels at the input's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import ConvBNReLU, upsample_to
from .numbers import positive_int

SPP_BINS = (1, 2, 4)
PSP_BINS = (1, 2, 3, 6)


class SPP(nn.Module):
    """Spatial Pyramid Pooling (He et al. 2014, Sec. 2.3): max-pools a feature map of any size
    into fixed grids of bins (1x1, 2x2, 4x4 by default) and concatenates them, so the output
    length is ``channels * sum(b * b for b in bins)`` whatever the input height and width."""

    def __init__(self, bins: tuple[int, ...] = SPP_BINS):
        super().__init__()
        self.bins = tuple(bins)

    def output_length(self, channels: int) -> int:
        return channels * sum(b * b for b in self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [F.adaptive_max_pool2d(x, b).flatten(1) for b in self.bins]  # each B x C*b*b
        return torch.cat(pooled, dim=1)


class PyramidPoolingModule(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al. 2017, Sec. 3.2): for each bin count b,
    adaptive average pooling to b x b, a 1x1 conv-BN-ReLU to ``in_channels // len(bins)``
    channels (the paper's 1/N), bilinear upsampling to the input's size; the input and the N
    pooled maps are concatenated."""

    def __init__(self, in_channels: int, bins: Sequence[int] = PSP_BINS):
        super().__init__()
        positive_int("in_channels", in_channels)
        if not bins or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins):
            raise ValueError(f"bins must be positive integers, got {bins!r}")
        if in_channels < len(bins):
            raise ValueError(f"in_channels ({in_channels}) must be at least the number of bins ({len(bins)})")
        self.bins = tuple(bins)
        branch_channels = in_channels // len(bins)
        self.branches = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(in_channels, branch_channels, kernel_size=1)) for b in self.bins)
        self.out_channels = in_channels + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(upsample_to(branch(x), size) for branch in self.branches)], dim=1)


__all__ = ["PSP_BINS", "SPP", "SPP_BINS", "PyramidPoolingModule"]
