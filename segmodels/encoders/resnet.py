"""torchvision ResNets (He et al. 2016) as encoders. Architecture always available;
ImageNet weights only from a local file (never downloaded at run time)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from .base import Encoder, PretrainedWeightsMissing
from .registry import register_encoder

RESNET_DEPTHS = (18, 34, 50, 101)
BOTTLENECK_DEPTHS = (50, 101)
DILATED_STAGES = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}


def _default_weights_file(depth: int) -> Path:
    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


class ResNetEncoder(Encoder):
    """Features after the stem (stride 2) and after layer1..layer4 (strides 4..32).

    ``output_stride`` 16 dilates layer4 and 8 dilates layer3 and layer4 (DeepLabV3, Sec. 3.2),
    through torchvision's ``replace_stride_with_dilation``: the weights stay valid, the
    features keep their resolution and the receptive field grows. torchvision dilates only
    bottleneck blocks, so only ResNet-50 and ResNet-101 take an output stride.
    """

    def __init__(self, depth: int = 50, pretrained: bool = True, output_stride: int | None = None, weights_path: str | None = None):
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"resnet depth must be one of {RESNET_DEPTHS}, got {depth}")
        output_stride = output_stride or 32
        if output_stride not in DILATED_STAGES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if output_stride != 32 and depth not in BOTTLENECK_DEPTHS:
            raise ValueError(
                f"resnet{depth} cannot run at output_stride {output_stride}: torchvision dilates only bottleneck "
                f"blocks; use resnet{' or resnet'.join(map(str, BOTTLENECK_DEPTHS))}"
            )
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, replace_stride_with_dilation=DILATED_STAGES[output_stride])
        if pretrained:
            path = Path(weights_path) if weights_path else _default_weights_file(depth)
            if not path.is_file():
                raise PretrainedWeightsMissing(
                    f"ImageNet weights for resnet{depth} are not on this machine (looked for {path}). "
                    f"Download them once with torchvision (resnet{depth}(weights='IMAGENET1K_V1')) on a machine "
                    "with internet, pass weights_path=..., or use pretrained=False."
                )
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        expansion = 4 if depth in BOTTLENECK_DEPTHS else 1
        super().__init__([64] + [w * expansion for w in (64, 128, 256, 512)], [min(s, output_stride) for s in (2, 4, 8, 16, 32)])
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        features = [self.stem(x)]
        x = self.pool(features[0])
        for layer in self.layers[: (num_levels or len(self.reductions)) - 1]:
            x = layer(x)
            features.append(x)
        return features


def _resnet(depth: int) -> Callable[..., ResNetEncoder]:
    def build(pretrained: bool = True, output_stride: int | None = None, weights_path: str | None = None) -> ResNetEncoder:
        return ResNetEncoder(depth, pretrained, output_stride, weights_path)

    build.__qualname__ = build.__name__ = f"resnet{depth}"
    return build


resnet18 = register_encoder("resnet18", "ResNet-18")(_resnet(18))
resnet34 = register_encoder("resnet34", "ResNet-34")(_resnet(34))
resnet50 = register_encoder("resnet50", "ResNet-50")(_resnet(50))
resnet101 = register_encoder("resnet101", "ResNet-101")(_resnet(101))
