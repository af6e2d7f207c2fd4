"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import DoubleConv, SegmentationHead
from ..encoders import Encoder, PlainEncoder
from .base import SegmentationModel, upsample_to


class UpConv(nn.Module):
    """The paper's "up-convolution" (Sec. 2): upsampling followed by a 2x2 convolution that
    changes the width. ``bilinear`` interpolates then convolves; ``transposed`` learns both
    in one 2x2 stride-2 transposed convolution. Both have the same parameters."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "bilinear"):
        super().__init__()
        if mode not in ("bilinear", "transposed"):
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


class UNet(SegmentationModel):
    """U-Net: a contracting path (the encoder) and a symmetric expansive path that
    upsamples, concatenates the skip feature of the same scale and refines it (Sec. 2).

    With the ``plain`` encoder at ``base_channels=64`` and 2 classes this is the paper's
    network with padded convolutions and batch norm: 31.04M parameters (7.76M at base 32).

    Args:
        encoder: any :class:`~segmodels.encoders.Encoder`.
        num_classes: output classes.
        decoder_channels: width of each decoder stage, shallow to deep (one per skip).
            Defaults to the encoder's skip widths (the paper's symmetric design) for the plain
            encoder and to (32, 64, 128, 256) for pretrained encoders.
        upsampling: ``bilinear`` (default) or ``transposed``.
    """

    arch = "unet"

    def __init__(self, encoder: Encoder, num_classes: int, decoder_channels: Sequence[int] | None = None, upsampling: str = "bilinear"):
        super().__init__(encoder, num_classes)
        skips = encoder.out_channels[:-1]
        widths = list(decoder_channels or default_decoder_channels(encoder))
        if len(widths) != len(skips):
            raise ValueError(f"decoder_channels needs {len(skips)} widths, got {len(widths)}")
        in_widths = widths[1:] + [encoder.out_channels[-1]]
        self.blocks = nn.ModuleList(
            UNetDecoderBlock(in_w, skip_w, out_w, upsampling) for in_w, skip_w, out_w in zip(in_widths, skips, widths)
        )
        self.head = SegmentationHead(widths[0], num_classes)

    def segment(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(reversed(self.blocks), reversed(features[:-1])):
            y = block(y, skip)
        return [upsample_to(self.head(y), x.shape[-2:])]


def default_decoder_channels(encoder: Encoder) -> list[int]:
    """The paper's symmetric widths for the plain encoder, (32, 64, 128, 256) otherwise."""
    if isinstance(encoder, PlainEncoder):
        return list(encoder.out_channels[:-1])
    return [32 * 2**i for i in range(len(encoder.out_channels) - 1)]
