"""Tests for segmodels.teach.architecture: each computed fact against an independent
measurement with real layers (a convolution over a map of ones, a stack of convolutions on a
delta, torch's FLOP counter) or against the shipped model cards."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segmodels import create_model, zoo
from segmodels.cards import count_flops, model_from_spec
from segmodels.encoders import create_encoder
from segmodels.teach.architecture import (
    encoder_level_flops,
    gridding_coverage,
    model_facts,
    separable_cost,
    shipped_facts,
    valid_tap_share,
)

CAMVID_SHIPPED = {f"camvid/{arch}" for arch in ("unet", "unetpp", "unet3p", "deeplabv3p")} <= set(zoo.list_models())


@pytest.mark.parametrize("height, width, rate", [(23, 30, 18), (23, 30, 6), (9, 9, 4), (5, 40, 12)])
def test_valid_tap_share_matches_a_convolution_over_ones(height, width, rate) -> None:
    """An all-ones dilated 3x3 kernel over a zero-padded map of ones counts the taps on the map."""
    ones = torch.ones(1, 1, height, width)
    counts = nn.functional.conv2d(ones, torch.ones(1, 1, 3, 3), padding=rate, dilation=rate)[0, 0]
    share = valid_tap_share(height, width, rate)
    assert share["valid_share"] == pytest.approx(float(counts.mean()) / 9)
    assert share["centre_only_share"] == pytest.approx(float((counts == 1).float().mean()))
    assert share["padding_share"] == pytest.approx(1 - share["valid_share"])


def test_valid_tap_share_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="rate must be a positive integer"):
        valid_tap_share(23, 30, 0)
    with pytest.raises(ValueError, match="kernel must be odd"):
        valid_tap_share(23, 30, 2, kernel=4)


@pytest.mark.parametrize("layers", [[(3, 2)] * 3, [(3, 1), (3, 2), (3, 3)], [(5, 1), (5, 2), (5, 2), (3, 2)], [(3, 4)]])
def test_gridding_coverage_matches_a_stack_of_convolutions(layers) -> None:
    """Send a delta through all-ones convolutions: the nonzero outputs are the reached positions."""
    span = sum((k - 1) * d for k, d in layers) + 1
    delta = torch.zeros(1, 1, span + 2, span + 2)
    delta[0, 0, span // 2 + 1, span // 2 + 1] = 1
    x = delta
    for kernel, dilation in layers:
        x = nn.functional.conv2d(x, torch.ones(1, 1, kernel, kernel), padding=dilation * (kernel - 1) // 2, dilation=dilation)
    assert gridding_coverage(layers) == pytest.approx(float((x > 0).sum()) / span**2)


def test_separable_cost_matches_the_flop_counter() -> None:
    c_in, c_out = 40, 24
    dense = nn.Conv2d(c_in, c_out, 3, padding=2, dilation=2, bias=False)
    separable = nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=2, dilation=2, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False))
    cost = separable_cost(c_in, c_out)

    def flops(module: nn.Module) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            module(torch.zeros(1, c_in, 16, 16))
        return counter.get_total_flops()

    assert cost["ratio"] == pytest.approx(flops(separable) / flops(dense))
    assert cost["ratio"] == pytest.approx(cost["closed_form"]) == pytest.approx(1 / c_out + 1 / 9)


def test_encoder_level_flops_add_up_and_dilation_costs_more() -> None:
    dilated = encoder_level_flops("efficientnet_lite0", (120, 150), 16)
    strided = encoder_level_flops("efficientnet_lite0", (128, 160), None)
    encoder = create_encoder("efficientnet_lite0", output_stride=16, pretrained=False)
    assert sum(dilated) == count_flops(encoder, (128, 160))  # 120 x 150 padded to a multiple of 16
    assert encoder_level_flops("efficientnet_lite0", (128, 160), 16) == dilated
    assert dilated[-1] > 3 * strided[-1], "the dilated last level runs on 4x the positions"


def test_model_facts_read_the_layers() -> None:
    unet3p = model_facts(create_model("unet3p", 3, encoder="plain", pretrained=False, base_channels=4, cat_channels=6), "unet3p", "plain")
    assert unet3p.widths == {"cat_channels": 6, "levels": 5, "fused_channels": 30} and unet3p.logit_upsampling == 1
    deeplab = create_model("deeplabv3p", 3, encoder="plain", pretrained=False, base_channels=4, aspp_channels=12, low_level_channels=5, output_stride=8)
    deeplab = model_facts(deeplab, "deeplabv3p", "plain")
    assert deeplab.widths == {"aspp_channels": 12, "low_level_channels": 5} and deeplab.logit_upsampling == 4 and deeplab.output_stride == 8
    assert deeplab.dilated_convs and all(dilation > 1 for _, _, dilation in deeplab.dilated_convs)
    unetpp = model_facts(create_model("unetpp", 3, encoder="plain", pretrained=False, base_channels=4, decoder_channels=[3, 5, 7, 9]), "unetpp", "plain")
    assert unetpp.widths == {"decoder_channels": [3, 5, 7, 9]} and unetpp.upsampling == "transposed"
    with pytest.raises(ValueError, match="SegmentationModel"):
        model_facts(nn.Conv2d(1, 1, 1), "unet", "plain")


@pytest.mark.skipif(not CAMVID_SHIPPED, reason="needs the shipped CamVid models")
def test_shipped_facts_agree_with_the_cards() -> None:
    facts = shipped_facts("camvid")
    cards = {arch: zoo.load_card(f"camvid/{arch}") for arch in facts}
    assert set(facts) == {"unet", "unetpp", "unet3p", "deeplabv3p"}
    assert facts["unet3p"].widths["cat_channels"] == cards["unet3p"]["options"]["cat_channels"]
    assert facts["deeplabv3p"].widths["aspp_channels"] == cards["deeplabv3p"]["options"]["aspp_channels"]
    assert facts["unetpp"].widths["decoder_channels"] == cards["unetpp"]["options"]["decoder_channels"]
    assert len({f.encoder_parameters for f in facts.values()}) == 1 and {f.encoder for f in facts.values()} == {"efficientnet_lite0"}
    for arch, fact in facts.items():
        heads = sum(p.numel() for p in model_from_spec(cards[arch]).heads.parameters())
        assert fact.encoder_parameters + fact.decoder_parameters + heads == cards[arch]["params"]
    assert facts["deeplabv3p"].logit_upsampling == 4 and facts["unet"].logit_upsampling == 2
