"""torchvision ResNets (He et al. 2016) as encoders. Architecture always available;
ImageNet weights only from a local file (never downloaded at run time)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .base import Encoder, PretrainedWeightsMissing, dilation_schedule

RESNET_DEPTHS = (18, 34, 50, 101)


def _default_weights_file(depth: int) -> Path:
    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def dilate_layer(layer: nn.Module, dilation: int) -> None:
    """Trade a ResNet stage's stride 2 for atrous 3x3 convolutions (DeepLabV3, Sec. 3.2):
    the weights stay valid, the feature map keeps its resolution and the receptive field grows."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


class ResNetEncoder(Encoder):
    """Features after the stem (stride 2) and after layer1..layer4 (strides 4..32).
    ``output_stride`` 16 dilates layer4, 8 dilates layer3 and layer4."""

    def __init__(self, depth: int = 50, pretrained: bool = True, output_stride: int | None = None, weights_path: str | None = None):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"resnet depth must be one of {RESNET_DEPTHS}, got {depth}")
        if output_stride not in (None, 32, 16, 8):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if pretrained:
            path = Path(weights_path) if weights_path else _default_weights_file(depth)
            if not path.is_file():
                raise PretrainedWeightsMissing(
                    f"ImageNet weights for resnet{depth} are not on this machine (looked for {path}). "
                    f"Download them once with torchvision (resnet{depth}(weights='IMAGENET1K_V1')) on a machine "
                    "with internet, pass weights_path=..., or use pretrained=False."
                )
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        for layer, dilation in zip(self.layers[1:], dilation_schedule(3, (output_stride or 32) // 4)):
            if dilation > 1:
                dilate_layer(layer, dilation)
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64] + [w * expansion for w in (64, 128, 256, 512)]
        strides = [2, 4, 8, 16, 32]
        self.reductions = [min(s, output_stride or 32) for s in strides]

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        features = [self.stem(x)]
        x = self.pool(features[0])
        for layer in self.layers[: (num_levels or len(self.reductions)) - 1]:
            x = layer(x)
            features.append(x)
        return features
