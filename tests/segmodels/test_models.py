"""Per-architecture tests, as a model library runs them (one tester class per architecture):
shapes for any input size, a golden output, deep supervision, torch.compile, torch.export,
ONNX, the paper's parameter count, and clear errors for options and encoders that do not fit."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

import segmodels
from conftest import assert_fingerprint, output_fingerprint
from segmodels.blocks import ASPP, AtrousConv, AtrousSeparableConv, SeparableConv, separable_cost_ratio
from segmodels.cards import count_flops, count_parameters
from segmodels.decoders import DeepLabV3PlusDecoder
from segmodels.encoders import create_encoder
from segmodels.models import DeepLabV3Plus, UNet, UNetPlusPlus

NUM_CLASSES = 3
SIZE = 64


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_golden_weights(model: nn.Module) -> nn.Module:
    """Deterministic weights that depend only on each parameter's name and shape (not on
    the order modules were created in): He-scaled normal for kernels, 1 + noise for norm
    scales, small noise for biases."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim > 1:
                parameter.copy_(noise * (2 / parameter[0].numel()) ** 0.5)
            else:
                parameter.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))
    return model


def golden_input() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


class ArchitectureTester:
    """What every architecture must do; subclasses name it, give its tiny options, its
    golden fingerprint and how many outputs training gets."""

    arch: str
    display_name: str
    tiny_options: dict = {}
    training_outputs: int = 1
    golden: dict

    def tiny_model(self, **options) -> segmodels.SegmentationModel:
        model = segmodels.create_model(self.arch, NUM_CLASSES, encoder="plain", pretrained=False, base_channels=4, **(self.tiny_options | options))
        return set_golden_weights(model).eval()

    def test_registered_under_its_display_name(self):
        assert self.arch in segmodels.ARCHITECTURES
        assert segmodels.ARCH_NAMES[self.arch] == self.display_name

    @pytest.mark.parametrize("size", [(64, 64), (37, 53), (1, 1), (90, 17)])
    def test_any_input_size_gives_logits_of_the_same_size(self, size):
        with torch.no_grad():
            out = self.tiny_model()(torch.rand(2, 3, *size))
        assert out.shape == (2, NUM_CLASSES, *size)
        assert torch.isfinite(out).all()

    def test_golden_output(self):
        with torch.no_grad():
            logits = self.tiny_model()(golden_input())
        assert_fingerprint(logits, self.golden, abs_tolerance=1e-2)

    def test_deep_supervision_outputs_in_training_only(self):
        model = self.tiny_model().train()
        outputs = model(torch.rand(1, 3, 32, 32), return_all=True)
        assert len(outputs) == self.training_outputs and all(o.shape == (1, NUM_CLASSES, 32, 32) for o in outputs)
        model.eval()
        with torch.no_grad():
            assert len(model(torch.rand(1, 3, 32, 32), return_all=True)) == 1

    def test_torch_compile_captures_one_graph(self):
        """Dynamo must trace the whole forward without a graph break (``fullgraph``);
        ``aot_eager`` runs the traced graph without the slow C++ code generation."""
        model = self.tiny_model()
        x = golden_input()
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))

    def test_torch_export(self):
        model = self.tiny_model()
        x = golden_input()
        exported = torch.export.export(model, (x,))
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), model(x))

    def test_onnx_export_matches_in_onnxruntime(self, tmp_path):
        onnxruntime = pytest.importorskip("onnxruntime", reason="pip install -r requirements-dev.txt (onnx, onnxscript, onnxruntime)")
        model = self.tiny_model()
        x = golden_input()
        torch.onnx.export(model, (x,), dynamo=True, verbose=False).save(tmp_path / "model.onnx")
        session = onnxruntime.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])
        (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(onnx_logits), model(x), atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize("encoder", ["efficientnet_lite0", "resnet50"])
    def test_pretrained_style_encoders_fit(self, encoder):
        model = segmodels.create_model(self.arch, NUM_CLASSES, encoder=encoder, pretrained=False, **self.tiny_options).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 50, 70)).shape == (1, NUM_CLASSES, 50, 70)

    def test_foreign_option_names_the_allowed_ones(self):
        allowed = segmodels.ARCHITECTURES[self.arch].options(("encoder", "num_classes"))
        with pytest.raises(ValueError, match=rf"{self.display_name.replace('+', '[+]')} has no option 'colour'; its options are: {', '.join(allowed)}"):
            segmodels.create_model(self.arch, NUM_CLASSES, colour="red")


