"""The encoder interface every decoder relies on, and what an architecture may require of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


class PretrainedWeightsMissing(FileNotFoundError):
    """Raised when pretrained weights are asked for but are not on this machine."""


class Encoder(nn.Module):
    """Maps B x 3 x H x W to a list of features, shallow to deep.

    Args:
        out_channels: channels of each feature.
        reductions: stride of each feature with respect to the input (1, 2, 4, ...).
    """

    def __init__(self, out_channels: Sequence[int], reductions: Sequence[int]):
        super().__init__()
        if len(out_channels) != len(reductions):
            raise ValueError(f"an encoder needs one reduction per feature: {len(out_channels)} channels, {len(reductions)} reductions")
        self.out_channels = list(out_channels)
        self.reductions = list(reductions)

    @property
    def output_stride(self) -> int:
        """Stride of the deepest feature; input sizes must be multiples of it (models pad to it)."""
        return max(self.reductions)

    @property
    def is_dilated(self) -> bool:
        """True when some stage keeps the resolution of the one before (atrous convolution
        instead of a stride)."""
        return any(deeper != 2 * shallower for shallower, deeper in zip(self.reductions, self.reductions[1:]))

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        """The first ``num_levels`` features (all when None); deeper stages are not run."""
        raise NotImplementedError


@dataclass(frozen=True)
class EncoderRequirements:
    """What an architecture needs from its encoder, declared once by the architecture and
    checked when a model is built.

    Attributes:
        output_strides: strides the deepest feature may have (empty: any); an architecture
            with these takes an ``output_stride`` option and its encoder must run at it.
        feature_strides: strides at which the encoder must provide a feature.
        undilated: every feature must have half the resolution of the one before.
    """

    output_strides: tuple[int, ...] = ()
    feature_strides: tuple[int, ...] = ()
    undilated: bool = False

    def check_output_stride(self, output_stride: int, model: str) -> None:
        if self.output_strides and output_stride not in self.output_strides:
            raise ValueError(f"{model} runs at output_stride {' or '.join(map(str, self.output_strides))}, got {output_stride}")

    def check(self, encoder: Encoder, model: str, output_stride: int | None = None) -> None:
        """Raise a ``ValueError`` saying what is wrong when ``encoder`` does not fit ``model``
        (at ``output_stride``, for architectures that take one)."""
        strides = ", ".join(map(str, encoder.reductions))
        if output_stride is not None:
            self.check_output_stride(output_stride, model)
            if encoder.output_stride != output_stride:
                raise ValueError(
                    f"{model} at output_stride {output_stride} needs an encoder whose deepest feature has stride "
                    f"{output_stride}; this encoder's features have strides {strides}. Build it with "
                    f"create_encoder(name, output_stride={output_stride}) (create_model does this)."
                )
        missing = [s for s in self.feature_strides if s not in encoder.reductions]
        if missing:
            raise ValueError(f"{model} needs encoder features at stride {', '.join(map(str, missing))}; this encoder's features have strides {strides}")
        if self.undilated and encoder.is_dilated:
            raise ValueError(
                f"{model} needs an undilated encoder (each feature half the resolution of the one before); this "
                f"encoder's features have strides {strides}. Build it without output_stride."
            )


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
