"""U-Net++ (Zhou, Siddiquee, Tajbakhsh & Liang, DLMIA 2018; IEEE TMI 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import DoubleConv, SegmentationHead
from ..encoders import Encoder
from .base import SegmentationModel, upsample_to
from .unet import default_decoder_channels


class UNetPlusPlus(SegmentationModel):
    """U-Net++: nested decoder nodes X(i, j) joined by dense skip connections (TMI Sec. III-A).

    Node X(i, j), j > 0, convolves the concatenation of every earlier node on its level,
    X(i, 0..j-1), with the upsampled node below, X(i+1, j-1). X(i, 0) are encoder features.
    A 1x1 head on each of X(0, 1)..X(0, 4) gives deep supervision (Sec. III-B); training
    averages their losses.

    Pruning (Sec. III-C): at depth ``d`` in 1..4 the output is X(0, d), and only the nodes it
    needs are computed (those with i + j <= d, and the encoder up to level d), so a pruned
    network is genuinely smaller and faster. Choose it per call (``model(x, depth=2)``) or
    set :attr:`depth`.

    With the ``plain`` encoder at ``base_channels=32`` and 2 classes it has 9.16M parameters
    against the 9.04M of the paper's Table 3 (1.3% more): the paper does not give every layer
    width, and here each node is a full double 3x3 conv block at its level's width.

    Args:
        encoder: any encoder with five feature levels.
        num_classes: output classes.
        decoder_channels: width of the nodes of each level, shallow to deep (defaults as U-Net).
        deep_supervision: add heads on X(0, 1)..X(0, 3) as well as X(0, 4).
        depth: default pruning depth used at inference.
    """

    arch = "unetpp"

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        decoder_channels: Sequence[int] | None = None,
        deep_supervision: bool = True,
        depth: int | None = None,
    ):
        super().__init__(encoder, num_classes)
        self.max_depth = len(encoder.out_channels) - 1
        widths = list(decoder_channels or default_decoder_channels(encoder)) + [encoder.out_channels[-1]]
        enc = encoder.out_channels
        self.nodes = nn.ModuleDict()
        for j in range(1, self.max_depth + 1):
            for i in range(self.max_depth + 1 - j):
                in_channels = enc[i] + widths[i] * (j - 1) + (enc[i + 1] if j == 1 else widths[i + 1])
                self.nodes[f"x{i}_{j}"] = DoubleConv(in_channels, widths[i])
        self.deep_supervision = deep_supervision
        head_depths = range(1, self.max_depth + 1) if deep_supervision else [self.max_depth]
        self.heads = nn.ModuleDict({f"x0_{j}": SegmentationHead(widths[0], num_classes) for j in head_depths})
        self.depth = depth or self.max_depth

    @property
    def pruning_depths(self) -> tuple[int, ...]:
        return tuple(range(1, self.max_depth + 1))

    def segment(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        depth = depth or self.depth
        if not 1 <= depth <= self.max_depth:
            raise ValueError(f"U-Net++ depth must be in 1..{self.max_depth}, got {depth}")
        if f"x0_{depth}" not in self.heads:
            raise ValueError(f"depth {depth} has no head: this model was built without deep supervision")
        features = self.encoder(x, num_levels=depth + 1)
        grid = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                below = upsample_to(grid[i + 1, j - 1], grid[i, 0].shape[-2:])
                same_level = [grid[i, k] for k in range(j)]
                grid[i, j] = self.nodes[f"x{i}_{j}"](torch.cat([*same_level, below], dim=1))
        outputs = [upsample_to(self.heads[f"x0_{depth}"](grid[0, depth]), x.shape[-2:])]
        if self.training and self.deep_supervision:
            outputs += [upsample_to(self.heads[f"x0_{j}"](grid[0, j]), x.shape[-2:]) for j in range(1, depth)]
        return outputs
