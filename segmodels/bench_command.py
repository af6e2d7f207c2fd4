"""``python -m segmodels bench``: latency of models at batch 1 (:mod:`segmodels.benchmark`), of
each runtime of :mod:`segmodels.runtime` (``--runtimes``), or against segmentation_models_pytorch
(``--smp``, :mod:`segmodels.peers`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .benchmark import benchmark_architectures, benchmark_model, format_rows, model_rows
from .cards import count_parameters
from .models import ARCH_NAMES, ARCHITECTURES, create_model
from .peers import compare_with_smp, format_comparison
from .runtime import Predictor, device_runtimes, onnxruntime_available, prepare_for_inference, runtime_named
from .runtime.bench import bench_runtimes, format_runtime_rows


def add_bench_arguments(parser: argparse.ArgumentParser, size_type: Callable[[str], tuple[int, int]]) -> None:
    parser.add_argument("--models", nargs="*", help="checkpoints or shipped names; default: untrained architectures")
    parser.add_argument("--arch", nargs="*", choices=list(ARCHITECTURES))
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--size", type=size_type, default=(360, 480))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--amp", action="store_true", help="bf16/fp16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fold-bn", action="store_true", help="fold batch norms into the convolutions first, as segmodels.runtime.Predictor runs models (with --models)")
    parser.add_argument("--options", type=json.loads, default={}, help='options per architecture as JSON, e.g. \'{"deeplabv3p": {"aspp_channels": 176}}\'')
    parser.add_argument("--threads", type=int, help="torch (and ONNX Runtime) threads; default: torch's")
    parser.add_argument("--smp", action="store_true",
                              help="compare with segmentation_models_pytorch (its defaults and a parameter-matched width), both sides prepared and run as "
                                   "segmodels.runtime.Predictor does, on every CPU runtime, in interleaved rounds")
    parser.add_argument("--runtimes", nargs="*", choices=["torch", "torch-bf16", "torch-fp16", "onnxruntime"],
                              help="time these runtimes of segmodels.runtime in interleaved rounds, models prepared as the Predictor prepares them (with --smp: default all the CPU offers)")
    parser.add_argument("--rounds", type=int, default=10, help="with --smp: interleaved rounds")
    parser.add_argument("--device")
    parser.add_argument("--json", help="write the rows here")


def run_bench(args: argparse.Namespace, load: Callable[[str, str], tuple[nn.Module, dict]]) -> int:
    """Time the models of ``args`` (``load(name, device)`` reads a shipped name or a checkpoint)."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smp:
        return run_smp_comparison(args, device)
    if args.runtimes:
        return run_runtime_bench(args, device, load)
    timing = {"warmup": args.warmup, "repeats": args.repeats, "amp": args.amp, "channels_last": args.channels_last}
    rows = []
    if args.models:
        for name in args.models:
            model, _ = load(name, device)
            timed = prepare_for_inference(model.eval()) if args.fold_bn else model
            for row_name, row_model, options in model_rows(timed, name):
                row = benchmark_model(row_model, row_name, args.size, device, **timing, **options)
                rows.append(row | {"params_m": count_parameters(model, **options) / 1e6, "fold_bn": args.fold_bn})
    else:
        archs = args.arch or list(ARCH_NAMES)
        rows = benchmark_architectures(archs, args.num_classes, args.encoder, args.size, device, args.base_channels, _arch_options(args.options), **timing)
    print(format_rows(rows))
    _write_rows(rows, args.json)
    return 0


def run_runtime_bench(args: argparse.Namespace, device: str, load: Callable[[str, str], tuple[nn.Module, dict]]) -> int:
    """``bench --runtimes``: the models prepared as the Predictor prepares them, each runtime timed in interleaved rounds."""
    given = [flag for flag, value in (("--amp", args.amp), ("--fold-bn", args.fold_bn)) if value]
    if given:
        raise SystemExit(f"bench --runtimes folds batch norms and names autocast as a runtime (torch-bf16, torch-fp16); leave out {', '.join(given)}")
    predictor = Predictor(device=device, threads=args.threads, channels_last=True if args.channels_last else None)
    try:
        runtimes = [runtime_named(name, predictor.device, args.threads) for name in args.runtimes]
        options = _arch_options(args.options)
        models = {name: load(name, device)[0] for name in args.models or []} or {
            ARCH_NAMES[arch]: create_model(arch, args.num_classes, encoder=args.encoder, pretrained=False, base_channels=args.base_channels, **options.get(arch, {}))
            for arch in args.arch or list(ARCH_NAMES)}
    except ValueError as error:
        raise SystemExit(f"bench --runtimes: {error}") from None
    rows = bench_runtimes(predictor, models, args.size, runtimes, args.warmup, args.repeats)
    print(format_runtime_rows(rows))
    _write_rows(rows, args.json)
    return 0


def _arch_options(options: dict) -> dict[str, dict]:
    if not isinstance(options, dict) or not all(arch in ARCHITECTURES and isinstance(value, dict) for arch, value in options.items()):
        raise SystemExit(f'--options maps architectures to their options, e.g. \'{{"deeplabv3p": {{"aspp_channels": 176}}}}\'; got {json.dumps(options)[:80]}')
    return options


def _write_rows(rows: list[dict], path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rows, indent=2))


def run_smp_comparison(args: argparse.Namespace, device: str) -> int:
    """``bench --smp``: ours and segmentation_models_pytorch's, prepared and run alike (segmodels.peers)."""
    given = [flag for flag, value in (("--models", args.models), ("--amp", args.amp), ("--channels-last", args.channels_last), ("--fold-bn", args.fold_bn)) if value]
    if given:
        raise SystemExit(f"bench --smp prepares both sides as segmodels.runtime.Predictor does (batch norms folded, channels_last) on untrained architectures; leave out {', '.join(given)}")
    if torch.device(device).type != "cpu":
        raise SystemExit("bench --smp times the CPU runtimes of segmodels.runtime.Predictor; use --device cpu")
    runtimes = args.runtimes or [runtime.name for runtime in device_runtimes(torch.device("cpu"))]
    if "onnxruntime" in runtimes and not onnxruntime_available():
        raise SystemExit("bench --smp: the onnxruntime runtime needs the onnxruntime and onnx packages (requirements-dev.txt)")
    try:
        rows = compare_with_smp(args.arch or list(ARCH_NAMES), args.num_classes, args.encoder, args.size, runtimes, args.rounds, args.base_channels, _arch_options(args.options))
    except ValueError as error:
        raise SystemExit(f"bench --smp: {error}") from None
    print(format_comparison(rows))
    _write_rows(rows, args.json)
    return 0
