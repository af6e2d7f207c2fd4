import numpy as np
import pytest
import torch

from segmodels.encoders import create_encoder
from segmodels.encoders.efficientnet import efficientnet_lite0_imagenet
from segmodels.models.base import IMAGENET_MEAN, IMAGENET_STD

skimage = pytest.importorskip("skimage", reason="scikit-image ships the test photograph")


def imagenet_batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_efficientnet_lite0_package_weights_classify_a_cat():
    model = efficientnet_lite0_imagenet(pretrained=True).eval()
    with torch.no_grad():
        top5 = model(imagenet_batch(skimage.data.chelsea())).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5  # ImageNet 281-285: domestic cats


def test_random_weights_do_not_classify_the_cat():
    torch.manual_seed(0)
    model = efficientnet_lite0_imagenet(pretrained=False).eval()
    with torch.no_grad():
        probabilities = model(imagenet_batch(skimage.data.chelsea())).softmax(1)[0]
    assert probabilities[281:286].sum() < 0.5


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


@pytest.mark.parametrize("name", ["plain", "efficientnet_lite0", "resnet18", "resnet50"])
@pytest.mark.parametrize("output_stride", [None, 16, 8])
def test_encoder_strides_and_partial_levels(name, output_stride):
    encoder = create_encoder(name, output_stride=output_stride, pretrained=False, base_channels=4).eval()
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, 64, 64))
        first_two = encoder(torch.rand(1, 3, 64, 64), num_levels=2)
    assert [f.shape[1] for f in features] == encoder.out_channels
    assert [64 // f.shape[-1] for f in features] == encoder.reductions
    assert len(first_two) == 2
    if output_stride:
        assert max(encoder.reductions) <= output_stride
