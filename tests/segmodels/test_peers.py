"""segmodels.peers: segmentation_models_pytorch prepared and run exactly as segmodels' own
models (same input contract, batch norms folded, channels_last, the Predictor's runtimes),
its parameter-matched width, and the rows of ``bench --smp``. Small sizes: each test takes seconds."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segmodels import create_model
from segmodels.benchmark import time_interleaved
from segmodels.cards import count_parameters
from segmodels.cli import main
from segmodels.models.base import IMAGENET_MEAN, IMAGENET_STD
from segmodels.runtime import onnxruntime_available, prepare_for_inference

smp = pytest.importorskip("segmentation_models_pytorch", reason="pip install -r requirements-dev.txt (segmentation-models-pytorch)")
from segmodels.peers import build_smp, compare_with_smp, format_comparison, matched_width, runtime_runners  # noqa: E402

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def deeplab() -> nn.Module:
    torch.manual_seed(0)
    peer = build_smp("deeplabv3p", NUM_CLASSES, "efficientnet_lite0", width=32)
    with torch.no_grad():  # batch-norm statistics that are not the identity, so folding has work to do
        for module in peer.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return peer.eval()


def test_peer_takes_our_input_contract(deeplab):
    """Images in [0, 1] of any size: normalised, zero-padded to smp's multiple, cropped back."""
    image = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        logits = deeplab(image)
        normalised = (image - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        expected = deeplab.model(F.pad(normalised, (0, 64 - 53, 0, 48 - 37)))[..., :37, :53]
    assert logits.shape == (1, NUM_CLASSES, 37, 53)
    torch.testing.assert_close(logits, expected)
    assert deeplab.divisor == 16 and build_smp("unet", NUM_CLASSES, "efficientnet_lite0", width=16).divisor == 1  # smp's U-Net takes any size


def test_no_weights_are_downloaded(monkeypatch):
    """smp builds its timm encoder with pretrained=False (encoder_weights=None)."""
    import timm

    create, asked = timm.create_model, []

    def recording(*args, **kwargs):
        asked.append(kwargs.get("pretrained", False))
        return create(*args, **kwargs)

    def refuse(*_args, **_kwargs):
        raise AssertionError("pretrained weights were loaded")

    monkeypatch.setattr(timm, "create_model", recording)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    build_smp("unet", NUM_CLASSES, "efficientnet_lite0", width=16)
    assert asked and not any(asked)


def test_preparation_folds_every_batch_norm_and_keeps_the_output(deeplab):
    prepared = prepare_for_inference(deeplab, channels_last=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in deeplab.modules())  # the original is left as it was
    assert prepared.model.segmentation_head[0].weight.is_contiguous(memory_format=torch.channels_last)
    image = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(prepared(image.contiguous(memory_format=torch.channels_last)), deeplab(image), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("runtime", ["torch", "torch-bf16", "onnxruntime"])
def test_every_predictor_runtime_runs_the_prepared_peer(deeplab, runtime):
    if runtime == "onnxruntime" and not onnxruntime_available():
        pytest.skip("pip install -r requirements-dev.txt (onnx, onnxruntime)")
    image = torch.rand(1, 3, 48, 64)
    (run,) = runtime_runners(prepare_for_inference(deeplab, channels_last=True), [runtime], (48, 64), threads=1).values()
    labels = run(image)
    with torch.no_grad():
        expected = deeplab(image).argmax(1)[0].numpy()
    assert labels.shape == (48, 64) and labels.dtype.name == "uint8"
    agreement = (labels == expected).mean()
    assert agreement == 1.0 if runtime != "torch-bf16" else agreement > 0.9


def test_matched_width_is_the_closest_parameter_count():
    target = count_parameters(build_smp("deeplabv3p", NUM_CLASSES, "efficientnet_lite0", width=100)) + 500
    width = matched_width("deeplabv3p", NUM_CLASSES, "efficientnet_lite0", target)
    counts = {w: count_parameters(build_smp("deeplabv3p", NUM_CLASSES, "efficientnet_lite0", width=w)) for w in (width - 1, width, width + 1)}
    assert abs(counts[width] - target) == min(abs(count - target) for count in counts.values())
    assert counts[width - 1] < counts[width] < counts[width + 1]


def test_matched_unet_is_within_two_percent_of_ours():
    ours = create_model("unet", NUM_CLASSES, encoder="efficientnet_lite0", pretrained=False)
    width = matched_width("unet", NUM_CLASSES, "efficientnet_lite0", count_parameters(ours))
    assert count_parameters(build_smp("unet", NUM_CLASSES, "efficientnet_lite0", width)) == pytest.approx(count_parameters(ours), rel=0.02)


def test_time_interleaved_shuffles_every_round():
    calls = []
    runners = {key: (lambda key=key: calls.append(key)) for key in "abcd"}
    timings = time_interleaved(runners, rounds=6, warmup=1)
    assert Counter(calls) == {key: 7 for key in "abcd"}
    rounds = [tuple(calls[4 + 4 * r: 8 + 4 * r]) for r in range(6)]
    assert all(sorted(order) == list("abcd") for order in rounds) and len(set(rounds)) > 1
    assert all(len(values) == 6 and min(values) >= 0 for values in timings.values())


def test_comparison_rows_carry_both_sides_sizes():
    rows = compare_with_smp(["deeplabv3p", "unet3p"], NUM_CLASSES, "efficientnet_lite0", (32, 48), ["torch"], rounds=1, options={"deeplabv3p": {"aspp_channels": 32}})
    assert [row["model"].split(" (")[0] for row in rows] == ["DeepLabV3+", "smp DeepLabV3+", "smp DeepLabV3+ matched"]
    ours = create_model("deeplabv3p", NUM_CLASSES, encoder="efficientnet_lite0", pretrained=False, aspp_channels=32)
    for row in rows:
        assert row["runtime"] == "torch" and row["median_ms"] > 0 and row["gflops"] > 0
        assert row["segmodels_params_m"] == pytest.approx(count_parameters(ours) / 1e6)
    assert rows[0]["params_m"] == rows[0]["segmodels_params_m"] and rows[0]["gflops"] == rows[0]["segmodels_gflops"]
    assert rows[2]["params_m"] == pytest.approx(rows[0]["params_m"], rel=0.02)
    assert "/ ours" in format_comparison(rows) and "batch norms folded, channels_last" in format_comparison(rows)


def test_bench_smp_command(tmp_path, capsys):
    out = tmp_path / "rows.json"
    main(["bench", "--smp", "--arch", "deeplabv3p", "--size", "32x48", "--runtimes", "torch", "--rounds", "1", "--options", '{"deeplabv3p": {"aspp_channels": 16}}', "--json", str(out)])
    rows = json.loads(out.read_text())
    assert len(rows) == 3 and all({"params_m", "gflops", "segmodels_params_m", "segmodels_gflops"} <= set(row) for row in rows)
    assert "smp DeepLabV3+ matched (width" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--fold-bn"], "prepares both sides as segmodels.runtime.Predictor does.*leave out --fold-bn"),
    (["--encoder", "plain"], "no 'plain' encoder"),
    (["--options", '{"deeplabv3p": 176}'], "--options maps architectures to their options"),
])
def test_bench_smp_refuses_what_would_make_it_unequal(arguments, message):
    with pytest.raises(SystemExit, match=message):
        main(["bench", "--smp", "--arch", "deeplabv3p", "--size", "32", "--rounds", "1", "--runtimes", "torch", *arguments])
