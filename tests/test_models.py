import pytest
import torch

import segmodels
from segmodels.blocks import ASPP, SPP, AtrousConv
from segmodels.cards import count_flops, count_parameters

ARCHS = list(segmodels.ARCHITECTURES)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "arch, base, expected_millions",
    [("unet", 64, 31.0), ("unet", 32, 7.76), ("unetpp", 32, 9.04), ("unet3p", 64, 26.97)],
)
def test_paper_parameter_counts(arch, base, expected_millions):
    model = segmodels.create_model(arch, 2, encoder="plain", base_channels=base)
    assert n_params(model) / 1e6 == pytest.approx(expected_millions, rel=0.02)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (1, 1), (90, 17)])
def test_any_input_size_gives_logits_of_the_same_size(arch, size):
    model = segmodels.create_model(arch, 5, encoder="plain", base_channels=4).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "resnet18"])
def test_pretrained_style_encoders_fit_every_decoder(arch, encoder):
    model = segmodels.create_model(arch, 3, encoder=encoder, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 50, 70)).shape == (1, 3, 50, 70)


@pytest.mark.parametrize("arch, heads", [("unet", 1), ("unetpp", 4), ("unet3p", 5), ("deeplabv3p", 1)])
def test_deep_supervision_outputs_in_training_only(arch, heads):
    model = segmodels.create_model(arch, 3, encoder="plain", base_channels=4)
    outputs = model(torch.rand(1, 3, 32, 32), return_all=True)
    assert len(outputs) == heads and all(o.shape == (1, 3, 32, 32) for o in outputs)
    model.eval()
    with torch.no_grad():
        assert len(model(torch.rand(1, 3, 32, 32), return_all=True)) == 1


def test_unet_transposed_upsampling_has_same_parameters_as_bilinear():
    bilinear = segmodels.create_model("unet", 2, base_channels=8)
    transposed = segmodels.create_model("unet", 2, base_channels=8, upsampling="transposed")
    assert n_params(bilinear) == n_params(transposed)
    assert transposed(torch.rand(1, 3, 48, 40)).shape == (1, 2, 48, 40)


def test_unetpp_pruning_is_cheaper_and_uses_only_needed_nodes():
    model = segmodels.create_model("unetpp", 4, encoder="plain", base_channels=8).eval()
    flops = [count_flops(model, (64, 64), depth=d) for d in (1, 2, 3, 4)]
    params = [count_parameters(model, depth=d) for d in (1, 2, 3, 4)]
    assert flops == sorted(flops) and len(set(flops)) == 4
    assert params == sorted(params) and len(set(params)) == 4
    called = []
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: called.append(name)) for name, m in model.nodes.items()]
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32), depth=2)
    for h in hooks:
        h.remove()
    assert sorted(called) == ["x0_1", "x0_2", "x1_1"]


def test_unetpp_depth_attribute_and_bad_depth():
    model = segmodels.create_model("unetpp", 2, base_channels=4, depth=1).eval()
    with torch.no_grad():
        shallow = model(torch.rand(1, 3, 32, 32))
        model.depth = 4
        deep = model(torch.rand(1, 3, 32, 32))
    assert shallow.shape == deep.shape
    with pytest.raises(ValueError, match="depth"):
        model(torch.rand(1, 3, 32, 32), depth=5)


def test_deeplab_output_stride_and_aspp_rates():
    for stride, rates in ((16, (6, 12, 18)), (8, (12, 24, 36))):
        model = segmodels.create_model("deeplabv3p", 2, encoder="resnet18", pretrained=False, output_stride=stride)
        assert model.aspp.rates == rates
        assert max(model.encoder.reductions) == stride
        assert model.low_level_project[0].out_channels == 48
    with pytest.raises(ValueError):
        segmodels.create_model("deeplabv3p", 2, encoder="resnet18", pretrained=False, output_stride=4)


def test_spp_gives_fixed_length_for_any_size():
    spp = SPP((1, 2, 4))
    for size in ((7, 9), (32, 32), (100, 3)):
        assert spp(torch.rand(2, 5, *size)).shape == (2, spp.output_length(5)) == (2, 5 * 21)


def test_atrous_conv_keeps_size_and_aspp_concatenates_five_branches():
    conv = AtrousConv(4, 4, rate=6)
    assert conv(torch.rand(1, 4, 20, 20)).shape == (1, 4, 20, 20)
    aspp = ASPP(8, 16, (6, 12, 18)).eval()
    assert len(aspp.branches) == 5
    assert aspp(torch.rand(1, 8, 9, 11)).shape == (1, 16, 9, 11)


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        segmodels.create_model("segnet", 2)
    with pytest.raises(ValueError, match="unknown encoder"):
        segmodels.create_model("unet", 2, encoder="vgg")


def test_missing_resnet_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(segmodels.encoders.PretrainedWeightsMissing, match="not on this machine"):
        segmodels.create_model("unet", 2, encoder="resnet18", pretrained=True)


def test_create_model_is_documented():
    doc = segmodels.create_model.__doc__
    for word in ("unetpp", "deeplabv3p", "efficientnet_lite0", "depth", "output_stride", "upsampling"):
        assert word in doc
