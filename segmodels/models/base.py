"""What every segmentation model shares: input normalisation, padding to the network's
total stride, cropping back, and the deep-supervision interface used by training."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders import Encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """Encoder + decoder. Input: RGB float images in [0, 1], shape B x 3 x H x W, any H and W.
    Output: logits B x num_classes x H x W.

    The image is normalised with ImageNet statistics inside the model, zero-padded (after
    normalisation, i.e. with the mean colour) on the right and bottom to a multiple of
    :attr:`required_divisor`, and the logits are cropped back to H x W.

    Subclasses implement :meth:`segment`, which maps the padded, normalised image to a list
    of logits at that size: the main output first, then any deep-supervision outputs.
    """

    arch: str = ""
    pruning_depths: tuple[int, ...] = ()  # depths ``forward(x, depth=d)`` accepts; empty: cannot be pruned

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def required_divisor(self) -> int:
        return self.encoder.total_stride

    def segment(self, x: torch.Tensor, **options) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_all(self, images: torch.Tensor, **options) -> list[torch.Tensor]:
        """Main logits followed by the deep-supervision logits, all B x K x H x W."""
        height, width = images.shape[-2:]
        divisor = self.required_divisor
        pad_h = math.ceil(height / divisor) * divisor - height
        pad_w = math.ceil(width / divisor) * divisor - width
        x = (images - self.mean) / self.std
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return [out[..., :height, :width] for out in self.segment(x, **options)]

    def forward(self, images: torch.Tensor, return_all: bool = False, **options) -> torch.Tensor | list[torch.Tensor]:
        """Main logits; with ``return_all`` the list of :meth:`forward_all` (for training)."""
        outputs = self.forward_all(images, **options)
        return outputs if return_all else outputs[0]


def upsample_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear interpolation to ``size`` (no-op when it already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
