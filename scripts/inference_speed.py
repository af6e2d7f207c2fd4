"""Which inference preparation wins on this machine: the shipped CamVid models at 360x480,
batch 1 (and batch 2), timed side by side in interleaved rounds (every candidate once per round, the
order shuffled), so machine noise hits all of them alike.

    python scripts/inference_speed.py [--threads 2] [--rounds 15] [--size 360x480]
        [--candidates eager folded folded_cl folded_cl_bf16 folded_cl_batch2 compiled onnxruntime] [--smp] [--json OUT]

Candidates: ``eager`` (the trained model as loaded), ``folded`` (batch norms folded,
:func:`segmodels.runtime.prepare_for_inference`), ``folded_cl`` (folded + channels_last, run as
the Predictor's ``torch`` runtime runs it), ``folded_cl_bf16`` (the same under bfloat16 autocast,
the Predictor's ``torch-bf16`` runtime), ``folded_cl_batch2`` (two images stacked into one pass, as
batching two students' requests would do; its figure is per image), ``compiled``
(``torch.compile`` of the folded model), ``onnxruntime`` (the folded channels_last model in ONNX
Runtime as the Predictor's onnxruntime runtime runs it, if installed). ``folded_cl``,
``folded_cl_bf16`` and ``onnxruntime`` are the Predictor's own preparation and runtime objects
(:func:`segmodels.runtime.prepare_for_inference`, :mod:`segmodels.runtime.runtimes` through
:func:`segmodels.peers.runtime_runners`); ``python -m segmodels bench --models camvid/unet
--runtimes torch torch-bf16 onnxruntime`` times those three alone, through a Predictor.

``--smp`` adds segmentation_models_pytorch's U-Net, U-Net++ and DeepLabV3+ on the same encoder
(``tu-efficientnet_lite0``, untrained: latency does not depend on the weights), smp's defaults
(``smp``) and the decoder width that matches our model's parameters (``smp matched``), each
prepared and run exactly like ours (:mod:`segmodels.peers`) for those three candidates, in the
same rounds. Prints, per model, parameters and GFLOPs of each side, the median and IQR (ms) of
every candidate, its ratio to ``eager``, and ours over smp's on the same runtime."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from segmodels import zoo
from segmodels.benchmark import summarize_timings, time_interleaved
from segmodels.cards import count_parameters
from segmodels.peers import SMP_CLASSES, build_smp, matched_width, runtime_runners, sizes
from segmodels.runtime import onnxruntime_available, prepare_for_inference

NAMES = ["camvid/unet", "camvid/unetpp", "camvid/unet3p", "camvid/deeplabv3p"]
IMAGES_PER_PASS = {"folded_cl_batch2": 2}
PREDICTOR_RUNTIMES = {"folded_cl": "torch", "folded_cl_bf16": "torch-bf16", "onnxruntime": "onnxruntime"}  # candidate -> Predictor runtime
PEERS = ("smp", "smp matched")


def runtimes_wanted(wanted: list[str], name: str) -> dict[str, str]:
    """{Predictor runtime: candidate} of the wanted candidates that are Predictor runtimes."""
    chosen = {runtime: candidate for candidate, runtime in PREDICTOR_RUNTIMES.items() if candidate in wanted}
    if "onnxruntime" in chosen and not onnxruntime_available():
        print(f"{name}: onnxruntime unavailable (pip install -r requirements-dev.txt)")
        del chosen["onnxruntime"]
    return chosen


def predictor_candidates(model: torch.nn.Module, wanted: list[str], size: tuple[int, int], threads: int, name: str, prefix: str = "") -> dict:
    """``folded_cl``, ``folded_cl_bf16`` and ``onnxruntime`` of ``model`` (those wanted), as the Predictor prepares and runs it."""
    chosen = runtimes_wanted(wanted, name)
    prepared = prepare_for_inference(model, channels_last=True)
    started = time.perf_counter()
    runners = runtime_runners(prepared, list(chosen), size, threads)
    if "onnxruntime" in chosen:
        print(f"{name}{' ' + prefix.strip() if prefix else ''}: ONNX Runtime session exported and built in {time.perf_counter() - started:.2f} s")
    return {f"{prefix}{chosen[runtime]}": run for runtime, run in runners.items()}


def candidates(name: str, raw: torch.nn.Module, wanted: list[str], size: tuple[int, int], threads: int) -> dict:
    runners = {}
    if "eager" in wanted:
        runners["eager"] = lambda x, m=raw: m(x).argmax(1)
    folded = prepare_for_inference(raw)
    if "folded" in wanted:
        runners["folded"] = lambda x, m=folded: m(x).argmax(1)
    if "folded_cl_batch2" in wanted:
        folded_cl = prepare_for_inference(raw, channels_last=True)
        runners["folded_cl_batch2"] = lambda x, m=folded_cl: m(torch.cat([x, x]).contiguous(memory_format=torch.channels_last)).argmax(1)
    if "compiled" in wanted:
        compiled = torch.compile(folded)
        runners["compiled"] = lambda x, m=compiled: m(x).argmax(1)
    return runners | predictor_candidates(raw, wanted, size, threads, name)


def smp_peers(arch: str, raw: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """smp's default model of ``arch`` and the one whose decoder width matches ``raw``'s
    parameters (:func:`segmodels.peers.matched_width`); none for U-Net 3+."""
    if arch not in SMP_CLASSES:
        return {}
    width = matched_width(arch, raw.num_classes, "efficientnet_lite0", count_parameters(raw))
    return {"smp": build_smp(arch, raw.num_classes, "efficientnet_lite0"), "smp matched": build_smp(arch, raw.num_classes, "efficientnet_lite0", width)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", default="360x480")
    parser.add_argument("--models", nargs="*", default=NAMES)
    parser.add_argument("--candidates", nargs="*", default=["eager", "folded", "folded_cl", "folded_cl_bf16", "folded_cl_batch2", "compiled", "onnxruntime"])
    parser.add_argument("--smp", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    report = {"threads": args.threads, "size": args.size, "rounds": args.rounds, "torch": torch.__version__, "models": {}}
    for name in args.models:
        raw = zoo.read_model(name)
        runners = candidates(name, raw, args.candidates, size, args.threads)
        described = {"segmodels": sizes(raw, size)}
        if args.smp:
            for peer, model in smp_peers(zoo.load_card(name)["arch"], raw).items():
                described[peer] = sizes(model, size) | {"decoder_width": model.width}
                runners |= predictor_candidates(model, args.candidates, size, args.threads, name, prefix=f"{peer} ")
        with torch.inference_mode():
            timings = time_interleaved({key: (lambda run=run: run(x)) for key, run in runners.items()}, args.rounds)
        rows = {key: summarize_timings([ms / IMAGES_PER_PASS.get(key, 1) for ms in values]) for key, values in timings.items()}
        report["models"][name] = {"sizes": described, "timings": rows}
        print(f"\n{name} ({args.size}, {args.threads} threads, {args.rounds} interleaved rounds)")
        for side, size_row in described.items():
            width = f", decoder width {size_row['decoder_width']}" if "decoder_width" in size_row else ""
            print(f"  {side:12s} {size_row['params_m']:.2f} M parameters, {size_row['gflops']:.2f} GFLOPs{width}")
        eager = rows.get("eager", {}).get("median_ms")
        for key, row in rows.items():
            ratios = [f"{row['median_ms'] / eager:.2f}x eager"] if eager and not key.startswith(PEERS) else []
            ratios += [f"ours {rows[key]['median_ms'] / rows[f'{peer} {key}']['median_ms']:.2f}x {peer}" for peer in PEERS if f"{peer} {key}" in rows]
            print(f"  {key:30s} median {row['median_ms']:8.1f} ms  IQR {row['iqr_ms']:6.1f}  {'  '.join(ratios)}")
    totals = {key: sum(model["timings"][key]["median_ms"] for model in report["models"].values() if key in model["timings"]) for key in args.candidates}
    report["total_median_ms"] = totals
    print("\ntotal of the medians: " + ", ".join(f"{k} {v:.0f} ms" for k, v in totals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
