"""Small named building blocks shared by the four architectures.

The DeepLab ideas the dashboard teaches live here as real layers:
:class:`AtrousConv` (dilated convolution), :class:`SeparableConv` and
:class:`AtrousSeparableConv` (depthwise separable convolution, DeepLabV3+ Sec. 3.1) and
:class:`ASPP` (Chen et al. 2017, DeepLabV3 Sec. 3.3). The pooling modules the dashboard only
teaches (SPP, PSPNet's pyramid pooling) are in :mod:`segmodels.teach.pooling`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """k x k convolution (optionally dilated), batch norm, ReLU; spatial size kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers: the unit of every U-Net stage (Ronneberger et al. 2015, Sec. 2)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, dilation: int = 1):
        mid_channels = mid_channels or out_channels
        super().__init__(
            ConvBNReLU(in_channels, mid_channels, dilation=dilation),
            ConvBNReLU(mid_channels, out_channels, dilation=dilation),
        )


class AtrousConv(ConvBNReLU):
    """3x3 atrous (dilated) convolution: taps spaced ``rate`` pixels apart, so one layer covers
    ``2 * rate + 1`` pixels with 9 weights and no loss of resolution (DeepLabV3, Sec. 3.1)."""

    def __init__(self, in_channels: int, out_channels: int, rate: int):
        super().__init__(in_channels, out_channels, kernel_size=3, dilation=rate)
        self.rate = rate


def separable_cost_ratio(out_channels: int, kernel_size: int = 3) -> float:
    """Weights (and multiply-adds) of a depthwise separable k x k convolution over those of
    the dense one with the same input and output channels (MobileNets, Howard et al. 2017,
    Sec. 3.1, from Eqs. 2 and 5): (k^2 C_in + C_in C_out) / (k^2 C_in C_out) = 1/C_out + 1/k^2."""
    return 1 / out_channels + 1 / kernel_size**2


class SeparableConv(nn.Sequential):
    """Depthwise separable k x k convolution (DeepLabV3+, Sec. 3.1 and Fig. 3; MobileNets,
    Howard et al. 2017, Sec. 3.1): a depthwise k x k convolution filters each of the C_in
    channels on its own (optionally dilated: *atrous* separable convolution), then a pointwise
    1x1 convolution mixes them into C_out channels. Against a dense k x k convolution it costs

        (k^2 C_in + C_in C_out) / (k^2 C_in C_out) = 1/C_out + 1/k^2

    of the weights and of the multiply-adds (MobileNets, Sec. 3.1, from Eqs. 2 and 5); :attr:`cost_ratio`.

    Layer order as in the authors' implementation (tensorflow/models,
    ``research/deeplab/core/utils.py``, ``split_separable_conv2d``: "applies activation
    function between depthwise and pointwise conv2d", inside an arg scope that adds batch norm
    and ReLU to every conv): depthwise conv, batch norm, ReLU, pointwise conv, batch norm,
    ReLU. Each convolution has its own batch norm, so both fold for inference
    (segmentation_models_pytorch's ``SeparableConv2d`` has neither between the two)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels, bias=False),
            depthwise_bn=nn.BatchNorm2d(in_channels),
            depthwise_relu=nn.ReLU(inplace=True),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pointwise_bn=nn.BatchNorm2d(out_channels),
            pointwise_relu=nn.ReLU(inplace=True),
        ))

    @property
    def cost_ratio(self) -> float:
        """Weights (and multiply-adds) of this layer over those of a dense k x k convolution
        from C_in to C_out channels: 1/C_out + 1/k^2."""
        return separable_cost_ratio(self.pointwise.out_channels, self.depthwise.kernel_size[0])


class AtrousSeparableConv(SeparableConv):
    """3x3 atrous separable convolution (DeepLabV3+, Sec. 3.1): the depthwise 3x3 taps are
    ``rate`` pixels apart, so it sees what :class:`AtrousConv` sees, at :attr:`cost_ratio`
    of its cost."""

    def __init__(self, in_channels: int, out_channels: int, rate: int):
        super().__init__(in_channels, out_channels, kernel_size=3, dilation=rate)
        self.rate = rate


ATROUS_CONVS = (AtrousConv, AtrousSeparableConv)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv, broadcast back (DeepLabV3, Sec. 3.3).
    The pooled map is 1x1, so batch norm would fail on a batch of one; the conv has a bias instead."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(self.pool(x))  # B x C x 1 x 1
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3, Sec. 3.3): a 1x1 conv, three 3x3 atrous convs
    at ``rates`` and image pooling run in parallel on the same feature, concatenated and
    projected by a 1x1 conv. Rates are (6, 12, 18) at output stride 16 and doubled at 8.
    With ``separable`` the atrous convs are atrous separable (DeepLabV3+, Sec. 3.1)."""

    def __init__(self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.1, separable: bool = False):
        super().__init__()
        atrous = AtrousSeparableConv if separable else AtrousConv
        branches = [ConvBNReLU(in_channels, out_channels, kernel_size=1)]
        branches += [atrous(in_channels, out_channels, rate) for rate in rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.rates = tuple(rates)
        self.project = nn.Sequential(
            ConvBNReLU(len(branches) * out_channels, out_channels, kernel_size=1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class SegmentationHead(nn.Conv2d):
    """k x k convolution (1x1 by default) from decoder features to one logit per class; size kept."""

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int = 1):
        super().__init__(in_channels, num_classes, kernel_size, padding=kernel_size // 2)


def upsample_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear interpolation to ``size`` (no-op when it already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