class TestUNet(ArchitectureTester):
    arch, display_name = "unet", "U-Net"
    golden = {"class_sums": [-24405.395, 31941.238, -8936.137], "projection": 334.93}

    @pytest.mark.parametrize("base, millions", [(64, 31.04), (32, 7.76)])
    def test_paper_parameter_count(self, base, millions):
        model = segmodels.create_model("unet", 2, encoder="plain", base_channels=base)
        assert n_params(model) / 1e6 == pytest.approx(millions, rel=0.005)

    def test_transposed_upsampling_has_the_same_parameters_as_bilinear(self):
        bilinear = segmodels.create_model("unet", 2, base_channels=8)
        transposed = segmodels.create_model("unet", 2, base_channels=8, upsampling="transposed")
        assert n_params(bilinear) == n_params(transposed)
        assert transposed(torch.rand(1, 3, 48, 40)).shape == (1, 2, 48, 40)

    def test_cannot_be_pruned(self):
        model = self.tiny_model()
        assert model.pruning_depths == ()
        with pytest.raises(ValueError, match="UNet cannot be pruned"):
            model(torch.rand(1, 3, 32, 32), depth=2)
        with pytest.raises(ValueError, match="U-Net has no option 'depth'; its options are: decoder_channels, upsampling"):
            segmodels.create_model("unet", 2, depth=2)

    def test_output_stride_is_not_a_unet_option(self):
        with pytest.raises(ValueError, match="U-Net has no option 'output_stride'; its options are: decoder_channels, upsampling"):
            segmodels.create_model("unet", 2, output_stride=16)

    def test_dilated_encoder_is_refused(self):
        with pytest.raises(ValueError, match="UNet needs an undilated encoder.*strides 1, 2, 4, 8, 8"):
            UNet(create_encoder("plain", output_stride=8, base_channels=4), 2)


class TestUNetPlusPlus(ArchitectureTester):
    arch, display_name = "unetpp", "U-Net++"
    training_outputs = 4
    golden = {"class_sums": [262.987, -305.672, -852.689], "projection": 10.622}

    def test_paper_parameter_count_with_the_official_transposed_upsampling(self):
        model = segmodels.create_model("unetpp", 2, encoder="plain", base_channels=32)
        assert n_params(model) / 1e6 == pytest.approx(9.04, rel=0.005)

    def test_bilinear_variant_of_the_shipped_weights_is_wider(self):
        model = segmodels.create_model("unetpp", 2, encoder="plain", base_channels=32, upsampling="bilinear")
        assert n_params(model) / 1e6 == pytest.approx(9.16, rel=0.005)
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())

    @pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
    def test_pruning_is_cheaper_and_runs_only_the_needed_nodes(self, upsampling):
        model = self.tiny_model(upsampling=upsampling)
        assert model.pruning_depths == (1, 2, 3, 4)
        flops = [count_flops(model, (64, 64), depth=d) for d in model.pruning_depths]
        params = [count_parameters(model, depth=d) for d in model.pruning_depths]
        assert flops == sorted(flops) and len(set(flops)) == 4
        assert params == sorted(params) and len(set(params)) == 4
        called = []
        hooks = [m.register_forward_hook(lambda mod, i, o, name=name: called.append(name)) for name, m in model.decoder.nodes.items()]
        hooks += [m.register_forward_hook(lambda mod, i, o, index=index: called.append(f"encoder stage {index}")) for index, m in enumerate(model.encoder.stages)]
        with torch.no_grad():
            model(torch.rand(1, 3, 32, 32), depth=2)
        for h in hooks:
            h.remove()
        assert sorted(called) == ["encoder stage 0", "encoder stage 1", "x0_1", "x0_2", "x1_1"]

    def test_depth_option_attribute_and_bad_depths(self):
        model = self.tiny_model(depth=1)
        x = golden_input()
        with torch.no_grad():
            shallow = model(x)
            torch.testing.assert_close(shallow, model(x, depth=1))
            model.depth = None
            assert not torch.allclose(shallow, model(x))
        for bad in (0, 5, -1):
            with pytest.raises(ValueError, match=rf"depth must be one of 1, 2, 3, 4; got depth={bad}"):
                model(x, depth=bad)
        with pytest.raises(ValueError, match="depth=0"):
            segmodels.create_model("unetpp", 2, base_channels=4, depth=0)

    def test_without_deep_supervision_it_cannot_be_pruned(self):
        model = self.tiny_model(deep_supervision=False)
        assert model.pruning_depths == () and list(model.heads) == ["x0_4"]
        with pytest.raises(ValueError, match="cannot be pruned"):
            model(golden_input(), depth=2)

    def test_pruned_model_exports(self):
        model = self.tiny_model()
        x = golden_input()
        exported = torch.export.export(model, (x,), {"depth": 2})
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x, depth=2), model(x, depth=2))

    def test_dilated_encoder_is_refused(self):
        with pytest.raises(ValueError, match="UNetPlusPlus needs an undilated encoder"):
            UNetPlusPlus(create_encoder("plain", output_stride=8, base_channels=4), 2)


