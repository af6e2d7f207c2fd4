"""U-Net 3+'s full-scale decoder (Huang et al., ICASSP 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import ConvBNReLU, upsample_to
from .base import Decoder


class FullScaleDecoderStage(nn.Module):
    """One decoder stage X_De^i with full-scale skip connections (Sec. 2.1, Eq. 1).

    Shallower encoder features are max-pooled down to this scale, the same-scale encoder
    feature is used as is, deeper decoder stages (and the deepest encoder feature) are
    bilinearly upsampled; each is squeezed by a 3x3 conv to ``cat_channels``, the results are
    concatenated and fused by one more 3x3 conv of ``cat_channels * num_levels`` channels.
    """

    def __init__(self, level: int, encoder_channels: Sequence[int], encoder_reductions: Sequence[int], deeper_channels: list[int], cat_channels: int):
        super().__init__()
        self.level = level
        reduction = encoder_reductions[level]
        self.shallower = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool2d(reduction // encoder_reductions[k], ceil_mode=True) if reduction > encoder_reductions[k] else nn.Identity(),
                ConvBNReLU(encoder_channels[k], cat_channels),
            )
            for k in range(level + 1)
        )
        self.deeper = nn.ModuleList(ConvBNReLU(c, cat_channels) for c in deeper_channels)
        self.fuse = ConvBNReLU(cat_channels * (len(self.shallower) + len(self.deeper)), cat_channels * len(encoder_channels))

    def forward(self, encoder_features: list[torch.Tensor], deeper: list[torch.Tensor]) -> torch.Tensor:
        size = encoder_features[self.level].shape[-2:]
        parts = [squeeze(f) for squeeze, f in zip(self.shallower, encoder_features)]
        parts += [squeeze(upsample_to(f, size)) for squeeze, f in zip(self.deeper, deeper)]
        return self.fuse(torch.cat(parts, dim=1))


class UNet3PlusDecoder(Decoder):
    """Full-scale skip connections (Sec. 2.1, Eq. 1): with N encoder levels,

        X_De^i = X_En^i                                                        for i = N,
        X_De^i = H([C(D(X_En^k)) for k < i, C(X_En^i), C(U(X_De^k)) for k > i])  for i < N,

    where D max-pools down, U upsamples bilinearly, C is a 3x3 conv to ``cat_channels``
    and H a 3x3 conv-BN-ReLU of ``cat_channels * N`` channels (320 in the paper).
    Outputs ``x_de1`` (the main one) .. ``x_deN``, each of which full-scale deep
    supervision (Sec. 2.2) puts a head on.

    Args:
        encoder_channels: width of each encoder feature, shallow to deep.
        encoder_reductions: stride of each encoder feature.
        cat_channels: width each scale is squeezed to before concatenation (64 in the paper).
    """

    def __init__(self, encoder_channels: Sequence[int], encoder_reductions: Sequence[int], cat_channels: int = 64):
        super().__init__()
        num_levels = len(encoder_channels)
        up_channels = cat_channels * num_levels
        stages = []
        for level in reversed(range(num_levels - 1)):
            deeper_channels = [up_channels] * (num_levels - 2 - level) + [encoder_channels[-1]]
            stages.append(FullScaleDecoderStage(level, encoder_channels, encoder_reductions, deeper_channels, cat_channels))
        self.stages = nn.ModuleList(stages)  # deepest decoder stage first
        self.out_channels = {f"x_de{i}": up_channels for i in range(1, num_levels)} | {f"x_de{num_levels}": encoder_channels[-1]}

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        decoded = [features[-1]]  # deepest first: X_De^N is X_En^N
        for stage in self.stages:
            decoded.insert(0, stage(features[: stage.level + 1], decoded))
        return {f"x_de{i}": feature for i, feature in enumerate(decoded, start=1)}
