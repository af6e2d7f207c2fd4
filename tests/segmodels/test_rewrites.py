"""segmodels.rewrites: the rewritten models compute what the shipped ones compute."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from segmodels import zoo
from segmodels.blocks import SegmentationHead
from segmodels.data.camvid import CamVidDataset
from segmodels.decoders.unet import UpConv
from segmodels.receptive_field import theoretical_receptive_field
from segmodels.rewrites import CroppedUpConv, Float32Logits, rewrite_for_inference
from segmodels.runtime import prepare_for_inference

SHIPPED = [name for name in zoo.list_models() if name.startswith("camvid/")]


def logits(model, x, depth=None, bf16=False):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x, **({} if depth is None else {"depth": depth}))


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    model = zoo.pretrained(request.param)
    return request.param, model, rewrite_for_inference(copy.deepcopy(model)), max(model.pruning_depths, default=None)


def test_every_shipped_camvid_model_is_tested():
    assert {name.split("/")[1] for name in SHIPPED} == {"unet", "unetpp", "unet3p", "deeplabv3p"}


def test_rewritten_logits_match_on_random_inputs(shipped):
    _, model, rewritten, depth = shipped
    for seed, size in enumerate([(64, 96), (37, 53), (120, 161)]):
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))
        reference = logits(model, x, depth)
        torch.testing.assert_close(logits(rewritten, x, depth), reference, rtol=0, atol=1e-5 * reference.abs().max().item())


def test_every_head_and_bilinear_up_convolution_is_rewritten(shipped):
    name, model, rewritten, _ = shipped
    heads = [n for n, m in model.named_modules() if type(m) is SegmentationHead]
    ups = [n for n, m in model.named_modules() if type(m) is UpConv and m.mode == "bilinear"]
    assert heads and all(type(rewritten.get_submodule(n)) is Float32Logits for n in heads)
    assert all(type(rewritten.get_submodule(n)) is CroppedUpConv for n in ups)
    assert bool(ups) == name.endswith("/unet")
    assert sum(p.numel() for p in rewritten.parameters()) == sum(p.numel() for p in model.parameters())


def test_logits_leave_the_heads_in_float32_under_bfloat16_autocast(shipped):
    _, model, rewritten, depth = shipped
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    assert logits(model, x, depth, bf16=True).dtype == torch.bfloat16
    assert logits(rewritten, x, depth, bf16=True).dtype == torch.float32


def test_prepare_for_inference_rewrites_and_keeps_the_logits():
    model = zoo.pretrained("camvid/unet")
    prepared = prepare_for_inference(model, channels_last=True)
    assert any(isinstance(m, CroppedUpConv) for m in prepared.modules())
    x = torch.rand(1, 3, 72, 100, generator=torch.Generator().manual_seed(1))
    reference = logits(model, x)
    torch.testing.assert_close(logits(prepared, x.contiguous(memory_format=torch.channels_last)), reference, rtol=0, atol=1e-3 * reference.abs().max().item())


def test_cropped_up_convolution_equals_the_padded_one_at_odd_sizes():
    up = UpConv(6, 4, "bilinear").eval()
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(CroppedUpConv(up)(x), up(x))
        assert CroppedUpConv(up)(x).shape == (2, 4, 10, 14)


def test_transposed_up_convolution_is_not_a_cropped_one():
    with pytest.raises(ValueError, match="bilinear"):
        CroppedUpConv(UpConv(6, 4, "transposed"))


def test_receptive_fields_of_the_rewritten_unet_are_the_original_ones():
    """Sizes and jumps of every layer; the start of the logits' field (the up-convolution's own
    output is one row and column larger before its crop)."""
    model = zoo.pretrained("camvid/unet")
    fields = theoretical_receptive_field(model, (64, 64))
    rewritten = theoretical_receptive_field(rewrite_for_inference(copy.deepcopy(model)), (64, 64))
    assert [(f.name, f.op, f.kernel, f.stride, f.size, f.jump) for f in rewritten] == [(f.name, f.op, f.kernel, f.stride, f.size, f.jump) for f in fields]
    assert rewritten[-1].start == fields[-1].start


def test_peer_models_are_left_alone():
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=3, decoder_channels=[16, 8, 8, 8, 8]).eval()
    before = [type(m) for m in model.modules()]
    assert [type(m) for m in rewrite_for_inference(model).modules()] == before


def test_labels_on_camvid_val_frames_agree(camvid_root, shipped):
    _, model, rewritten, depth = shipped
    dataset = CamVidDataset(camvid_root, "val")
    for index in (0, len(dataset) // 2):
        x = dataset[index][0].unsqueeze(0)
        assert torch.equal(logits(rewritten, x, depth).argmax(1), logits(model, x, depth).argmax(1))
        bf16 = (logits(rewritten, x, depth, bf16=True).argmax(1) == logits(model, x, depth, bf16=True).argmax(1)).float().mean().item()
        assert bf16 >= 0.999, f"bfloat16 labels agree on {bf16:.4%} of the pixels"


def test_float32_logits_head_is_the_same_convolution():
    head = SegmentationHead(8, 3, kernel_size=3).eval()
    x = torch.randn(1, 8, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(Float32Logits(head)(x), F.conv2d(x, head.weight, head.bias, padding=1))
