"""U-Net 3+ (Huang et al., ICASSP 2020)."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ConvBNReLU
from ..encoders import Encoder
from .base import SegmentationModel, upsample_to


class FullScaleDecoderStage(nn.Module):
    """One decoder stage X_De^i with full-scale skip connections (Sec. 2.1, Eq. 1).

    Shallower encoder features are max-pooled down to this scale, the same-scale encoder
    feature is used as is, deeper decoder stages (and the deepest encoder feature) are
    bilinearly upsampled; each is squeezed by a 3x3 conv to ``cat_channels``, the results are
    concatenated and fused by one more 3x3 conv of ``cat_channels * num_levels`` channels.
    """

    def __init__(self, level: int, encoder: Encoder, deeper_channels: list[int], cat_channels: int):
        super().__init__()
        self.level = level
        reductions = encoder.reductions
        self.shallower = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool2d(reductions[level] // reductions[k], ceil_mode=True) if reductions[level] > reductions[k] else nn.Identity(),
                ConvBNReLU(encoder.out_channels[k], cat_channels),
            )
            for k in range(level + 1)
        )
        self.deeper = nn.ModuleList(ConvBNReLU(c, cat_channels) for c in deeper_channels)
        self.fuse = ConvBNReLU(cat_channels * (len(self.shallower) + len(self.deeper)), cat_channels * len(encoder.out_channels))

    def forward(self, encoder_features: list[torch.Tensor], deeper: list[torch.Tensor]) -> torch.Tensor:
        size = encoder_features[self.level].shape[-2:]
        parts = [squeeze(f) for squeeze, f in zip(self.shallower, encoder_features)]
        parts += [squeeze(upsample_to(f, size)) for squeeze, f in zip(self.deeper, deeper)]
        return self.fuse(torch.cat(parts, dim=1))


class UNet3Plus(SegmentationModel):
    """U-Net 3+: every decoder stage gathers all encoder scales at and above it and all
    deeper decoder stages (full-scale skip connections, Sec. 2.1), with full-scale deep
    supervision: a 3x3 head on each decoder stage and on the deepest encoder feature, each
    upsampled to the input (Sec. 2.2). Training averages the heads' losses.

    The paper's classification-guided module (Sec. 2.3) filters false positives in binary
    organ segmentation; for multi-class scenes it is not used here.

    With the ``plain`` encoder at ``base_channels=64`` and 2 classes: 26.99M parameters, the
    paper's 26.97M (our convolutions drop the bias that batch norm makes redundant, and the
    deep-supervision heads are counted).

    Args:
        encoder: any encoder.
        num_classes: output classes.
        cat_channels: width each scale is squeezed to before concatenation (64 in the paper).
        deep_supervision: add the side heads used for training.
    """

    arch = "unet3p"

    def __init__(self, encoder: Encoder, num_classes: int, cat_channels: int = 64, deep_supervision: bool = True):
        super().__init__(encoder, num_classes)
        num_levels = len(encoder.out_channels)
        up_channels = cat_channels * num_levels
        stages = []
        for level in reversed(range(num_levels - 1)):
            deeper_channels = [up_channels] * (num_levels - 2 - level) + [encoder.out_channels[-1]]
            stages.append(FullScaleDecoderStage(level, encoder, deeper_channels, cat_channels))
        self.stages = nn.ModuleList(stages)  # deepest decoder stage first
        self.head = nn.Conv2d(up_channels, num_classes, 3, padding=1)
        self.deep_supervision = deep_supervision
        if deep_supervision:
            side_channels = [up_channels] * (num_levels - 2) + [encoder.out_channels[-1]]
            self.side_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in side_channels)

    def segment(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        decoded = [features[-1]]  # deepest first: X_De^N is X_En^N
        for stage in self.stages:
            decoded.insert(0, stage(features[: stage.level + 1], decoded))
        outputs = [upsample_to(self.head(decoded[0]), x.shape[-2:])]
        if self.training and self.deep_supervision:
            outputs += [upsample_to(head(f), x.shape[-2:]) for head, f in zip(self.side_heads, decoded[1:])]
        return outputs
