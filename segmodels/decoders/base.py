"""The decoder interface :class:`~segmodels.models.SegmentationModel` relies on."""

from __future__ import annotations

import torch
from torch import nn


class Decoder(nn.Module):
    """Maps encoder features (shallow to deep) to named decoded features: the main one
    first, then those deep supervision puts a head on.

    Attributes:
        out_channels: {name: channels} of every output, in the order :meth:`forward` returns them.
    """

    out_channels: dict[str, int]

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
