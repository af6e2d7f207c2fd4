"""The architecture facts the teaching text quotes, read from models or computed, never typed.

* :func:`model_facts`: what a model really runs (widths, encoder and decoder parameters, the
  factor its logits are upsampled by, its dilated convolutions), read from its modules;
  :func:`shipped_facts` does it for every model card of a set (the widths are the card's
  spec, the weights are not needed).
* :func:`encoder_level_flops`: the FLOPs of each encoder level (``count_flops`` of the
  encoder stopped after level n, minus after level n - 1) at an output stride, so a dilated
  level (output stride 16: the last one) can be compared with its strided self.
* :func:`valid_tap_share`: a k x k kernel at rate r on an h x w map, zero-padded to keep the
  size: the share of its taps that land on the map (DeepLabV3, Chen et al. 2017, Sec. 3.3,
  Fig. 4: as r approaches the map's size only the centre tap is left, a 1x1 convolution).
* :func:`gridding_coverage`: the share of the input positions, within the span of a stack of
  dilated kernels, that reach its output (Wang et al., "Understanding Convolution for Semantic
  Segmentation", WACV 2018, Sec. 3.2: stacked convolutions of one rate r > 1 sample a
  checkerboard, 1 / r^2 of the positions).
* :func:`separable_cost`: multiply-adds per output pixel of a dense k x k convolution,
  ``k^2 C_in C_out``, against a depthwise k x k plus pointwise 1x1, ``k^2 C_in + C_in C_out``:
  the ratio is ``1 / C_out + 1 / k^2`` (MobileNets, Howard et al. 2017, Sec. 3.1; DeepLabV3+'s
  atrous separable convolution, Chen et al. ECCV 2018, Sec. 3.2, is the depthwise one dilated).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import zoo
from ..blocks import separable_cost_ratio
from ..cards import count_flops, model_from_spec
from ..encoders import ENCODERS, create_encoder
from ..models import ARCH_NAMES, SegmentationModel
from .network_graph import PROBE_SIDE
from .numbers import positive_int


@dataclass(frozen=True)
class ModelFacts:
    """What one model runs, read from its modules (:func:`model_facts`).

    ``widths`` holds the architecture's width options as built (U-Net / U-Net++:
    ``decoder_channels``; U-Net 3+: ``cat_channels``, ``levels`` and ``fused_channels``;
    DeepLabV3+: ``aspp_channels`` and ``low_level_channels``); ``upsampling`` the decoder's
    upsampling mode where it has one; ``logit_upsampling`` the factor the main head's logits
    are upsampled by to the (padded) input; ``encoder_convs`` (name, kernel, dilation) of
    every spatial (k > 1) convolution of the encoder, in order; ``decoder_depthwise_convs``
    the number of depthwise convolutions (one filter per channel) in the decoder."""

    arch: str
    encoder: str
    encoder_parameters: int
    decoder_parameters: int
    head_parameters: int
    output_stride: int
    widths: dict[str, Any]
    upsampling: str | None
    logit_upsampling: int
    encoder_convs: tuple[tuple[str, int, int], ...]
    decoder_depthwise_convs: int
    card: dict | None = None

    @property
    def dilated_convs(self) -> tuple[tuple[str, int, int], ...]:
        """The encoder's spatial convolutions with a dilation above 1, in order."""
        return tuple(conv for conv in self.encoder_convs if conv[2] > 1)

    def before_dilated(self) -> tuple[str, int, int] | None:
        """The encoder's last spatial convolution before its first dilated one."""
        first = next((i for i, conv in enumerate(self.encoder_convs) if conv[2] > 1), None)
        return self.encoder_convs[first - 1] if first else None

    @property
    def encoder_display(self) -> str:
        return ENCODERS.entry(self.encoder).display_name if self.encoder in ENCODERS else self.encoder

    @property
    def arch_display(self) -> str:
        return ARCH_NAMES.get(self.arch, self.arch)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def _widths(arch: str, model: SegmentationModel) -> dict[str, Any]:
    decoder = model.decoder
    if arch == "unet":
        return {"decoder_channels": [_first_conv(block.conv[-1]).out_channels for block in decoder.blocks]}
    if arch == "unetpp":
        return {"decoder_channels": [_first_conv(decoder.nodes[f"x{i}_1"][-1]).out_channels for i in range(decoder.max_depth)]}
    if arch == "unet3p":
        levels = len(model.encoder.out_channels)
        fused = next(iter(decoder.out_channels.values()))
        return {"cat_channels": fused // levels, "levels": levels, "fused_channels": fused}
    if arch == "deeplabv3p":
        return {"aspp_channels": decoder.out_channels["main"], "low_level_channels": _first_conv(decoder.low_level_project).out_channels}
    return {}


def _upsampling(decoder: nn.Module) -> str | None:
    """The decoder's upsampling mode (U-Net, U-Net++), None for a decoder without one."""
    if hasattr(decoder, "upsampling"):
        return decoder.upsampling
    blocks = getattr(decoder, "blocks", None)
    return blocks[0].up.mode if blocks else None


def _logit_upsampling(model: SegmentationModel) -> int:
    """Input side over the side of the feature the main head reads, on a blank probe."""
    sizes: list[int] = []
    main = next(iter(model.decoder.out_channels))
    hook = model.heads[main].register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].shape[-1]))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE, device=next(model.parameters()).device))
    finally:
        hook.remove()
        model.train(was_training)
    return PROBE_SIDE // sizes[0]


