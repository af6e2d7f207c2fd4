"""The encoder interface every decoder relies on."""

from __future__ import annotations

import torch
from torch import nn


class PretrainedWeightsMissing(FileNotFoundError):
    """Raised when pretrained weights are asked for but are not on this machine."""


class Encoder(nn.Module):
    """Maps B x 3 x H x W to a list of features, shallow to deep.

    Attributes:
        out_channels: channels of each feature.
        reductions: stride of each feature with respect to the input (1, 2, 4, ...).
    """

    out_channels: list[int]
    reductions: list[int]

    @property
    def total_stride(self) -> int:
        """Input sizes must be multiples of this (models pad to it)."""
        return max(self.reductions)

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        """The first ``num_levels`` features (all when None); deeper stages are not run."""
        raise NotImplementedError


def dilation_schedule(num_downsamplings: int, output_stride: int | None) -> list[int]:
    """For each of ``num_downsamplings`` stride-2 steps, the dilation its stage should use:
    1 while the stride stays within ``output_stride``, then 2, 4, ... (DeepLabV3, Sec. 3.2)."""
    dilations, stride, dilation = [], 1, 1
    for _ in range(num_downsamplings):
        if output_stride is not None and stride * 2 > output_stride:
            dilation *= 2
        else:
            stride *= 2
        dilations.append(dilation)
    return dilations
