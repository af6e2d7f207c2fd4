"""The one segmentation model: encoder -> decoder -> heads, with input normalisation,
padding to the encoder's stride and cropping back shared by every architecture."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import upsample_to
from ..decoders import Decoder
from ..encoders import Encoder, EncoderRequirements

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """Encoder, decoder and heads. Input: RGB float images in [0, 1], shape B x 3 x H x W,
    any H and W. Output: logits B x num_classes x H x W.

    The image is normalised with ImageNet statistics, zero-padded (after normalisation, i.e.
    with the mean colour) on the right and bottom to a multiple of :attr:`required_divisor`,
    encoded, decoded into named features, and each head's logits are bilinearly upsampled to
    the padded size and cropped back to H x W. At inference only the decoder's main output
    gets its head; in training mode the deep-supervision heads run too.

    Args:
        encoder: maps the image to multi-scale features.
        decoder: maps them to named features, the main one first.
        heads: {decoder output name: convolution giving one logit per class}; must include
            the main output.
        pruning_depths: depths ``d`` at which the model may run with only its first ``d + 1``
            encoder levels (``model(x, depth=d)``); empty when it cannot be pruned.
        depth: default pruning depth at inference (None: the whole network).

    Architectures (:mod:`segmodels.models.architectures`) are subclasses that declare
    :attr:`encoder_requirements` and build their decoder and heads.
    """

    encoder_requirements = EncoderRequirements()

    def __init__(self, encoder: Encoder, decoder: Decoder, heads: Mapping[str, nn.Conv2d], pruning_depths: tuple[int, ...] = (), depth: int | None = None):
        super().__init__()
        main = next(iter(decoder.out_channels))
        if main not in heads:
            raise ValueError(f"heads must include one for the decoder's main output {main!r}; got {', '.join(heads) or 'none'}")
        self.encoder = encoder
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)
        self.num_classes = heads[main].out_channels
        self.pruning_depths = tuple(pruning_depths)
        self.depth = depth
        self.check_depth(depth)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def required_divisor(self) -> int:
        """Inputs are padded to a multiple of this (the encoder's output stride)."""
        return self.encoder.output_stride

    @property
    def output_stride(self) -> int:
        """Stride of the encoder's deepest feature."""
        return self.encoder.output_stride

    def check_depth(self, depth: int | None) -> None:
        """Raise a ``ValueError`` unless ``depth`` is None or one of :attr:`pruning_depths`."""
        if depth is None or depth in self.pruning_depths:
            return
        if not self.pruning_depths:
            raise ValueError(f"{type(self).__name__} cannot be pruned (its pruning_depths is empty), so it takes no depth; got depth={depth}")
        raise ValueError(f"{type(self).__name__} depth must be one of {', '.join(map(str, self.pruning_depths))}; got depth={depth}")

    def forward_all(self, images: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Main logits followed, in training mode, by the deep-supervision logits; all B x K x H x W."""
        depth = self.depth if depth is None else depth
        self.check_depth(depth)
        height, width = images.shape[-2:]
        divisor = self.required_divisor
        pad_h = math.ceil(height / divisor) * divisor - height
        pad_w = math.ceil(width / divisor) * divisor - width
        x = (images - self.mean) / self.std
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        decoded = self.decoder(self.encoder(x, num_levels=None if depth is None else depth + 1))
        main, *others = decoded
        names = [main] + ([name for name in others if name in self.heads] if self.training else [])
        return [upsample_to(self.heads[name](decoded[name]), x.shape[-2:])[..., :height, :width] for name in names]

    def forward(self, images: torch.Tensor, depth: int | None = None, return_all: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Main logits (at pruning ``depth`` when given); with ``return_all`` the list of
        :meth:`forward_all` (for training)."""
        outputs = self.forward_all(images, depth)
        return outputs if return_all else outputs[0]

    def accept_legacy_keys(self, renames: Mapping[str, str]) -> None:
        """Let :meth:`load_state_dict` read checkpoints saved before the model was split into
        encoder, decoder and heads (the shipped weights): keys starting with an old prefix
        (e.g. ``blocks.``) are renamed to the new one (``decoder.blocks.``)."""

        def rename(module, state_dict, prefix, *_):
            for key in [k for k in state_dict if k.startswith(prefix)]:
                local = key[len(prefix):]
                old = next((old for old in renames if local.startswith(old)), None)
                if old is not None:
                    state_dict[prefix + renames[old] + local[len(old):]] = state_dict.pop(key)

        self.register_load_state_dict_pre_hook(rename)
