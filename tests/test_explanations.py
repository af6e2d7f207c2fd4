"""The explanations quote numbers computed by the library (issue 13's corrections), never typed."""

from __future__ import annotations

import pytest

from demo import explanations
from segmodels import create_model
from segmodels.receptive_field import output_field_size, theoretical_receptive_field
from segmodels.teaching import unet_valid_output_size


def test_receptive_field_text_says_2n_plus_1_and_shows_the_stride_example():
    text = explanations.receptive_field()
    assert "2 see 5 x 5" in text and "3 see 7 x 7" in text and "not 7 x 7" in text
    assert "| 3 | 3x3 | 2 | 1 | 1 px | +2 | **7 px** |" in text and "| 4 | 3x3 | 1 | 1 | 2 px | +4 | **11 px** |" in text
    assert "rate 2: 5 x 5" in text and "rate 4: 9 x 9" in text


def test_the_paper_unet_shrinks_572_to_388():
    assert unet_valid_output_size(572) == 388
    assert "572 x 572 input gives a 388 x 388 output" in explanations.unet_padding()
    with pytest.raises(ValueError, match="valid poolings"):
        unet_valid_output_size(571)


def test_deeplab_text_follows_the_model():
    text = explanations.deeplab_pipeline()
    assert "output stride 16" in text and "6, 12, 18" in text and "12, 24, 36" in text and "**48 channels**" in text
    model = create_model("deeplabv3p", 2, encoder="plain", pretrained=False, base_channels=4)
    assert model.decoder.low_level_project[0].out_channels == 48


def test_unet3p_text_counts_five_scales_of_64():
    text = explanations.unet3p_skips()
    assert "5 x 64 = **320 channels**" in text and "not included" in text
    model = create_model("unet3p", 2, encoder="plain", pretrained=False, base_channels=4)
    assert any(getattr(m, "out_channels", None) == 320 for m in model.modules())


def test_spp_text_and_miou_example():
    assert "1x1, 2x2, 4x4" in explanations.pooling() and "21 cells" in explanations.pooling() and "No model here uses" in explanations.pooling()
    text = explanations.miou_image_vs_dataset()
    assert "29/36" in text and "17/36" in text and "one confusion matrix" in text
    assert "weighted focal" in explanations.weighted_losses() and r"(1 - p_t)^{\gamma}" in explanations.weighted_losses()


def test_two_stacked_convolutions_really_see_five_pixels():
    from torch import nn

    layers = theoretical_receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)), (16, 16))
    assert output_field_size(layers) == 5
