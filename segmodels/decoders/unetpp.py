"""U-Net++'s nested decoder (Zhou, Siddiquee, Tajbakhsh & Liang, DLMIA 2018; IEEE TMI 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import DoubleConv, upsample_to
from .base import Decoder

UPSAMPLING_MODES = ("transposed", "bilinear")


class UNetPlusPlusDecoder(Decoder):
    """Nested decoder nodes X(i, j) joined by dense skip connections (TMI 2019, Sec. III-A, Eq. 1):

        x(i, j) = H([x(i, 0), ..., x(i, j - 1), U(x(i + 1, j - 1))])   for j > 0,

    where x(i, 0) are the encoder features, [.] is concatenation, H a double 3x3 conv-BN-ReLU
    block at level i's width and U the upsampling of the node below.

    ``upsampling="transposed"`` is the official implementation's U: a 2x2 stride-2 transposed
    convolution to the node's own width. ``"bilinear"`` interpolates the node below at its
    full width (no learned upsampling; the node's input is wider).

    The decoder adapts to the number of features it gets: with the first ``d + 1`` encoder
    features it computes only the nodes with i + j <= d and returns X(0, d) first (the
    pruned network of Sec. III-C), then X(0, 1)..X(0, d - 1) for deep supervision.

    Args:
        encoder_channels: width of each encoder feature, shallow to deep; each feature must
            have half the resolution of the one before.
        decoder_channels: width of the nodes of each level but the deepest, shallow to deep.
        upsampling: ``transposed`` (official) or ``bilinear``.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], upsampling: str = "transposed"):
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be 'transposed' or 'bilinear', got {upsampling!r}")
        max_depth = len(encoder_channels) - 1
        if len(decoder_channels) != max_depth:
            raise ValueError(f"decoder_channels needs {max_depth} widths, got {len(decoder_channels)}")
        widths = list(decoder_channels) + [encoder_channels[-1]]
        self.upsampling = upsampling
        self.nodes = nn.ModuleDict()
        self.up = nn.ModuleDict()
        for j in range(1, max_depth + 1):
            for i in range(max_depth + 1 - j):
                name = f"x{i}_{j}"
                below = encoder_channels[i + 1] if j == 1 else widths[i + 1]
                if upsampling == "transposed":
                    self.up[name] = nn.ConvTranspose2d(below, widths[i], kernel_size=2, stride=2)
                    below = widths[i]
                self.nodes[name] = DoubleConv(encoder_channels[i] + widths[i] * (j - 1) + below, widths[i])
        self.max_depth = max_depth
        self.out_channels = {f"x0_{j}": widths[0] for j in (max_depth, *range(1, max_depth))}

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        depth = len(features) - 1
        grid = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                name = f"x{i}_{j}"
                below = grid[i + 1, j - 1]
                below = self.up[name](below) if self.upsampling == "transposed" else upsample_to(below, grid[i, 0].shape[-2:])
                grid[i, j] = self.nodes[name](torch.cat([*(grid[i, k] for k in range(j)), below], dim=1))
        return {f"x0_{j}": grid[0, j] for j in (depth, *range(1, depth))}