class TestUNet3Plus(ArchitectureTester):
    arch, display_name = "unet3p", "U-Net 3+"
    tiny_options = {"cat_channels": 4}
    training_outputs = 5
    golden = {"class_sums": [7272.859, 3038.556, -1171.822], "projection": -97.481}

    @pytest.mark.parametrize("deep_supervision, millions", [(True, 27.00), (False, 26.97)])
    def test_paper_parameter_count(self, deep_supervision, millions):
        model = segmodels.create_model("unet3p", 2, encoder="plain", base_channels=64, deep_supervision=deep_supervision)
        assert round(n_params(model) / 1e6, 2) == millions


class TestDeepLabV3Plus(ArchitectureTester):
    """The dense form (``separable=False``), which the shipped weights were trained with."""

    arch, display_name = "deeplabv3p", "DeepLabV3+"
    tiny_options = {"aspp_channels": 8, "low_level_channels": 4, "separable": False}
    golden = {"class_sums": [-161.505, 420.624, 1407.778], "projection": 38.139}

    @pytest.mark.parametrize("stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
    def test_output_stride_sets_the_encoder_and_aspp_rates(self, stride, rates):
        model = segmodels.create_model("deeplabv3p", 2, encoder="resnet50", pretrained=False, output_stride=stride)
        assert model.decoder.aspp.rates == rates
        assert model.output_stride == stride and max(model.encoder.reductions) == stride
        assert model.decoder.low_level_project[0].out_channels == 48

    def test_unsupported_output_stride(self):
        with pytest.raises(ValueError, match="DeepLabV3\\+ runs at output_stride 16 or 8, got 4"):
            segmodels.create_model("deeplabv3p", 2, encoder="resnet50", pretrained=False, output_stride=4)

    def test_encoder_at_another_stride_is_refused(self):
        with pytest.raises(ValueError, match="output_stride 16 needs an encoder whose deepest feature has stride 16; this encoder's features have strides 2, 4, 8, 16, 32"):
            DeepLabV3Plus(create_encoder("efficientnet_lite0", pretrained=False), 2)
        with pytest.raises(ValueError, match="stride 8"):
            DeepLabV3Plus(create_encoder("plain", base_channels=4), 2, output_stride=8)

    @pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")), reason="inductor generates C++ and needs a compiler")
    @pytest.mark.slow
    def test_inductor_compiles_and_matches(self):
        """The full ``torch.compile`` path with C++ code generation, on the smallest model."""
        model = self.tiny_model()
        x = golden_input()
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


class TestDeepLabV3PlusSeparable(ArchitectureTester):
    """The default, as published (DeepLabV3+ Sec. 3.2): atrous separable convs in ASPP and
    depthwise separable convs in the decoder."""

    arch, display_name = "deeplabv3p", "DeepLabV3+"
    tiny_options = {"aspp_channels": 8, "low_level_channels": 4}
    golden = {"class_sums": [537.943, 1326.554, -312.009], "projection": 24.003}

    def test_separable_is_the_default_in_aspp_and_both_refining_convs(self):
        decoder = self.tiny_model().decoder
        atrous = [branch for branch in decoder.aspp.branches if isinstance(branch, AtrousSeparableConv)]
        assert [branch.rate for branch in atrous] == [6, 12, 18]
        assert [branch.depthwise.dilation for branch in atrous] == [(6, 6), (12, 12), (18, 18)]
        for conv in (*atrous, *decoder.refine):
            assert isinstance(conv, SeparableConv)
            assert conv.depthwise.groups == conv.depthwise.in_channels == conv.depthwise.out_channels == conv.pointwise.in_channels
            assert conv.depthwise.kernel_size == (3, 3) and conv.pointwise.kernel_size == (1, 1)
        dense_3x3 = [m for m in decoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
        assert dense_3x3 == []

    def test_paper_sizes_parameter_count(self):
        """ASPP and decoder at the paper's sizes (Sec. 3.1-3.2): a 2048-channel deepest feature
        at output stride 16, ASPP width 256, the 256-channel stride-4 feature projected to 48,
        two refining convs of 256. Convolutions have no bias (batch norm follows: 2 parameters
        per channel), except image pooling's 1x1 conv, which has a bias and no batch norm."""
        aspp_1x1 = 2048 * 256 + 2 * 256
        atrous_separable = (3 * 3 * 2048 + 2 * 2048) + (2048 * 256 + 2 * 256)  # depthwise + BN, pointwise + BN
        image_pooling = 2048 * 256 + 256
        aspp_projection = 5 * 256 * 256 + 2 * 256
        low_level = 256 * 48 + 2 * 48
        refine_1 = (3 * 3 * 304 + 2 * 304) + (304 * 256 + 2 * 256)  # 304 = 256 + 48 after concatenation
        refine_2 = (3 * 3 * 256 + 2 * 256) + (256 * 256 + 2 * 256)
        by_hand = aspp_1x1 + 3 * atrous_separable + image_pooling + aspp_projection + low_level + refine_1 + refine_2
        decoder = DeepLabV3PlusDecoder(encoder_channels=(64, 256, 512, 1024, 2048), encoder_reductions=(2, 4, 8, 16, 16))
        assert n_params(decoder) == by_hand
        dense = DeepLabV3PlusDecoder((64, 256, 512, 1024, 2048), (2, 4, 8, 16, 16), separable=False)
        assert n_params(dense) - n_params(decoder) == (3 * (9 * 2048 * 256 - 9 * 2048 - 2048 * 256 - 2 * 2048) + (9 * 304 * 256 - 9 * 304 - 304 * 256 - 2 * 304)
                                                       + (9 * 256 * 256 - 9 * 256 - 256 * 256 - 2 * 256))

    def test_camvid_sized_model_is_smaller_and_cheaper_than_the_dense_one(self):
        sizes = {}
        for separable in (True, False):
            model = segmodels.create_model("deeplabv3p", 11, encoder="efficientnet_lite0", pretrained=False, aspp_channels=176, separable=separable)
            sizes[separable] = (n_params(model), count_flops(model, (64, 64)))
        assert sizes[True][0] < sizes[False][0] and sizes[True][1] < sizes[False][1]

    @pytest.mark.parametrize("in_channels, out_channels, rate", [(7, 5, 1), (16, 176, 6)])
    def test_separable_conv_costs_one_over_c_out_plus_one_over_k_squared(self, in_channels, out_channels, rate):
        """Weights and FLOPs of the two convolutions against a dense 3x3 conv (MobileNets, Sec. 3.1, from Eqs. 2 and 5)."""
        separable = AtrousSeparableConv(in_channels, out_channels, rate).eval()
        dense = AtrousConv(in_channels, out_channels, rate).eval()
        weights = separable.depthwise.weight.numel() + separable.pointwise.weight.numel()
        assert weights / dense[0].weight.numel() == pytest.approx(1 / out_channels + 1 / 9) == separable.cost_ratio == separable_cost_ratio(out_channels)
        flops = {}
        for name, conv in (("separable", separable), ("dense", dense)):
            counter = torch.utils.flop_counter.FlopCounterMode(display=False)
            with counter, torch.no_grad():
                out = conv(torch.rand(1, in_channels, 20, 24))
            flops[name] = counter.get_total_flops()
            assert out.shape == (1, out_channels, 20, 24)
        assert flops["separable"] / flops["dense"] == pytest.approx(separable.cost_ratio)


def test_architectures_are_listed_in_display_order():
    assert list(segmodels.ARCHITECTURES) == ["unet", "unetpp", "unet3p", "deeplabv3p"]
    assert dict(segmodels.ARCH_NAMES) == {"unet": "U-Net", "unetpp": "U-Net++", "unet3p": "U-Net 3+", "deeplabv3p": "DeepLabV3+"}


def test_atrous_conv_keeps_size_and_aspp_concatenates_five_branches():
    conv = AtrousConv(4, 4, rate=6)
    assert conv(torch.rand(1, 4, 20, 20)).shape == (1, 4, 20, 20)
    aspp = ASPP(8, 16, (6, 12, 18)).eval()
    assert len(aspp.branches) == 5
    assert aspp(torch.rand(1, 8, 9, 11)).shape == (1, 16, 9, 11)


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture 'segnet'; choose one of unet, unetpp, unet3p, deeplabv3p"):
        segmodels.create_model("segnet", 2)
    with pytest.raises(ValueError, match="unknown encoder 'vgg'"):
        segmodels.create_model("unet", 2, encoder="vgg")


def test_missing_resnet_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(segmodels.encoders.PretrainedWeightsMissing, match="not on this machine"):
        segmodels.create_model("unet", 2, encoder="resnet18", pretrained=True)


def test_create_model_is_documented():
    doc = segmodels.create_model.__doc__
    for word in ("unetpp", "deeplabv3p", "efficientnet_lite0", "depth", "output_stride", "upsampling"):
        assert word in doc


def test_output_fingerprint_tells_models_apart():
    logits = torch.rand(1, 3, 8, 8)
    assert output_fingerprint(logits) == output_fingerprint(logits.clone())
    assert output_fingerprint(logits) != output_fingerprint(logits.flip(-1))
