"""Tests for segmodels.teach.numbers: the numbers the teaching text renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from segmodels import create_model
from segmodels.metrics import miou
from segmodels.receptive_field import aspp_rates, theoretical_receptive_field
from segmodels.teach.numbers import (
    RECEPTIVE_FIELD_EXAMPLE,
    ConvLayer,
    aspp_branch_extents,
    aspp_rates_by_output_stride,
    camvid_class_weight_schemes,
    class_weight_schemes,
    dilated_kernel_extent,
    miou_image_vs_dataset,
    miou_worked_example,
    receptive_field_steps,
    stacked_conv_receptive_field,
)


def _as_sequential(layers: tuple[ConvLayer, ...]) -> nn.Sequential:
    return nn.Sequential(*[
        nn.Conv2d(3, 3, layer.kernel, stride=layer.stride, dilation=layer.dilation, padding=layer.dilation * (layer.kernel - 1) // 2)
        for layer in layers
    ])


def test_stacked_convolutions_see_2n_plus_1() -> None:
    assert [stacked_conv_receptive_field(n) for n in range(6)] == [1, 3, 5, 7, 9, 11]
    assert stacked_conv_receptive_field(2) == 5
    assert stacked_conv_receptive_field(3, kernel=5) == 13
    assert [dilated_kernel_extent(3, rate) for rate in (1, 2, 6)] == [3, 5, 13]
    assert dilated_kernel_extent(5, 2) == 9
    stack = theoretical_receptive_field(_as_sequential((ConvLayer(),) * 4), input_size=(32, 32))
    assert [layer.size for layer in stack] == [stacked_conv_receptive_field(n) for n in range(1, 5)]
    for bad in (lambda: stacked_conv_receptive_field(-1), lambda: dilated_kernel_extent(3, 0), lambda: ConvLayer(stride=0)):
        with pytest.raises(ValueError, match="must be"):
            bad()


@pytest.mark.parametrize(
    "layers",
    [RECEPTIVE_FIELD_EXAMPLE, (ConvLayer(dilation=2), ConvLayer(stride=2), ConvLayer(dilation=3), ConvLayer(kernel=5, stride=2), ConvLayer())],
)
def test_receptive_field_steps_match_the_tracer(layers) -> None:
    steps = receptive_field_steps(layers)
    traced = theoretical_receptive_field(_as_sequential(layers), input_size=(64, 64))
    assert [s["receptive_field"] for s in steps] == [layer.size for layer in traced]
    assert [s["jump_out"] for s in steps] == [layer.jump for layer in traced]


def test_worked_example_stride_doubles_later_growth() -> None:
    steps = receptive_field_steps(RECEPTIVE_FIELD_EXAMPLE)
    assert [s["receptive_field"] for s in steps] == [3, 5, 7, 11, 15]
    assert [s["growth"] for s in steps] == [2, 2, 2, 4, 4]
    assert [s["jump_in"] for s in steps] == [1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="ConvLayer"):
        receptive_field_steps([(3, 1, 1)])


def test_class_weight_schemes_on_small_masks() -> None:
    masks = [np.array([[0, 0, 0, 0], [0, 0, 1, 1]]), np.array([[0, 0, 0, 0], [0, 0, 0, 2]])]
    schemes = class_weight_schemes(masks, 4, class_names=("a", "b", "c", "d"))
    np.testing.assert_allclose(schemes["pixel_share"], [13 / 16, 2 / 16, 1 / 16, 0])
    np.testing.assert_allclose(schemes["inverse_share"], [3 / 16, 14 / 16, 15 / 16, 1])
    # freq = N_c / P_c: a 13/16, b 2/8, c 1/8; median 2/8
    np.testing.assert_allclose(schemes["median_frequency"], [(2 / 8) / (13 / 16), 1, 2, 0], rtol=1e-6)
    assert schemes["inverse_share_spread"] == pytest.approx(5.0)
    assert schemes["median_frequency_spread"] == pytest.approx(2 / ((2 / 8) / (13 / 16)))
    with pytest.raises(ValueError, match="class_names"):
        class_weight_schemes(masks, 4, class_names=("a",))
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weight_schemes([np.full((2, 2), 9)], 4, ignore_index=9)


def test_camvid_weight_spreads(camvid_root) -> None:
    schemes = camvid_class_weight_schemes(camvid_root)
    assert schemes["inverse_share_spread"] == pytest.approx(1.487, abs=0.005)
    assert schemes["median_frequency_spread"] == pytest.approx(59.15, abs=0.1)
    names = schemes["class_names"]
    assert names[int(np.argmin(schemes["inverse_share"]))] == "Road"
    assert names[int(np.argmax(schemes["inverse_share"]))] == "Bicyclist"
    assert min(schemes["inverse_share"]) == pytest.approx(0.670, abs=0.001)
    assert max(schemes["inverse_share"]) == pytest.approx(0.997, abs=0.001)


def test_miou_worked_example_is_exact() -> None:
    example = miou_worked_example()
    assert [image["miou_exact"] for image in example["images"]] == ["5/12", "1", "1"]
    assert example["mean_of_image_mious_exact"] == "29/36"
    assert example["dataset_miou_exact"] == "17/36"
    assert example["dataset_per_class_iou_exact"] == ["17/18", "0"]
    assert example["mean_of_image_mious"] == pytest.approx(29 / 36)
    targets = torch.tensor(example["targets"])
    predictions = torch.tensor(example["predictions"])
    assert example["dataset_miou"] == pytest.approx(miou(predictions, targets, 2))
    for image, prediction, target in zip(example["images"], predictions, targets):
        assert image["miou"] == pytest.approx(miou(prediction, target, 2))


def test_miou_image_vs_dataset_checks_input() -> None:
    with pytest.raises(ValueError, match="as many predictions"):
        miou_image_vs_dataset([np.zeros((2, 2))], [], 2)
    with pytest.raises(ValueError, match="values must lie"):
        miou_image_vs_dataset([np.zeros((2, 2))], [np.full((2, 2), 5)], 2)


def test_aspp_rates_come_from_the_model() -> None:
    rates = aspp_rates_by_output_stride()
    assert rates == {16: (6, 12, 18), 8: (12, 24, 36)}
    for output_stride, expected in rates.items():
        model = create_model("deeplabv3p", 2, encoder="plain", pretrained=False, base_channels=4, output_stride=output_stride, aspp_channels=8, low_level_channels=4)
        assert tuple(aspp_rates(model)) == expected
    at_16, at_8 = aspp_branch_extents(16), aspp_branch_extents(8)
    assert [b["feature_pixels"] for b in at_16] == [13, 25, 37]
    assert [b["outer_taps_input_pixels"] for b in at_16] == [b["outer_taps_input_pixels"] for b in at_8] == [192, 384, 576]
    with pytest.raises(ValueError, match="output_stride"):
        aspp_branch_extents(32)
