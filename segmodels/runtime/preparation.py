"""Preparing a trained model for inference: an eval-mode copy with its batch norms folded
into the convolutions and, optionally, its weights in channels_last.

* **BatchNorm folding.** In eval mode a batch norm after a convolution is an affine map per
  channel, ``y = gamma (z - mu) / sqrt(var + eps) + beta`` with ``z = W x + b``, so it folds
  into the convolution: ``W' = W gamma / sqrt(var + eps)``, ``b' = (b - mu) gamma /
  sqrt(var + eps) + beta`` (``torch.nn.utils.fuse_conv_bn_eval``). One pass over memory per
  layer is saved; the outputs are unchanged up to float rounding, which is checked.
* **channels_last** memory format, where it measurably wins (``python -m segmodels bench
  --models camvid/unet --fold-bn`` with and without ``--channels-last`` measures it on the
  machine at hand)."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ..rewrites import rewrite_for_inference

log = logging.getLogger(__name__)

FOLD_TOLERANCE = 1e-3  # largest |folded - original| logit difference, relative to the logits' range


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    return {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor, **forward_options) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the batch norm's input is exactly the convolution's output,
    found by running ``example`` once with hooks."""
    produced: list[tuple[torch.Tensor, nn.Conv2d]] = []
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(module, _inputs, output):
        produced.append((output, module))

    def before_bn(module, inputs):
        conv = next((c for out, c in produced if out is inputs[0]), None)
        if conv is not None and all(bn is not module for _, bn in pairs):
            pairs.append((conv, module))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            model(example, **forward_options)
    finally:
        for hook in hooks:
            hook.remove()
    convs = [conv for conv, _ in pairs]
    return [(conv, bn) for conv, bn in pairs if convs.count(conv) == 1]


def _without_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a batch norm once folded: nothing, or the activation that timm's
    ``BatchNormAct2d`` applies after normalising."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))


def fold_batchnorm(model: nn.Module, example: torch.Tensor, **forward_options) -> int:
    """Fold, in place, every eval-mode batch norm that directly follows a convolution into
    that convolution (see the module docstring); returns how many were folded."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (training batch norm uses batch statistics)")
    pairs = _conv_bn_pairs(model, example, **forward_options)
    parents = _parents(model)
    for conv, bn in pairs:
        conv_parent, conv_name = parents[id(conv)]
        bn_parent, bn_name = parents[id(bn)]
        setattr(conv_parent, conv_name, torch.nn.utils.fuse_conv_bn_eval(conv, bn))
        setattr(bn_parent, bn_name, _without_norm(bn))
    return len(pairs)


def prepare_for_inference(model: nn.Module, channels_last: bool = False, example_size: tuple[int, int] = (64, 64)) -> nn.Module:
    """An eval-mode copy of ``model`` (a :class:`SegmentationModel`, or any model of B x 3 x H
    x W images such as a :mod:`segmodels.peers` one) with its batch norms folded (kept
    unfolded if the outputs would change by more than :data:`FOLD_TOLERANCE`), the exact
    rewrites of :mod:`segmodels.rewrites` applied and, optionally, its weights in
    channels_last. The original is left as it is."""
    model = model.eval()
    device = next(model.parameters()).device
    example = torch.rand(1, 3, *example_size, generator=torch.Generator().manual_seed(0)).to(device)
    options = {"depth": max(model.pruning_depths)} if getattr(model, "pruning_depths", ()) else {}
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded, example, **options)
    with torch.inference_mode():
        reference = model(example, **options)
        difference = (folded(example, **options) - reference).abs().max().item()
    scale = max(1.0, (reference.max() - reference.min()).item())
    if difference > FOLD_TOLERANCE * scale:
        log.warning("batch-norm folding changed the logits by %.2g; keeping the unfolded model", difference)
        folded = copy.deepcopy(model)
    else:
        log.debug("folded %d batch norms (largest logit change %.2g)", count, difference)
    folded = rewrite_for_inference(folded)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded
