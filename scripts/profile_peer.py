"""Where the time of our U-Net / U-Net++ goes against segmentation_models_pytorch's, both
prepared as ``python -m segmodels bench --smp`` prepares them (:mod:`segmodels.peers`:
untrained, batch norms folded, channels_last, the argmax included, as
:func:`segmodels.runtime.run_prepared` runs them), profiled with ``torch.profiler`` on the CPU.

Three tables per architecture and precision (float32, bfloat16 autocast):

* **units**: every decoder block (each child of a decoder's ModuleList / ModuleDict), the
  encoder, the heads and what runs outside them, with parameters, GFLOPs
  (``torch.utils.flop_counter``, a multiply-add counts as 2), output channels and profiled
  milliseconds per pass;
* **ops**: self CPU milliseconds per pass of each ATen op in the decoder, heads and glue
  (the encoder is the same timm EfficientNet-Lite0 on both sides), ours, smp's and the
  difference;
* **total**: wall milliseconds per pass without the profiler, in interleaved rounds.

``ours`` is prepared with :mod:`segmodels.rewrites` applied, as the Predictor runs it;
``--unrewritten`` adds ``ours unrewritten``, prepared without them, as a third side.
``--transposed`` times our transposed convolutions against 1x1 conv + pixel_shuffle instead.
Example (one thread: the machine is shared)::

    python scripts/profile_peer.py --arch unet unetpp --threads 1 --unrewritten \\
        --options '{"unetpp": {"decoder_channels": [26, 52, 104, 208]}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segmodels.benchmark import time_interleaved  # noqa: E402
from segmodels.models import create_model  # noqa: E402
from segmodels.peers import build_smp  # noqa: E402
from segmodels.runtime import prepare_for_inference  # noqa: E402

REGION = "region:"
PRECISIONS = ("fp32", "bf16")


def units(model: nn.Module) -> list[str]:
    """Module paths timed one by one: the encoder, the decoder and each of its blocks (the
    children of its ModuleList / ModuleDict), each head."""
    names = []
    for name, _ in model.named_modules():
        parts = name.split(".")
        block = "decoder" in parts and len(parts) == parts.index("decoder") + 3
        if block and not isinstance(model.get_submodule(".".join(parts[:-1])), (nn.ModuleList, nn.ModuleDict)):
            block = False
        if block or parts[-1] == "decoder" or name in ("encoder", "model.encoder", "model.segmentation_head") or parts[0] == "heads" and len(parts) == 2:
            names.append(name)
    return names


def label_units(model: nn.Module) -> list:
    """Wrap the forward of every unit in a ``record_function`` region; returns the hooks."""
    hooks = []
    for name in units(model):
        module = model.get_submodule(name)
        region = record_function(REGION + name)

        def enter(*_, region=region) -> None:
            region.__enter__()

        def leave(*_, region=region) -> None:
            region.__exit__(None, None, None)

        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return hooks


def pass_function(model: nn.Module, image: torch.Tensor, precision: str, depth: int | None):
    options = {} if depth is None else {"depth": depth}

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model(image, **options).argmax(1)

    return run


def region_of(event) -> str:
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith(REGION):
        parent = parent.cpu_parent
    return parent.name[len(REGION):] if parent is not None else "outside (normalise, pad, resize, crop, argmax)"


def profile_side(model: nn.Module, image: torch.Tensor, precision: str, depth: int | None, passes: int) -> tuple[dict, dict]:
    """({unit: ms per pass}, {(region, op): self ms per pass}) over ``passes`` profiled passes."""
    run = pass_function(model, image, precision, depth)
    hooks = label_units(model)
    try:
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                run()
    finally:
        for hook in hooks:
            hook.remove()
    unit_ms, op_ms = defaultdict(float), defaultdict(float)
    for event in prof.events():
        if event.name.startswith(REGION):
            unit_ms[event.name[len(REGION):]] += event.cpu_time_total / 1000 / passes
        elif event.name.startswith("aten::") and event.self_cpu_time_total:
            op_ms[(region_of(event), event.name)] += event.self_cpu_time_total / 1000 / passes
    return dict(unit_ms), dict(op_ms)


def describe_units(model: nn.Module, size: tuple[int, int], depth: int | None) -> dict[str, dict]:
    """{unit: parameters, GFLOPs, output channels} of the unprepared model."""
    counter = FlopCounterMode(display=False)
    channels = {}
    hooks = [model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: channels.__setitem__(name, out.shape[1] if torch.is_tensor(out) else "")) for name in units(model)]
    try:
        with torch.inference_mode(), counter:
            model(torch.zeros(1, 3, *size), **({} if depth is None else {"depth": depth}))
    finally:
        for hook in hooks:
            hook.remove()
    flops = counter.get_flop_counts()
    prefix = "SmpPeer" if "model.encoder" in dict(model.named_modules()) else type(model).__name__
    return {name: {"params": sum(p.numel() for p in model.get_submodule(name).parameters()),
                   "gflops": sum(flops.get(f"{prefix}.{name}", {}).values()) / 1e9, "channels": channels.get(name, "")} for name in units(model)}


def short(name: str) -> str:
    return name.removeprefix("model.").removeprefix("decoder.")


def unit_table(arch: str, sides: dict, described: dict, profiled: dict) -> str:
    lines = [f"| {arch} unit | side | out ch | params (k) | GFLOPs | " + " | ".join(f"{p} ms" for p in PRECISIONS) + " |",
             "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in PRECISIONS) + " |"]
    for side in sides:
        for name, info in described[side].items():
            times = " | ".join(f"{profiled[side, p][0].get(name, 0):.1f}" for p in PRECISIONS)
            lines.append(f"| {short(name)} | {side} | {info['channels']} | {info['params'] / 1e3:.1f} | {info['gflops']:.3f} | {times} |")
    return "\n".join(lines)


def op_table(arch: str, sides: dict, profiled: dict, precision: str, rows: int) -> str:
    """Self ms per pass of each op outside the encoder, per side, largest difference first."""
    totals = {}
    for side in sides:
        per_op = defaultdict(float)
        for (region, op), ms in profiled[side, precision][1].items():
            if not region.endswith("encoder"):
                per_op[op] += ms
        totals[side] = per_op
    ops = sorted(set().union(*totals.values()), key=lambda op: -abs(totals["ours"].get(op, 0) - totals["smp"].get(op, 0)))
    names = list(sides)
    lines = [f"| {arch} {precision}: op (decoder, heads, glue) | " + " | ".join(f"{n} ms" for n in names) + " | ours - smp |", "| --- | " + " | ".join("---:" for _ in names) + " | ---: |"]
    for op in ops[:rows]:
        lines.append(f"| {op} | " + " | ".join(f"{totals[n].get(op, 0):.2f}" for n in names) + f" | {totals['ours'].get(op, 0) - totals['smp'].get(op, 0):+.2f} |")
    lines.append("| all but the encoder | " + " | ".join(f"{sum(totals[n].values()):.1f}" for n in names) + f" | {sum(totals['ours'].values()) - sum(totals['smp'].values()):+.1f} |")
    return "\n".join(lines)


def total_table(arch: str, timings: dict) -> str:
    lines = [f"| {arch}: side, precision | median ms | IQR ms | / smp |", "| --- | ---: | ---: | ---: |"]
    medians = {key: statistics.median(values) for key, values in timings.items()}
    for (side, precision), values in timings.items():
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        lines.append(f"| {side}, {precision} | {medians[side, precision]:.1f} | {q3 - q1:.1f} | {medians[side, precision] / medians['smp', precision]:.3f} |")
    return "\n".join(lines)


def transposed_table(model: nn.Module, size: tuple[int, int], depth: int | None, rounds: int) -> str:
    """Every 2x2 stride-2 transposed convolution of ``model`` on its own input, against the
    same map computed as a 1x1 convolution to 4 C_out channels (weight W[c, o, a, b] at
    output channel 4o + 2a + b) followed by ``pixel_shuffle(2)``; all of them per pass, in
    interleaved rounds, channels_last."""
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, args, _out: inputs.__setitem__(m, args[0])) for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    image = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            model(image, **({} if depth is None else {"depth": depth}))
    finally:
        for hook in hooks:
            hook.remove()
    shuffled = [(x, m.weight.permute(1, 2, 3, 0).reshape(-1, m.in_channels, 1, 1).contiguous(memory_format=torch.channels_last), m.bias.repeat_interleave(4)) for m, x in inputs.items()]
    with torch.inference_mode():
        for (x, weight, bias), module in zip(shuffled, inputs):
            torch.testing.assert_close(F.pixel_shuffle(F.conv2d(x, weight, bias), 2), module(x), rtol=1e-4, atol=1e-4)

    def transposed():
        for module, x in inputs.items():
            module(x)

    def pixel_shuffle():
        for x, weight, bias in shuffled:
            F.pixel_shuffle(F.conv2d(x, weight, bias), 2)

    runners = {}
    for precision in PRECISIONS:
        for name, run in (("ConvTranspose2d", transposed), ("1x1 conv + pixel_shuffle", pixel_shuffle)):
            def timed(run=run, precision=precision):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    run()
            runners[name, precision] = timed
    timings = time_interleaved(runners, rounds)
    lines = [f"| {len(inputs)} transposed convolutions, precision | median ms | IQR ms |", "| --- | ---: | ---: |"]
    for (name, precision), values in timings.items():
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        lines.append(f"| {name}, {precision} | {statistics.median(values):.2f} | {q3 - q1:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="*", default=["unet", "unetpp"], choices=["unet", "unetpp", "deeplabv3p"])
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(360, 480), help="HxW")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=5, help="profiled passes per side and precision")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds timed without the profiler")
    parser.add_argument("--ops", type=int, default=10, help="op rows per table")
    parser.add_argument("--unrewritten", action="store_true", help="add our model prepared without segmodels.rewrites")
    parser.add_argument("--transposed", action="store_true", help="only time our transposed convolutions against 1x1 conv + pixel_shuffle")
    parser.add_argument("--options", type=json.loads, default={}, help='options per architecture as JSON, as bench --smp takes them')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    for arch in args.arch:
        ours = create_model(arch, args.num_classes, encoder=args.encoder, pretrained=False, **args.options.get(arch, {})).eval()
        depth = max(ours.pruning_depths) if ours.pruning_depths else None
        if args.transposed:
            print(transposed_table(prepare_for_inference(ours, channels_last=True), args.size, depth, args.rounds))
            continue
        smp = build_smp(arch, args.num_classes, args.encoder)
        sides = {"ours": (prepare_for_inference(ours, channels_last=True), depth), "smp": (prepare_for_inference(smp, channels_last=True), None)}
        if args.unrewritten:
            with mock.patch("segmodels.rewrites.rewrite_for_inference", lambda model: model):
                sides["ours unrewritten"] = (prepare_for_inference(ours, channels_last=True), depth)
        described = {"ours": describe_units(ours, args.size, depth), "smp": describe_units(smp, args.size, None)}
        profiled = {(side, p): profile_side(model, image, p, side_depth, args.passes) for side, (model, side_depth) in sides.items() for p in PRECISIONS}
        runners = {(side, p): pass_function(model, image, p, side_depth) for side, (model, side_depth) in sides.items() for p in PRECISIONS}
        timings = time_interleaved(runners, args.rounds)
        print(f"\n{arch}: {args.size[0]}x{args.size[1]}, {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
        print(unit_table(arch, {"ours": None, "smp": None}, described, profiled), end="\n\n")
        for precision in PRECISIONS:
            print(op_table(arch, sides, profiled, precision, args.ops), end="\n\n")
        print(total_table(arch, timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
