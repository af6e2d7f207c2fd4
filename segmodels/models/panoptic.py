"""Panoptic-DeepLab's instance heads (Cheng, Collins, Zhu, Liu, Huang, Adam & Chen, CVPR 2020)
on a DeepLabV3+ semantic model.

Panoptic-DeepLab predicts three maps from one image (its Fig. 1):

- **semantic logits**, as any DeepLab;
- an **instance-centre heatmap** ``H(x)``, trained to be a 2-D Gaussian
  ``exp(-||x - c_k||^2 / (2 sigma^2))`` around the centre of mass ``c_k`` of every object
  (the paper: sigma = 8 px on 1024 x 2048 Cityscapes frames);
- a **centre offset** ``O(x) = c_k - x`` (two channels, dy and dx in pixels) at every pixel
  ``x`` of object ``k``.

Grouping (:mod:`segmodels.panoptic`) then needs no proposals: each object pixel goes to the
predicted centre nearest to ``x + O(x)``.

Differences from the paper, all for a small CPU-trained model: the paper gives the instance
branch its own ASPP and decoder (dual-ASPP, dual-decoder); here the instance heads sit on the
**same** encoder and decoder as the semantic head, those of the shipped Shapes DeepLabV3+, so
the model is that network plus two heads. The official implementation's heads are a 5x5
depthwise-separable convolution, a convolution down to 32 channels and a 1x1 predictor; here
the depthwise-separable convolution's pointwise part goes straight to ``head_channels`` (32).
Both run at the decoder's stride 4 and are upsampled bilinearly to the image, the offsets
multiplied by the stride as they are upsampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import upsample_to
from .base import SegmentationModel

HEAD_CHANNELS = 32


class InstanceHead(nn.Sequential):
    """5x5 depthwise-separable convolution (depthwise 5x5, then pointwise to ``head_channels``,
    each with batch norm and ReLU), then a 1x1 convolution to ``out_channels``; size kept."""

    def __init__(self, in_channels: int, out_channels: int, head_channels: int = HEAD_CHANNELS):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 5, padding=2, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, head_channels, 1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, out_channels, 1),
        )


@dataclass
class PanopticOutput:
    """The three maps of one forward pass, all at the input's H x W.

    Attributes:
        semantic: B x K class logits.
        centre: B x 1 instance-centre heatmap (a Gaussian peak of height 1 per object when trained).
        offset: B x 2 offset from each pixel to its object's centre, (dy, dx) in pixels.
    """

    semantic: torch.Tensor
    centre: torch.Tensor
    offset: torch.Tensor


class PanopticDeepLab(nn.Module):
    """A semantic model with a centre head and an offset head on its decoder's main feature.

    Args:
        semantic: a :class:`~segmodels.models.SegmentationModel` with one head (DeepLabV3+ here);
            its encoder, decoder and head are used as they are, so its weights (e.g. a shipped
            model's) load into :attr:`semantic` unchanged.
        head_channels: width of each instance head's hidden layer.
    """

    def __init__(self, semantic: SegmentationModel, head_channels: int = HEAD_CHANNELS):
        super().__init__()
        if semantic.pruning_depths:
            raise ValueError(f"{type(semantic).__name__} can be pruned; the instance heads need one fixed decoder output")
        self.semantic = semantic
        self.main_feature = next(iter(semantic.decoder.out_channels))
        width = semantic.decoder.out_channels[self.main_feature]
        self.centre_head = InstanceHead(width, 1, head_channels)
        self.offset_head = InstanceHead(width, 2, head_channels)
        self.num_classes = semantic.num_classes

    def forward(self, images: torch.Tensor) -> PanopticOutput:
        """``images``: B x 3 x H x W RGB in [0, 1], any H and W (padded to the encoder's stride
        like :class:`SegmentationModel`, and cropped back)."""
        model = self.semantic
        height, width = images.shape[-2:]
        divisor = model.required_divisor
        x = (images - model.mean) / model.std
        x = F.pad(x, (0, math.ceil(width / divisor) * divisor - width, 0, math.ceil(height / divisor) * divisor - height))
        feature = model.decoder(model.encoder(x))[self.main_feature]
        size = x.shape[-2:]
        stride = size[0] / feature.shape[-2]
        semantic = upsample_to(model.heads[self.main_feature](feature), size)
        centre = upsample_to(self.centre_head(feature), size)
        offset = upsample_to(self.offset_head(feature), size) * stride
        return PanopticOutput(semantic[..., :height, :width], centre[..., :height, :width], offset[..., :height, :width])
