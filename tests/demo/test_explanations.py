"""The explanations quote numbers computed by the library or read from the shipped models,
never typed: each test recomputes a figure independently and looks for it in the text."""

from __future__ import annotations

import math

import pytest

from demo import explanations
from segmodels import create_model, zoo
from segmodels.receptive_field import output_field_size, theoretical_receptive_field
from segmodels.teach.architecture import encoder_level_flops, model_facts, shipped_facts, valid_tap_share
from segmodels.teach.feature_maps import STRETCH_QUANTILES
from segmodels.teach.numbers import unet_valid_output_size

CAMVID_SHIPPED = {f"camvid/{arch}" for arch in ("unet", "unetpp", "unet3p", "deeplabv3p")} <= set(zoo.list_models())
needs_camvid_models = pytest.mark.skipif(not CAMVID_SHIPPED, reason="needs the shipped CamVid models")


def test_receptive_field_text_says_2n_plus_1_and_shows_the_stride_example():
    text = explanations.receptive_field()
    assert "one sees 3 x 3, two see 5 x 5, three see 7 x 7" in text and "not 7 x 7" in text
    assert "| 3 | 3x3 | 2 | 1 | 1 px | +2 | **7 px** |" in text and "| 4 | 3x3 | 1 | 1 | 2 px | +4 | **11 px** |" in text
    assert "rate 2: 5 x 5" in text and "rate 4: 9 x 9" in text and "**about** right" in text


def test_the_paper_unet_shrinks_572_to_388():
    assert unet_valid_output_size(572) == 388
    assert "572 x 572 input gives a 388 x 388 output" in explanations.unet_padding()
    with pytest.raises(ValueError, match="valid poolings"):
        unet_valid_output_size(571)


def test_deeplab_text_gives_the_papers_widths_and_the_models():
    model = create_model("deeplabv3p", 2, encoder="plain", pretrained=False, base_channels=4, aspp_channels=20, low_level_channels=6)
    text = explanations.deeplab_pipeline(model_facts(model, "deeplabv3p", "plain"))
    assert "output stride 16" in text and "6, 12, 18" in text and "12, 24, 36" in text
    assert "The paper uses **256 channels** for\nASPP and the decoder and **48**" in text
    assert "uses **20 channels** for ASPP and the decoder and **6** for the low-level features" in text and "upsampled x4" in text
    assert "no shipped CamVid DeepLabV3+" in explanations.deeplab_pipeline(None)


def test_unet3p_text_gives_the_papers_widths_and_the_models():
    model = create_model("unet3p", 2, encoder="plain", pretrained=False, base_channels=4, cat_channels=7)
    facts = model_facts(model, "unet3p", "plain", card={"training": {"loss": "mfb"}})
    text = explanations.unet3p_skips(facts)
    assert "5 x 64 = **320 channels**" in text and "squeezes to **7**: 5 x 7 = **35 channels**" in text
    assert "focal + MS-SSIM + IoU" in text and "median-frequency weighted CE averaged over the heads" in text and "not included" in text


@needs_camvid_models
def test_compare_text_reads_the_shipped_camvid_models():
    facts = shipped_facts("camvid")
    cards = {arch: zoo.load_card(f"camvid/{arch}") for arch in facts}
    text = explanations.architectures(zoo.WEIGHTS_DIR)
    cat = cards["unet3p"]["options"]["cat_channels"]
    assert f"5 x {cat} = **{5 * cat} channels**" in text and f"**{cards['deeplabv3p']['options']['aspp_channels']} channels**" in text
    assert "ImageNet-pretrained **EfficientNet-Lite0** encoder" in text
    for fact in facts.values():
        assert f"{fact.arch_display} {fact.decoder_parameters / 1e6:.2f}M" in text
    assert "DeepLabV3+ x4" in text and "U-Net x2" in text and "fast mode" in text and "1/C_out + 1/k²" in text
    assert "uses dense 3x3 convolutions there" in text or "depthwise convolutions in its decoder" in text


def test_compare_text_without_camvid_models_says_so(tmp_path):
    text = explanations.architectures(tmp_path)
    assert "no shipped CamVid model" in text and "5 x 64 = **320 channels**" in text and "29/36" in text


def test_pooling_text_spp_pspnet_and_aspp_from_deeplab_v2():
    text = explanations.pooling()
    assert "1x1, 2x2, 4x4" in text and "21 cells" in text and "No model here uses it" in text
    assert "1x1, 2x2, 3x3, 6x6 bins" in text and "1/4 of\nthe channels" in text
    assert "**DeepLab v2** (Chen et al., TPAMI 2017)" in text


@needs_camvid_models
def test_dilation_cost_text_is_measured_on_the_shipped_deeplab():
    facts = shipped_facts("camvid")["deeplabv3p"]
    height, width = facts.card["flops_input_size"]
    dilated = encoder_level_flops(facts.encoder, (height, width), 16)
    strided = encoder_level_flops(facts.encoder, (height, width), None)
    text = explanations.dilation_cost(facts)
    assert f"**{dilated[-1] / 1e9:.2f} GFLOPs** against **{strided[-1] / 1e9:.2f}** at output stride 32" in text
    side = (math.ceil(height / 16), math.ceil(width / 16))
    assert f"stride-16 map is {side[0]} x {side[1]}" in text
    assert f"rate 18: {valid_tap_share(*side, 18)['padding_share']:.0%}" in text
    assert "Wang et al. 2018" in text and "hybrid dilated convolution" in text and "(100%)" in text


def test_miou_example_losses_and_thumbnails():
    text = explanations.miou_image_vs_dataset()
    assert "29/36" in text and "17/36" in text and "one confusion matrix" in text
    assert "weighted focal" in explanations.weighted_losses() and r"(1 - p_t)^{\gamma}" in explanations.weighted_losses()
    low, high = STRETCH_QUANTILES
    assert f"the {low:.0%} and {high:.0%} quantiles" in explanations.inside_thumbnails()


def test_two_stacked_convolutions_really_see_five_pixels():
    from torch import nn

    layers = theoretical_receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)), (16, 16))
    assert output_field_size(layers) == 5
