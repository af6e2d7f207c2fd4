"""The peer: segmentation_models_pytorch's U-Net, U-Net++ and DeepLabV3+ on timm's
``efficientnet_lite0`` (``tu-efficientnet_lite0``) with the same ImageNet weights as ours
(the installed package's, loaded into smp's timm encoder, never downloaded), wrapped to take
the same input as :class:`segmodels.models.SegmentationModel`: RGB in [0, 1], any size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cards import model_from_spec
from ..models.base import IMAGENET_MEAN, IMAGENET_STD

SMP_CLASSES = {"unet": "Unet", "unetpp": "UnetPlusPlus", "deeplabv3p": "DeepLabV3Plus"}
SMP_ENCODERS = {"efficientnet_lite0": "tu-efficientnet_lite0"}
SMP_DIVISOR = 32


def smp_module():
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise ImportError("the smp peers need segmentation_models_pytorch: pip install segmentation-models-pytorch") from error
    return segmentation_models_pytorch


def peer_spec(arch: str, encoder: str, num_classes: int, options: dict | None = None) -> dict:
    """What rebuilds a peer (a checkpoint's and card's ``spec``); ``arch`` names smp's class
    (``smp.Unet``) so that :func:`segmodels.cards.model_from_spec` refuses it."""
    if arch not in SMP_CLASSES:
        raise ValueError(f"smp has no peer for {arch!r}; peers: {', '.join(SMP_CLASSES)}")
    if encoder not in SMP_ENCODERS:
        raise ValueError(f"no smp encoder with our {encoder!r} weights; supported: {', '.join(SMP_ENCODERS)}")
    return {"peer": "segmentation_models_pytorch", "arch": f"smp.{SMP_CLASSES[arch]}", "peer_of": arch, "encoder": SMP_ENCODERS[encoder], "num_classes": num_classes,
            "options": dict(options or {})}


class SmpPeer(nn.Module):
    """An smp model behind our model's interface: ImageNet normalisation, zero padding
    (after normalisation) to a multiple of 32 on the right and bottom, logits cropped back;
    ``return_all`` gives the one output as a list (smp has no deep supervision)."""

    pruning_depths: tuple[int, ...] = ()

    def __init__(self, spec: dict):
        super().__init__()
        smp = smp_module()
        cls = getattr(smp, spec["arch"].removeprefix("smp."))
        self.model = cls(encoder_name=spec["encoder"], encoder_weights=None, classes=spec["num_classes"], **spec["options"])
        self.num_classes = spec["num_classes"]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load_encoder_state(self, our_encoder_state: dict[str, Tensor]) -> None:
        """Our EfficientNet-Lite0 encoder's state dict (timm's names under ``body.``) into
        smp's timm encoder, strictly: every tensor must fit."""
        self.model.encoder.model.load_state_dict({key.removeprefix("body."): value for key, value in our_encoder_state.items()})

    def forward(self, images: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
        height, width = images.shape[-2:]
        x = (images - self.mean) / self.std
        x = F.pad(x, (0, math.ceil(width / SMP_DIVISOR) * SMP_DIVISOR - width, 0, math.ceil(height / SMP_DIVISOR) * SMP_DIVISOR - height))
        logits = self.model(x)[..., :height, :width]
        return [logits] if return_all else logits


def build_from_spec(spec: dict) -> nn.Module:
    """Ours (:func:`segmodels.cards.model_from_spec`) or a peer, from a checkpoint's spec."""
    return SmpPeer(spec) if spec.get("peer") == "segmentation_models_pytorch" else model_from_spec(spec, pretrained=False)
