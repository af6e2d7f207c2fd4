"""segmodels.teach.look_inside: the graph read from each architecture, what one hooked pass
captures, and the errors for what it cannot look inside."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_OPTIONS
from segmodels import SegmentationModel, create_model, zoo
from segmodels.cards import count_flops, count_parameters
from segmodels.receptive_field import aspp_rates
from segmodels.teach.feature_maps import thumbnail_size
from segmodels.teach.look_inside import look_inside

SIZE = (70, 90)  # not a multiple of any stride: the model pads, the thumbnails crop


def tiny(arch: str, encoder: str = "plain", **options) -> SegmentationModel:
    torch.manual_seed(0)
    return create_model(arch, 4, encoder=encoder, pretrained=False, base_channels=4, **(TINY_OPTIONS[arch] | options)).eval()


def image(size=SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def names(view, kind: str) -> set[str]:
    return {node.info.name for node in view.nodes if node.info.kind == kind}


def test_unetpp_has_the_full_grid_and_a_head_on_every_top_node():
    view = look_inside(tiny("unetpp"), image())
    assert names(view, "encoder") == {f"x{i}_0" for i in range(5)}
    assert names(view, "decoder") == {f"x{i}_{j}" for j in range(1, 5) for i in range(5 - j)}
    assert names(view, "head") == {f"head.x0_{j}" for j in range(1, 5)}
    assert {(e.source, e.target) for e in view.incoming("x1_2")} == {("x1_0", "x1_2"), ("x1_1", "x1_2"), ("x2_1", "x1_2")}
    assert all(node.runs for node in view.nodes if node.info.kind != "head")  # default: full depth


def test_unetpp_at_depth_2_marks_the_nodes_that_do_not_run():
    model = tiny("unetpp")
    view = look_inside(model, image(), depth=2)
    assert view.depth == 2
    for node in view.nodes:
        if node.info.kind == "head":
            assert node.runs == (node.info.name == "head.x0_2"), node.info.name
        else:
            i, j = map(int, node.info.name[1:].split("_"))
            assert node.runs == (i + j <= 2), node.info.name
        assert node.feature is not None  # every map comes from one pass of the full network
    full = look_inside(model, image())
    assert [n.runs for n in full.at_depth(2).nodes] == [n.runs for n in view.nodes]
    for depth in model.pruning_depths:
        assert full.at_depth(depth).flops == count_flops(model, SIZE, depth=depth)
        assert full.at_depth(depth).parameters == count_parameters(model, depth=depth)


def test_unet_is_drawn_as_a_u():
    view = look_inside(tiny("unet"), image())
    assert names(view, "decoder") == {"x3_1", "x2_2", "x1_3", "x0_4"}
    for level in range(4):
        node = view.node(f"x{level}_{4 - level}")
        assert node.info.row == level and node.info.column == 8 - level
        assert {e.source for e in view.incoming(node.info.name)} == {f"x{level}_0", f"x{level + 1}_0" if level == 3 else f"x{level + 1}_{3 - level}"}


def test_unet3p_decoder_nodes_have_five_incoming_links():
    view = look_inside(tiny("unet3p"), image())
    decoder = names(view, "decoder")
    assert decoder == {"x_de1", "x_de2", "x_de3", "x_de4"}
    for name in decoder:
        assert len(view.incoming(name)) == 5, name
    links = {e.source: e.operation for e in view.incoming("x_de2")}
    assert set(links) == {"x0_0", "x1_0", "x_de3", "x_de4", "x4_0"}
    assert links["x0_0"].startswith("max-pool /2") and links["x1_0"].startswith("same scale")
    assert names(view, "head") == {f"head.x_de{i}" for i in range(1, 6)}
    assert [n.info.name for n in view.nodes if n.info.kind == "head" and n.runs] == ["head.x_de1"]  # side heads only train


@pytest.mark.parametrize("separable, suffix", [(True, " dw+pw"), (False, "")])
@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_deeplab_shows_its_aspp_rates_and_the_48_channel_low_level_path(output_stride, rates, separable, suffix):
    model = tiny("deeplabv3p", output_stride=output_stride, low_level_channels=48, separable=separable)
    view = look_inside(model, image())
    labels = [n.info.label for n in view.nodes if n.info.kind == "aspp"]
    assert labels == ["ASPP 1x1"] + [f"ASPP rate {r}{suffix}" for r in aspp_rates(model)]
    assert tuple(aspp_rates(model)) == rates
    assert names(view, "pooling") == {"aspp.branches.4"}
    low = view.node("low_level_project")
    assert low.feature.channels == 48 and low.feature.stride == 4
    assert [e.source for e in view.incoming("low_level_project")] == ["x2_0"]  # the stride-4 feature of the plain encoder
    assert {e.source for e in view.incoming("refine.0")} == {"aspp.project", "low_level_project"}
    assert {e.source for e in view.incoming("aspp.project")} == {f"aspp.branches.{k}" for k in range(5)}


def test_separable_layers_show_what_they_save_against_dense_ones():
    separable = look_inside(tiny("deeplabv3p", aspp_channels=12), image())
    branch = separable.node("aspp.branches.2").info
    assert "depthwise 3x3, rate 12" in branch.detail and "pointwise 1x1 from 64 to 12 channels" in branch.detail
    (conv,) = branch.separable
    assert (conv.module, conv.kernel_size, conv.dilation, conv.in_channels, conv.out_channels) == ("decoder.aspp.branches.2", 3, 12, 64, 12)
    assert conv.weights == 9 * 64 + 64 * 12 and conv.dense_weights == 9 * 64 * 12
    assert conv.cost_ratio == pytest.approx(conv.weights / conv.dense_weights) == pytest.approx(1 / 12 + 1 / 9)
    (refine,) = separable.node("refine.0").info.separable
    assert refine.in_channels == 12 + 4 and refine.out_channels == 12
    assert [n.info.name for n in separable.nodes if n.info.separable] == ["aspp.branches.1", "aspp.branches.2", "aspp.branches.3", "refine.0", "refine.1"]
    dense = look_inside(tiny("deeplabv3p", aspp_channels=12, separable=False), image())
    assert not any(n.info.separable for n in dense.nodes)
    assert f"1/12 + 1/9 = {1 / 12 + 1 / 9:.3f}" in dense.node("refine.1").info.detail  # what separable=True would cost


@pytest.mark.parametrize("arch", list(TINY_OPTIONS))
def test_captured_shapes_match_the_real_forward(arch):
    model = tiny(arch)
    view = look_inside(model, image())
    padded = torch.zeros(1, 3, *(math.ceil(s / model.required_divisor) * model.required_divisor for s in SIZE))
    with torch.inference_mode():
        features = model.encoder(padded)
        decoded = model.decoder(features)
    for level, feature in enumerate(features):
        assert view.node(f"x{level}_0").feature.shape == tuple(feature.shape[1:])
    for name, output in decoded.items():
        head = view.node(f"head.{name}")
        (link,) = view.incoming(head.info.name)
        assert view.node(link.source).feature.shape == tuple(output.shape[1:])
        assert head.feature.shape == (4, *output.shape[-2:])


@pytest.mark.parametrize("encoder", ["plain", "efficientnet_lite0"])
@pytest.mark.parametrize("arch", list(TINY_OPTIONS))
def test_every_parameter_and_flop_belongs_to_one_node(arch, encoder):
    model = tiny(arch, encoder)
    view = look_inside(model, image())
    assert sum(node.info.parameters for node in view.nodes) == count_parameters(model)
    depth = {"depth": max(model.pruning_depths)} if model.pruning_depths else {}
    assert view.flops == count_flops(model, SIZE, **depth)


def test_receptive_fields_follow_the_layer_arithmetic():
    unet = look_inside(tiny("unet"), image())
    assert unet.node("x0_0").info.receptive_field == 5  # two 3x3 convs: 2n + 1
    assert unet.node("x1_0").info.receptive_field == 14  # 2x2 pool (+1, jump 2), two 3x3 convs (+4 each)
    deeplab = look_inside(tiny("deeplabv3p"), image())
    deepest = deeplab.node("x4_0")
    assert deepest.feature.stride == 16
    for k, rate in enumerate((6, 12, 18), start=1):  # a 3x3 kernel at rate r spans 2r + 1 taps of the stride-16 map
        assert deeplab.node(f"aspp.branches.{k}").info.receptive_field == deepest.info.receptive_field + 2 * rate * 16
    assert math.isinf(deeplab.node("aspp.branches.4").info.receptive_field)  # image pooling sees everything
    assert math.isinf(deeplab.node("refine.1").info.receptive_field)


def test_thumbnails_are_bounded_and_keep_the_aspect_ratio():
    view = look_inside(tiny("unet3p"), image((360, 480)), thumbnail_side=48)
    assert thumbnail_size((360, 480), 48) == (36, 48)
    for node in view.nodes:
        assert node.feature.activation.shape == (36, 48) and node.feature.activation.dtype == np.uint8
        assert node.feature.pca.shape == (36, 48, 3) and node.feature.pca.dtype == np.uint8


def test_the_maps_show_the_image():
    left_bright = np.zeros((64, 64, 3), dtype=np.uint8)
    left_bright[:, :32] = 255
    first = look_inside(tiny("unet"), left_bright, thumbnail_side=16).node("x0_0").feature.activation
    # a bright half and a dark half: the first stage responds differently to each
    assert abs(float(first[:, :6].mean()) - float(first[:, -6:].mean())) > 20


def test_no_hook_is_left_behind():
    model = tiny("unetpp")
    look_inside(model, image())
    with pytest.raises(ValueError):
        look_inside(model, image(), depth=9)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_errors_say_what_is_allowed():
    unet, unetpp = tiny("unet"), tiny("unetpp")
    with pytest.raises(ValueError, match="cannot be pruned"):
        look_inside(unet, image(), depth=2)
    with pytest.raises(ValueError, match="1, 2, 3, 4"):
        look_inside(unetpp, image(), depth=7)
    with pytest.raises(ValueError, match="1, 2, 3, 4"):
        look_inside(unetpp, image()).at_depth(0)
    with pytest.raises(ValueError, match="uint8"):
        look_inside(unet, image().astype(np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        look_inside(unet, np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="thumbnail_side"):
        look_inside(unet, image(), thumbnail_side=4)
    with pytest.raises(ValueError, match="eval"):
        look_inside(tiny("unet").train(), image())
    with pytest.raises(ValueError, match="SegmentationModel"):
        look_inside(nn.Conv2d(3, 3, 1).eval(), image())
    with pytest.raises(ValueError, match="no node 'x9_9'"):
        look_inside(unet, image()).node("x9_9")


@pytest.mark.parametrize("arch", ["unet", "unetpp", "unet3p", "deeplabv3p"])
def test_shipped_camvid_models(arch):
    model = zoo.load_model(f"camvid/{arch}")
    card = zoo.load_card(f"camvid/{arch}")
    view = look_inside(model, image((96, 128)))
    assert sum(node.info.parameters for node in view.nodes) == card["params"]
    assert [n.info.name for n in view.nodes if n.info.kind == "encoder"] == [f"x{i}_0" for i in range(5)]
    assert all(node.feature is not None for node in view.nodes)
    if arch == "deeplabv3p":
        assert [n.info.label for n in view.nodes if n.info.kind == "aspp"][1:] == ["ASPP rate 6", "ASPP rate 12", "ASPP rate 18"]
