"""Exact rewrites of a model for inference: the same weights and the same function, computed
with fewer passes over memory. :func:`rewrite_for_inference` applies them to a model that
:func:`segmodels.runtime.prepare_for_inference` prepares.

* **Up-convolution without a padded copy** (:class:`CroppedUpConv`, U-Net's bilinear
  :class:`~segmodels.decoders.unet.UpConv`). The 2x2 convolution after the 2x upsampling
  keeps the size by zero-padding one row and column on the bottom and right,

      y[p] = w0 u[p] + w1 u[p + 1],   u[2H] = 0,

  and ``F.pad`` writes a whole new, zero-filled copy of the upsampled map u for it. A
  convolution with one pixel of zero padding on every side gives
  z[q] = w0 u[q - 1] + w1 u[q] for q = 0..2H, so y[p] = z[p + 1]: the same sums of the
  same products, read as the view ``z[..., 1:, 1:]``, which the concatenation with the skip
  feature copies anyway.
* **Logits upsampled in float32** (:class:`Float32Logits`, every head of a
  :class:`~segmodels.models.SegmentationModel`). Under bfloat16 autocast a head's logits
  are bfloat16, and the bilinear upsampling to the input size then runs PyTorch's
  channels_last kernel on 11 bfloat16 channels, slower than in float32
  (``scripts/profile_peer.py`` prints ``aten::upsample_bilinear2d`` per precision). The head
  returns float32: in float32 nothing changes; in bfloat16 the upsampled logits skip one
  rounding to bfloat16 before the argmax.

A 2x2 stride-2 transposed convolution equals a 1x1 convolution to 4 C_out channels followed
by ``pixel_shuffle(2)``; it is *not* applied: oneDNN's transposed convolution was as fast or
faster (``python scripts/profile_peer.py --arch unetpp --transposed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SegmentationHead
from .decoders.unet import UpConv


class CroppedUpConv(UpConv):
    """:class:`~segmodels.decoders.unet.UpConv` in ``bilinear`` mode computed without the
    padded copy (see the module docstring): the 2x2 convolution pads one pixel on every side
    and its output is cropped by one row and column at the top and left."""

    def __init__(self, up: UpConv):
        if up.mode != "bilinear":
            raise ValueError(f"CroppedUpConv rewrites the bilinear up-convolution, not {up.mode!r}")
        super().__init__(up.conv.in_channels, up.conv.out_channels, "bilinear")
        self.conv.padding = (1, 1)
        self.conv.load_state_dict(up.conv.state_dict())
        self.to(up.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)[..., 1:, 1:]


class Float32Logits(SegmentationHead):
    """A :class:`~segmodels.blocks.SegmentationHead` whose logits leave it in float32, so the
    upsampling to the input size runs in float32 under autocast (see the module docstring)."""

    def __init__(self, head: SegmentationHead):
        super().__init__(head.in_channels, head.out_channels, head.kernel_size[0])
        self.load_state_dict(head.state_dict())
        self.to(head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).float()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def rewrite_for_inference(model: nn.Module) -> nn.Module:
    """Apply every rewrite of the module docstring to ``model`` in place and return it:
    bilinear up-convolutions become :class:`CroppedUpConv`, segmentation heads
    :class:`Float32Logits`. Any other model (a :mod:`segmodels.peers` one) is left as it is."""
    for name, module in list(model.named_modules()):
        if type(module) is UpConv and module.mode == "bilinear":
            _replace(model, name, CroppedUpConv(module))
        elif type(module) is SegmentationHead:
            _replace(model, name, Float32Logits(module))
    return model


__all__ = ["CroppedUpConv", "Float32Logits", "rewrite_for_inference"]
