import numpy as np
import pytest
import torch
from torch import nn

import segmodels
from segmodels.blocks import ConvBNReLU
from segmodels.encoders import ENCODERS, Encoder, create_encoder, register_encoder
from segmodels.encoders.efficientnet import efficientnet_lite0_imagenet, efficientnet_lite0_weights_path, timm_names_from_efficientnet_pytorch
from segmodels.models.base import IMAGENET_MEAN, IMAGENET_STD
from segmodels.registry import Registry


def imagenet_batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def cat_photo() -> np.ndarray:
    """scikit-image's test photograph of a cat; only the tests that classify it skip without scikit-image."""
    return pytest.importorskip("skimage", reason="scikit-image ships the test photograph").data.chelsea()


def test_efficientnet_lite0_package_weights_classify_a_cat(cat_photo):
    model = efficientnet_lite0_imagenet(pretrained=True).eval()
    with torch.no_grad():
        top5 = model(imagenet_batch(cat_photo)).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5  # ImageNet 281-285: domestic cats


def test_random_weights_do_not_classify_the_cat(cat_photo):
    torch.manual_seed(0)
    model = efficientnet_lite0_imagenet(pretrained=False).eval()
    with torch.no_grad():
        probabilities = model(imagenet_batch(cat_photo)).softmax(1)[0]
    assert probabilities[281:286].sum() < 0.5


def test_package_weights_are_mapped_by_name_not_by_position():
    model = efficientnet_lite0_imagenet(pretrained=False)
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    in_order = timm_names_from_efficientnet_pytorch(source, model)
    shuffled = timm_names_from_efficientnet_pytorch(dict(reversed(source.items())), model)
    assert set(in_order) == set(model.state_dict())
    assert all(torch.equal(in_order[key], shuffled[key]) for key in in_order)
    assert torch.equal(in_order["blocks.1.0.conv_pw.weight"], source["_blocks.1._expand_conv.weight"])
    assert torch.equal(in_order["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])
    with pytest.raises(ValueError, match="_blocks.0._se_reduce.weight"):
        timm_names_from_efficientnet_pytorch({**source, "_blocks.0._se_reduce.weight": torch.zeros(1)}, model)


def test_encoder_features_equal_classifier_trunk():
    classifier = efficientnet_lite0_imagenet(pretrained=True).eval()
    encoder = create_encoder("efficientnet_lite0", pretrained=True).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        deepest = encoder(x)[-1]
        trunk = classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
    assert torch.allclose(deepest, trunk, atol=1e-5)
    assert encoder.out_channels == [16, 24, 40, 112, 320]
    assert encoder.reductions == [2, 4, 8, 16, 32]
    assert not any(key.startswith(("body.conv_head", "body.bn2", "body.classifier")) for key in encoder.state_dict())


@pytest.mark.parametrize("name", ["plain", "efficientnet_lite0", "resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [None, 16, 8])
def test_encoder_strides_and_partial_levels(name, output_stride):
    if name == "resnet18" and output_stride:
        with pytest.raises(ValueError, match="resnet18 cannot run at output_stride .* use resnet50 or resnet101"):
            create_encoder(name, output_stride=output_stride, pretrained=False)
        return
    options = {"base_channels": 4} if name == "plain" else {}
    encoder = create_encoder(name, output_stride=output_stride, pretrained=False, **options).eval()
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, 64, 64))
        first_two = encoder(torch.rand(1, 3, 64, 64), num_levels=2)
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [64 // f.shape[-1] for f in features] == encoder.reductions
    assert len(first_two) == 2
    if output_stride:
        assert encoder.output_stride == min(output_stride, 16 if name == "plain" else 32)


def test_partial_levels_run_only_the_stages_they_need():
    encoder = create_encoder("efficientnet_lite0", pretrained=False).eval()
    ran = []
    hooks = [stage.register_forward_hook(lambda *_, index=index: ran.append(index)) for index, stage in enumerate(encoder.body.blocks)]
    with torch.no_grad():
        encoder(torch.rand(1, 3, 64, 64), num_levels=2)
    for hook in hooks:
        hook.remove()
    assert ran == [0, 1]


def test_resnet_is_dilated_by_torchvision():
    encoder = create_encoder("resnet50", output_stride=8, pretrained=False)
    layer3, layer4 = encoder.layers[2], encoder.layers[3]
    assert layer3[0].conv2.stride == (1, 1) and layer3[1].conv2.dilation == (2, 2)
    assert layer4[0].conv2.stride == (1, 1) and layer4[1].conv2.dilation == (4, 4)
    assert encoder.is_dilated and encoder.reductions == [2, 4, 8, 8, 8]


def test_encoder_options_are_checked_against_the_constructor():
    with pytest.raises(ValueError, match="EfficientNet-Lite0 has no option 'base_channels'; its options are: none"):
        create_encoder("efficientnet_lite0", pretrained=False, base_channels=8)
    with pytest.raises(ValueError, match="U-Net encoder has no option 'width'; its options are: base_channels, num_stages"):
        create_encoder("plain", width=8)
    with pytest.raises(ValueError, match="unknown encoder 'vgg'; choose one of"):
        create_encoder("vgg")


class TinyEncoder(Encoder):
    """Three conv-BN-ReLU stages at strides 2, 4, 8 (the README's custom encoder)."""

    def __init__(self, width: int = 8):
        super().__init__(out_channels=[width, 2 * width, 4 * width], reductions=[2, 4, 8])
        self.stages = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), ConvBNReLU(c_in, c_out)) for c_in, c_out in zip([3, width, 2 * width], self.out_channels))

    def forward(self, x, num_levels=None):
        features = []
        for stage in self.stages[:num_levels]:
            x = stage(x)
            features.append(x)
        return features


@pytest.fixture
def registered_tiny_encoder(monkeypatch):
    monkeypatch.setattr(ENCODERS, "_entries", dict(ENCODERS._entries))
    register_encoder("tiny", "Tiny")(TinyEncoder)
    return "tiny"


def test_a_registered_encoder_fits_every_architecture_that_accepts_it(registered_tiny_encoder):
    assert "tiny" in segmodels.ENCODERS
    for arch in ("unet", "unetpp", "unet3p"):
        model = segmodels.create_model(arch, 2, encoder=registered_tiny_encoder).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 30, 20)).shape == (1, 2, 30, 20)
    assert segmodels.create_model("unetpp", 2, encoder="tiny").pruning_depths == (1, 2)
    with pytest.raises(ValueError, match="fixed output stride"):
        segmodels.create_model("deeplabv3p", 2, encoder="tiny")
    with pytest.raises(ValueError, match="Tiny has no option 'depth'; its options are: width"):
        create_encoder("tiny", depth=3)


def test_registering_a_name_twice_is_refused():
    registry = Registry("encoder")
    registry.register("tiny")(TinyEncoder)
    with pytest.raises(ValueError, match="encoder 'tiny' is already registered"):
        registry.register("tiny")(TinyEncoder)
