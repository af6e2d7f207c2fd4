"""segmodels.runtime: batch-norm folding, the Predictor's caches, runtimes, and the RuntimeSelector's idle-time latency benchmarks."""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from segmodels import create_model, zoo
from segmodels.runtime import (
    BenchmarkInterrupted,
    Latency,
    OnnxRuntime,
    Predictor,
    RuntimeSelector,
    TorchRuntime,
    device_runtimes,
    fold_batchnorm,
    onnxruntime_available,
    prepare_for_inference,
    runtime_named,
)


def trained_like(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters, as training would."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", ["unet", "unetpp", "unet3p", "deeplabv3p"])
def test_folding_removes_every_batch_norm_and_keeps_the_outputs(arch):
    torch.manual_seed(0)
    model = trained_like(create_model(arch, 3, encoder="plain", pretrained=False, base_channels=4))
    x = torch.rand(1, 3, 48, 40)
    with torch.inference_mode():
        expected = model(x)
    folded = prepare_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    with torch.inference_mode():
        assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)
        if model.pruning_depths:
            assert torch.allclose(folded(x, depth=2), model(x, depth=2), atol=1e-4, rtol=1e-4)


def test_folding_a_timm_encoder_keeps_its_activation():
    model = trained_like(create_model("unet", 4, encoder="efficientnet_lite0", pretrained=False))
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
    folded = prepare_for_inference(model)
    with torch.inference_mode():
        assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_fold_needs_eval_mode_and_skips_a_norm_not_after_a_conv():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model, torch.rand(1, 3, 8, 8))
    trained_like(model)
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        expected = model(x)
    assert fold_batchnorm(model, x) == 1
    assert isinstance(model[1], nn.Identity) and isinstance(model[3], nn.BatchNorm2d)
    with torch.inference_mode():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_predictor_one_pass_and_the_trained_model_size(own_zoo):
    predictor = Predictor(own_zoo, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    x = predictor.to_tensor(image)
    raw = zoo.read_model("shapes/unetpp", own_zoo)
    prediction = predictor.predict("shapes/unetpp", x, depth=2)
    with torch.inference_mode():
        expected = raw(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, depth=2).argmax(1)[0].numpy()
    assert prediction.labels.shape == (40, 56) and prediction.forward_ms > 0
    assert (prediction.labels == expected).mean() > 0.999
    assert predictor.parameters("shapes/unetpp") == sum(p.numel() for p in raw.parameters())  # before folding
    assert predictor.parameters("shapes/unetpp", 1) < predictor.parameters("shapes/unetpp", 4)
    with pytest.raises(ValueError, match="depths: 1, 2, 3, 4"):
        predictor.predict("shapes/unetpp", x, depth=7)
    with pytest.raises(ValueError, match="cannot be pruned"):
        predictor.predict("shapes/unet", x, depth=2)


def test_predictor_and_zoo_reload_a_replaced_weight_file(own_zoo):
    predictor = Predictor(own_zoo, device="cpu")
    first = predictor.model("shapes/unet")
    assert predictor.model("shapes/unet") is first
    cached = zoo.load_model("shapes/unet", "cpu", own_zoo)
    for suffix in (".pt", ".json"):  # replace the model by another architecture's files
        shutil.copy(own_zoo / "shapes" / f"deeplabv3p{suffix}", own_zoo / "shapes" / f"unet{suffix}.new")
        os.replace(own_zoo / "shapes" / f"unet{suffix}.new", own_zoo / "shapes" / f"unet{suffix}")
    assert predictor.model("shapes/unet") is not first and type(predictor.model("shapes/unet")).__name__ == "DeepLabV3Plus"
    assert zoo.load_model("shapes/unet", "cpu", own_zoo) is not cached


def test_latency_is_measured_once_per_key(own_zoo):
    selector = RuntimeSelector(Predictor(own_zoo, device="cpu"))
    assert selector.latency("shapes/unet", (32, 32)) is None
    measured = selector.measure_latency("shapes/unet", (32, 32), warmup=0, repeats=4)
    assert measured.samples == 4 and measured.median_ms > 0 and measured.source == "benchmark"
    assert selector.latency("shapes/unet", (32, 32)) == measured
    assert selector.latency("shapes/unet", (32, 48)) is None and selector.latency("shapes/unetpp", (32, 32), depth=1) is None


class FakeClock:
    """A monotonic clock that moves only when the test says so; ``wait_for_read`` returns once
    someone (the benchmark thread) has read it after the call."""

    def __init__(self) -> None:
        self.now = 0.0
        self._read = threading.Event()

    def __call__(self) -> float:
        self._read.set()
        return self.now

    def wait_for_read(self) -> None:
        self._read.clear()
        assert self._read.wait(10), "the benchmark thread never looked at the clock"


def wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_idle_benchmarker_waits_for_quiet(tiny_config):
    from demo.benchmarker import IdleBenchmarker

    predictor = RuntimeSelector(Predictor(tiny_config().weights_dir, device="cpu"))
    clock = FakeClock()
    benchmarker = IdleBenchmarker(predictor, idle_seconds=0.5, warmup=0, repeats=2, clock=clock)
    benchmarker.start()
    with benchmarker.busy():
        benchmarker.request("shapes/unet", (32, 32), None)
        clock.now = 100.0
        clock.wait_for_read()
        assert predictor.latency("shapes/unet", (32, 32)) is None and benchmarker.pending() == 1  # a request is running
    clock.now = 100.25
    clock.wait_for_read()
    assert predictor.latency("shapes/unet", (32, 32)) is None and benchmarker.pending() == 1  # quiet for less than idle_seconds
    clock.now = 100.5
    wait_until(lambda: predictor.latency("shapes/unet", (32, 32)) is not None)
    assert benchmarker.pending() == 0


def test_the_idle_hook_runs_once_per_quiet_spell_after_the_pending_benchmarks(tiny_config):
    from demo.benchmarker import IdleBenchmarker

    selector = RuntimeSelector(Predictor(tiny_config().weights_dir, device="cpu"))
    clock, calls = FakeClock(), []
    benchmarker = IdleBenchmarker(selector, idle_seconds=0.5, warmup=0, repeats=2, clock=clock,
                                  on_idle=lambda: calls.append(selector.latency("shapes/unet", (32, 32)) is not None))
    with benchmarker.busy():
        benchmarker.request("shapes/unet", (32, 32), None)
    clock.now = 10.0
    benchmarker.start()
    wait_until(lambda: calls)
    assert calls == [True]  # after the benchmark that was pending, once
    with benchmarker.busy():
        pass
    clock.now = 10.25
    clock.wait_for_read()
    assert calls == [True]  # not before the spell is idle_seconds long
    clock.now = 20.0
    wait_until(lambda: len(calls) == 2)


def test_a_noisy_or_old_benchmark_is_asked_for_again(tiny_config):
    from demo.benchmarker import IdleBenchmarker

    selector = RuntimeSelector.for_backend(Predictor(tiny_config().weights_dir, device="cpu"), "torch")
    benchmarker = IdleBenchmarker(selector, max_age_s=60)
    for latency, asked in ((Latency(10.0, 1.0, 5, "benchmark", time.time()), False), (Latency(10.0, 6.0, 5, "benchmark", time.time()), True),
                           (Latency(10.0, 1.0, 5, "benchmark", time.time() - 120), True)):
        selector.keep({("shapes/unet", None): latency}, (32, 32))
        benchmarker.request("shapes/unet", (32, 32), None)
        assert (benchmarker.pending() == 1) is asked, latency
        benchmarker._pending.clear()


def test_a_request_interrupts_a_benchmark_which_runs_again_when_idle(tiny_config, monkeypatch):
    from demo.benchmarker import IdleBenchmarker

    predictor = RuntimeSelector.for_backend(Predictor(tiny_config().weights_dir, device="cpu"), "torch")
    with pytest.raises(BenchmarkInterrupted):
        predictor.measure_latency("shapes/unet", (32, 32), warmup=0, repeats=3, interrupted=lambda: True)
    assert predictor.latency("shapes/unet", (32, 32)) is None
    passes, request_made = [], threading.Event()
    (runtime,) = predictor.runtimes
    labels = runtime.labels

    def pass_held_until_a_request(*args):
        passes.append(1)
        request_made.wait(30)
        return labels(*args)

    monkeypatch.setattr(runtime, "labels", pass_held_until_a_request)
    clock = FakeClock()
    benchmarker = IdleBenchmarker(predictor, idle_seconds=0.5, warmup=0, repeats=40, clock=clock)
    benchmarker.request("shapes/unet", (32, 32), None)
    clock.now = 1.0
    benchmarker.start()
    wait_until(lambda: passes)
    with benchmarker.busy():
        passes_before = len(passes)
        request_made.set()
        wait_until(lambda: benchmarker.pending() == 1)  # interrupted and asked for again
        assert len(passes) == passes_before  # no pass begun after the one under way
        assert predictor.latency("shapes/unet", (32, 32)) is None
    clock.now = 2.0
    wait_until(lambda: predictor.latency("shapes/unet", (32, 32)) is not None)
    assert predictor.latency("shapes/unet", (32, 32)).samples == 40


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime and onnx are not installed")
def test_a_predictor_runs_every_pass_with_its_runtime_from_the_first(own_zoo):
    """Deterministic: a Predictor given ONNX Runtime runs it from the first pass (its session
    built then), before and after a benchmark, with PyTorch's labels; another depth or size is
    another session."""
    image = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    reference = Predictor(own_zoo, device="cpu")
    predictor = Predictor(own_zoo, device="cpu", runtime=OnnxRuntime())
    selector = RuntimeSelector(predictor, [predictor.runtime])
    x = predictor.to_tensor(image)
    for name, depth in (("shapes/unetpp", 2), ("shapes/deeplabv3p", None)):
        before = predictor.predict(name, x, depth)
        assert before.backend == "onnxruntime" and before.labels.dtype == np.uint8 and before.labels.shape == (40, 56)
        measured = selector.measure_latency(name, (40, 56), depth, warmup=0, repeats=2)
        after = selector.predict(name, x, depth)
        assert measured.runtime == after.backend == "onnxruntime" and np.array_equal(before.labels, after.labels)
        expected = reference.predict(name, reference.to_tensor(image), depth).labels
        assert (after.labels == expected).mean() > 0.999
    assert predictor.predict("shapes/unetpp", x, 3).backend == "onnxruntime"
    assert predictor.model("shapes/deeplabv3p").training is False  # exporting left the shared model in eval mode


def test_runtimes_must_be_known_and_fit_the_device(own_zoo):
    predictor = Predictor(own_zoo, device="cpu")
    with pytest.raises(ValueError, match="backend must be one of auto, torch, torch-bf16, onnxruntime"):
        RuntimeSelector.for_backend(predictor, "tensorrt")
    with pytest.raises(ValueError, match="runtime must be one of torch, torch-bf16, torch-fp16, onnxruntime"):
        runtime_named("tensorrt", torch.device("cpu"))
    with pytest.raises(ValueError, match="the torch-fp16 runtime does not run on device cpu"):
        Predictor(own_zoo, device="cpu", runtime=TorchRuntime(torch.float16))
    if onnxruntime_available():
        with pytest.raises(ValueError, match="the onnxruntime runtime does not run on device cuda"):
            Predictor(own_zoo, device="cuda", runtime=OnnxRuntime())
    assert [r.name for r in RuntimeSelector.for_backend(predictor, "torch").runtimes] == ["torch"]
    assert [r.name for r in RuntimeSelector(predictor).runtimes][:2] == ["torch", "torch-bf16"]
    assert [r.name for r in device_runtimes(torch.device("cuda"))] == ["torch"]
    assert TorchRuntime.autocast("cpu").name == "torch-bf16"


def test_auto_runs_each_key_with_the_runtime_its_benchmark_found_fastest(own_zoo, monkeypatch):
    predictor = Predictor(own_zoo, device="cpu")
    selector = RuntimeSelector(predictor)
    x = predictor.to_tensor(np.random.default_rng(2).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    name = "shapes/unet"
    assert selector.predict(name, x).backend == "torch"  # not benchmarked yet: the predictor's runtime, float32
    medians = {"torch": 9.0, "torch-bf16": 3.0, "onnxruntime": 6.0}
    monkeypatch.setattr(selector, "time_together", lambda models, *args, **kwargs: {(models[0], r.name): [medians[r.name]] * 5 for r in selector.runtimes})
    assert selector.measure_latency(name, (40, 56)).median_ms == 3.0
    bf16 = selector.predict(name, x)
    assert bf16.backend == selector.runtime(name, (40, 56)).name == "torch-bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = predictor.model(name)(x).argmax(1)[0].to(torch.uint8).numpy()
    assert np.array_equal(bf16.labels, expected)
    assert predictor.predict(name, x).backend == "torch"  # the predictor alone keeps its own runtime
    assert selector.predict(name, predictor.to_tensor(np.zeros((24, 32, 3), np.uint8))).backend == "torch"  # another size: another key
    medians["torch-bf16"] = 12.0
    assert selector.measure_latency(name, (40, 56)).median_ms == min(medians[r.name] for r in selector.runtimes)
    assert selector.runtime(name, (40, 56)).name == ("onnxruntime" if onnxruntime_available() else "torch")


def test_a_runtime_far_slower_in_its_first_pass_is_not_timed_further(own_zoo, monkeypatch):
    from segmodels.runtime import selection

    selector = RuntimeSelector(Predictor(own_zoo, device="cpu"))
    passes = {"torch": 10.0, "torch-bf16": 31.0, "onnxruntime": 10.0}
    monkeypatch.setattr(selection, "time_forward", lambda run, device, warmup, repeats: [passes[run.args[0]]] * repeats)
    timings = {runtime: values for (_, runtime), values in selector.time_together([("shapes/unet", None)], (32, 32), warmup=0, repeats=4, every_runtime=True).items()}
    assert "torch-bf16" not in timings and all(len(values) == 4 for values in timings.values())
    passes["torch-bf16"] = 29.0
    assert (("shapes/unet", None), "torch-bf16") in selector.time_together([("shapes/unet", None)], (32, 32), warmup=0, repeats=4, every_runtime=True)


def test_device_latency_script_times_a_click_for_each_option_set(own_zoo, capsys):
    import device_latency

    report = device_latency.main(["--device", "cpu", "--weights", str(own_zoo), "--set", "shapes", "--size", "32x48", "--rounds", "2"])
    assert set(report["ms"]) == {"fp32, NCHW", "fp32, channels_last", "bf16 autocast, NCHW", "bf16 autocast, channels_last"}
    assert report["options"]["bf16 autocast, NCHW"] == {"amp": True, "channels_last": False}
    assert report["app"] == "fp32, channels_last"  # the Predictor's CPU default
    for rows in report["ms"].values():
        assert set(rows) == {"shapes/unet", "shapes/unetpp", "shapes/unet3p", "shapes/deeplabv3p", "one click"}
        assert rows["one click"]["median_ms"] >= max(row["median_ms"] for name, row in rows.items() if name != "one click")
    assert "fp32, channels_last (app)" in capsys.readouterr().out


def test_models_compared_are_timed_together_in_interleaved_rounds(own_zoo, monkeypatch):
    """One pass of each model per round, so a slowdown falls on all alike; each figure says how
    many models shared its rounds and how busy the rest of the machine was; the group's figures
    are dropped once a model runs with another runtime than was timed."""
    predictor = Predictor(own_zoo, device="cpu")
    selector = RuntimeSelector.for_backend(predictor, "torch")
    order = []
    (runtime,) = selector.runtimes
    labels = runtime.labels
    monkeypatch.setattr(runtime, "labels", lambda model, x, depth: order.append(type(model).__name__) or labels(model, x, depth))
    models = [("shapes/unet", None), ("shapes/deeplabv3p", None)]
    figures = selector.measure_together(models, (32, 32), warmup=0, repeats=3)
    assert order == ["UNet", "DeepLabV3Plus"] * 3
    assert all(f.samples == 3 and f.together == 2 and f.runtime == "torch" for f in figures.values())
    assert all(f.others_share is None or 0.0 <= f.others_share <= 1.0 for f in figures.values())
    assert selector.latency_together(list(reversed(models)), (32, 32)) == figures  # any order names the same group
    assert selector.latency("shapes/unet", (32, 32)) == figures[("shapes/unet", None)]
    assert selector.latency_together(models[:1], (32, 32)) is None and selector.latency_together(models, (32, 48)) is None
    both = RuntimeSelector(predictor, [TorchRuntime(), TorchRuntime(torch.bfloat16)])
    monkeypatch.setattr(both, "time_together", lambda models, *args, **kwargs: {(pair, "torch"): [5.0] * 3 for pair in models})
    both.measure_together(models, (32, 32))
    assert both.latency_together(models, (32, 32)) is not None
    both.keep({("shapes/unet", None): Latency(2.0, 0.1, 5, "benchmark", time.time(), runtime="torch-bf16")}, (32, 32))
    assert both.runtime("shapes/unet", (32, 32)).name == "torch-bf16" and both.latency_together(models, (32, 32)) is None


def test_an_even_slowdown_is_flagged_as_a_busy_machine():
    from segmodels.benchmark import MachineLoad

    quiet = Latency(10.0, 0.5, 5, "benchmark", time.time(), 0.1)
    busy = Latency(10.0, 0.5, 5, "benchmark", time.time(), 0.6)
    assert not quiet.noisy and not quiet.busy and busy.busy and not busy.noisy  # a small IQR, yet others had the machine
    share = MachineLoad().others_share()
    assert share is None or 0.0 <= share <= 1.0


def test_any_module_can_be_registered_and_benched_on_every_runtime(capsys, tmp_path):
    """``Predictor.register`` prepares any model; ``bench --runtimes`` times the same runtime
    objects in interleaved rounds, one row per model, depth and runtime."""
    import json

    from segmodels import create_model
    from segmodels.cli import main

    predictor = Predictor(device="cpu")
    model = trained_like(create_model("unetpp", 3, encoder="plain", pretrained=False, base_channels=4))
    prepared = predictor.register("mine", model)
    assert prepared is predictor.model("mine") and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert predictor.pruning_depths("mine") == (1, 2, 3, 4) and predictor.parameters("mine") == sum(p.numel() for p in model.parameters())
    x = predictor.to_tensor(np.random.default_rng(4).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    with torch.inference_mode():
        expected = model(x, depth=2).argmax(1)[0].numpy()
    assert (predictor.predict("mine", x, 2).labels == expected).mean() > 0.999
    runtimes = ["torch", "torch-bf16"] + (["onnxruntime"] if onnxruntime_available() else [])
    out = tmp_path / "rows.json"
    main(["bench", "--arch", "unet", "--encoder", "plain", "--base-channels", "4", "--num-classes", "3", "--size", "32x48", "--warmup", "0", "--repeats", "2",
          "--threads", "1", "--runtimes", *runtimes, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [row["runtime"] for row in rows] == runtimes and all(row["model"] == "U-Net" and row["median_ms"] > 0 for row in rows)
    assert "ratio: over the model's first runtime" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="leave out --amp"):
        main(["bench", "--arch", "unet", "--runtimes", "torch", "--amp"])
