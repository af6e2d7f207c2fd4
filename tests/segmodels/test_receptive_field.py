import math

import pytest
import torch
from torch import nn

import segmodels
from segmodels.receptive_field import (
    Field,
    aspp_rates,
    effective_receptive_field,
    output_field_size,
    theoretical_receptive_field,
)


class ConvStack(nn.Module):
    def __init__(self, layers: int, dilation: int = 1, stride: int = 1):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(3, 3, 3, stride=stride, padding=dilation, dilation=dilation) for _ in range(layers)])

    def forward(self, x):
        return self.convs(x)


@pytest.mark.parametrize("layers", [1, 2, 3, 7])
def test_stacked_3x3_convs_have_rf_2n_plus_1(layers):
    rows = theoretical_receptive_field(ConvStack(layers), (32, 32))
    assert [r.size for r in rows] == [2 * n + 1 for n in range(1, layers + 1)]
    assert all(r.jump == 1 for r in rows)


@pytest.mark.parametrize("rate", [1, 2, 6, 12])
def test_dilated_3x3_covers_2r_plus_1(rate):
    assert theoretical_receptive_field(ConvStack(1, dilation=rate), (64, 64))[0].size == 2 * rate + 1


def test_strides_multiply_jump_and_grow_the_field():
    rows = theoretical_receptive_field(ConvStack(2, stride=2), (32, 32))
    assert [(r.size, r.jump) for r in rows] == [(3, 2), (7, 4)]
    assert Field().through(2, 2).size == 2 and Field().through(2, 2).through(3, 1).size == 6


def test_unet_layers_grow_and_skip_merges_take_the_widest():
    model = segmodels.create_model("unet", 2, base_channels=4).eval()
    rows = theoretical_receptive_field(model, (64, 64))
    encoder_rows = [r for r in rows if r.name.startswith("encoder")]
    assert [r.size for r in encoder_rows] == sorted(r.size for r in encoder_rows)
    assert rows[-1].name == "heads.main" and rows[-1].size >= max(r.size for r in encoder_rows)
    assert {r.op for r in rows} == {"conv2d", "max_pool2d"}


def test_unetpp_field_grows_with_depth():
    model = segmodels.create_model("unetpp", 2, base_channels=4).eval()
    sizes = [output_field_size(theoretical_receptive_field(model, (64, 64), depth=d)) for d in (1, 2, 3, 4)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_deeplab_image_pooling_is_global_and_aspp_rates_come_from_layers():
    model = segmodels.create_model("deeplabv3p", 2, encoder="resnet50", pretrained=False).eval()
    rows = theoretical_receptive_field(model, (64, 64))
    assert math.isinf(rows[-1].size)
    dilations = {r.dilation for r in rows if r.name.startswith("decoder.aspp")}
    assert {6, 12, 18} <= dilations
    assert aspp_rates(model) == [6, 12, 18]


def test_effective_receptive_field_is_local_for_a_small_network():
    torch.manual_seed(0)
    model = ConvStack(2)
    model_with_options = lambda x, **_: model(x)  # noqa: E731
    erf = effective_receptive_field(model_with_options, torch.rand(3, 21, 21), (10, 10), class_index=0)
    assert erf.shape == (21, 21) and erf.max() == 1
    nonzero = erf.nonzero()
    assert nonzero[:, 0].min() >= 8 and nonzero[:, 0].max() <= 12


def test_effective_receptive_field_of_a_real_model_and_bad_pixel():
    model = segmodels.create_model("unet", 3, base_channels=4).eval()
    erf = effective_receptive_field(model, torch.rand(3, 40, 40), (20, 20))
    assert erf.shape == (40, 40) and 0 <= erf.min() and erf.max() == 1
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="outside"):
        effective_receptive_field(model, torch.rand(3, 40, 40), (40, 3))
