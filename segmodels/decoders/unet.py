"""U-Net's expansive path (Ronneberger, Fischer & Brox, MICCAI 2015, Sec. 2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import DoubleConv
from .base import Decoder

UPSAMPLING_MODES = ("bilinear", "transposed")


class UpConv(nn.Module):
    """The paper's "up-convolution" (Sec. 2): upsampling followed by a 2x2 convolution that
    changes the width. ``bilinear`` interpolates then convolves; ``transposed`` learns both
    in one 2x2 stride-2 transposed convolution. Both have the same parameters."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "bilinear"):
        super().__init__()
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be 'bilinear' or 'transposed', got {mode!r}")
        self.mode = mode
        conv = nn.ConvTranspose2d if mode == "transposed" else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size=2, stride=2 if mode == "transposed" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.conv(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # 2x2 kernel, output keeps the upsampled size


class UNetDecoderBlock(nn.Module):
    """Up-convolution of the deeper feature, concatenation with the skip feature of the same
    scale, then a double 3x3 convolution (Sec. 2, expansive path)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: str = "bilinear"):
        super().__init__()
        self.up = UpConv(in_channels, out_channels, upsampling)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetDecoder(Decoder):
    """U-Net's expansive path: from the deepest feature up, each step doubles the resolution
    with an up-convolution, concatenates the encoder feature of that scale (the skip
    connection) and refines with two 3x3 convolutions (Sec. 2, Fig. 1). One output,
    ``main``, at the resolution of the shallowest feature.

    Args:
        encoder_channels: width of each encoder feature, shallow to deep; each feature must
            have half the resolution of the one before.
        decoder_channels: width of each decoder stage, shallow to deep (one per skip).
        upsampling: ``bilinear`` or ``transposed`` (see :class:`UpConv`).
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], upsampling: str = "bilinear"):
        super().__init__()
        skips = list(encoder_channels[:-1])
        widths = list(decoder_channels)
        if len(widths) != len(skips):
            raise ValueError(f"decoder_channels needs {len(skips)} widths, got {len(widths)}")
        in_widths = widths[1:] + [encoder_channels[-1]]
        self.blocks = nn.ModuleList(UNetDecoderBlock(in_w, skip_w, out_w, upsampling) for in_w, skip_w, out_w in zip(in_widths, skips, widths))
        self.out_channels = {"main": widths[0]}

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        y = features[-1]
        for block, skip in zip(reversed(self.blocks), reversed(features[:-1])):
            y = block(y, skip)
        return {"main": y}