def model_facts(model: SegmentationModel, arch: str, encoder: str, card: dict | None = None) -> ModelFacts:
    """:class:`ModelFacts` of ``model`` (an ``arch`` on ``encoder``), read from its modules."""
    if not isinstance(model, SegmentationModel):
        raise ValueError(f"model must be a segmodels SegmentationModel, got {type(model).__name__}")
    main = next(iter(model.decoder.out_channels))
    spatial = tuple((name, m.kernel_size[0], m.dilation[0]) for name, m in model.encoder.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    depthwise = sum(1 for m in model.decoder.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels)
    return ModelFacts(
        arch=arch,
        encoder=encoder,
        encoder_parameters=_count(model.encoder),
        decoder_parameters=_count(model.decoder),
        head_parameters=_count(model.heads[main]),
        output_stride=int(model.output_stride),
        widths=_widths(arch, model),
        upsampling=_upsampling(model.decoder),
        logit_upsampling=_logit_upsampling(model),
        encoder_convs=spatial,
        decoder_depthwise_convs=depthwise,
        card=card,
    )


@functools.lru_cache(maxsize=8)
def _shipped_facts(set_name: str, weights_dir: str, stamps: tuple) -> dict[str, ModelFacts]:
    facts = {}
    for name in zoo.list_models(Path(weights_dir)):
        card_set, arch = name.split("/", 1)
        if card_set != set_name:
            continue
        try:
            card = zoo.load_card(name, Path(weights_dir))
            with torch.random.fork_rng(devices=[]):
                model = model_from_spec(card, pretrained=False)
        except (zoo.WeightsError, KeyError, TypeError, ValueError):
            continue
        facts[arch] = model_facts(model, card["arch"], card["encoder"], card)
    return facts


def shipped_facts(set_name: str, weights_dir: str | Path = zoo.WEIGHTS_DIR) -> dict[str, ModelFacts]:
    """:func:`model_facts` of each model card of ``set_name`` (arch -> facts; an unreadable
    card is left out), built from the card's spec without its weights; cached per file stamp."""
    weights_dir = Path(weights_dir)
    stamps = tuple(zoo.file_stamp(name, weights_dir) for name in zoo.list_models(weights_dir) if name.startswith(f"{set_name}/"))
    return _shipped_facts(set_name, str(weights_dir), stamps)


@functools.lru_cache(maxsize=8)
def encoder_level_flops(encoder: str, image_size: tuple[int, int], output_stride: int | None = None) -> tuple[int, ...]:
    """FLOPs of each encoder level of ``encoder`` built at ``output_stride`` (None: its own),
    on an ``image_size`` image zero-padded to a multiple of the encoder's output stride (as
    :class:`SegmentationModel` pads it). Random weights: FLOPs do not depend on them."""
    with torch.random.fork_rng(devices=[]):
        body = create_encoder(encoder, output_stride=output_stride, pretrained=False)
    divisor = body.output_stride
    padded = tuple(math.ceil(side / divisor) * divisor for side in image_size)
    cumulative = [count_flops(body, padded, num_levels=n) for n in range(1, len(body.reductions) + 1)]
    return tuple(b - a for a, b in zip([0, *cumulative], cumulative))


def encoder_reductions(encoder: str, output_stride: int | None = None) -> tuple[int, ...]:
    """The stride of each feature of ``encoder`` built at ``output_stride``."""
    with torch.random.fork_rng(devices=[]):
        return tuple(create_encoder(encoder, output_stride=output_stride, pretrained=False).reductions)


def valid_tap_share(height: int, width: int, rate: int, kernel: int = 3) -> dict[str, float]:
    """A ``kernel`` x ``kernel`` convolution with dilation ``rate`` over a zero-padded
    ``height`` x ``width`` map: the mean share of its taps that land on the map (the rest read
    padding), and the share of output positions where only the centre tap does."""
    for name, value in (("height", height), ("width", width), ("rate", rate), ("kernel", kernel)):
        positive_int(name, value)
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd, got {kernel}")
    offsets = (np.arange(kernel) - kernel // 2) * rate

    def valid_counts(side: int) -> np.ndarray:
        positions = np.arange(side)[:, None] + offsets[None, :]
        return ((positions >= 0) & (positions < side)).sum(axis=1)

    rows, cols = valid_counts(height), valid_counts(width)
    valid = float(np.outer(rows, cols).mean()) / kernel**2
    centre_only = float(np.outer(rows == 1, cols == 1).mean())
    return {"valid_share": valid, "padding_share": 1.0 - valid, "centre_only_share": centre_only}


def gridding_coverage(layers: Sequence[tuple[int, int]]) -> float:
    """Stacked square convolutions, each (kernel, dilation), stride 1: the share of the input
    positions inside the stack's span that reach the output through some path."""
    reached = {0}
    for kernel, dilation in layers:
        positive_int("kernel", kernel)
        positive_int("dilation", dilation)
        taps = [(t - kernel // 2) * dilation for t in range(kernel)]
        reached = {r + t for r in reached for t in taps}
    if not reached:
        raise ValueError("layers must hold at least one (kernel, dilation)")
    span = max(reached) - min(reached) + 1
    return (len(reached) / span) ** 2


def separable_cost(in_channels: int, out_channels: int, kernel: int = 3) -> dict[str, float]:
    """Multiply-adds per output pixel of a dense ``kernel`` x ``kernel`` convolution and of a
    depthwise + pointwise one, their ratio and the closed form ``1 / C_out + 1 / k^2``."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel", kernel)):
        positive_int(name, value)
    dense = kernel**2 * in_channels * out_channels
    separable = kernel**2 * in_channels + in_channels * out_channels
    return {"dense": dense, "separable": separable, "ratio": separable / dense, "closed_form": separable_cost_ratio(out_channels, kernel)}


__all__ = [
    "ModelFacts",
    "encoder_level_flops",
    "encoder_reductions",
    "gridding_coverage",
    "model_facts",
    "separable_cost",
    "shipped_facts",
    "valid_tap_share",
]
