"""Which inference preparation wins on this machine: the shipped CamVid models at 360x480,
batch 1 (and batch 2), timed side by side in interleaved rounds (every candidate once per round, the
order shuffled), so machine noise hits all of them alike.

    python scripts/inference_speed.py [--threads 2] [--rounds 15] [--size 360x480]
        [--candidates eager folded folded_cl folded_cl_bf16 folded_cl_batch2 compiled onnxruntime] [--smp] [--json OUT]

Candidates: ``eager`` (the trained model as loaded), ``folded`` (batch norms folded,
:func:`segmodels.inference.prepare_for_inference`), ``folded_cl`` (folded + channels_last),
``folded_cl_bf16`` (the same under bfloat16 autocast, as the Predictor's ``torch-bf16`` runtime
runs it), ``folded_cl_batch2`` (two images stacked into one pass, as batching two students' requests
would do; its figure is per image), ``compiled`` (``torch.compile`` of the folded model), ``onnxruntime`` (the folded model
in ONNX Runtime as the Predictor's onnxruntime backend runs it,
:func:`segmodels.inference.onnxruntime_session`, if installed). ``--smp`` adds
segmentation_models_pytorch's U-Net, U-Net++ and DeepLabV3+ on the same encoder
(``tu-efficientnet_lite0``, smp's default decoders, untrained: latency does not depend on the
weights).
Prints, per model, the median and IQR (ms) of every candidate and its ratio to ``eager``
(and to smp's equivalent)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segmodels import zoo  # noqa: E402
from segmodels.benchmark import smp_models, summarize_timings  # noqa: E402
from segmodels.inference import onnxruntime_session, prepare_for_inference  # noqa: E402

NAMES = ["camvid/unet", "camvid/unetpp", "camvid/unet3p", "camvid/deeplabv3p"]
IMAGES_PER_PASS = {"folded_cl_batch2": 2}


def smp_equivalent(arch: str, num_classes: int):
    """segmentation_models_pytorch's default model of the same architecture on the same
    encoder (``segmodels.benchmark.smp_models``), or None when smp has none (U-Net 3+)."""
    built = dict(zip(("unet", "unetpp", "deeplabv3p"), (model for _, model in smp_models(num_classes, "efficientnet_lite0"))))
    return built.get(arch)


def pad_to(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad right and bottom to a multiple of ``divisor`` (smp refuses other sizes; the
    segmodels models pad the same way inside)."""
    height, width = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, -width % divisor, 0, -height % divisor))


def candidates(name: str, wanted: list[str], size: tuple[int, int], threads: int, with_smp: bool) -> dict:
    raw = zoo.read_model(name)
    card = zoo.load_card(name)
    runners = {}
    if "eager" in wanted:
        runners["eager"] = lambda x, m=raw: m(x).argmax(1)
    folded = prepare_for_inference(raw)
    if "folded" in wanted:
        runners["folded"] = lambda x, m=folded: m(x).argmax(1)
    folded_cl = prepare_for_inference(raw, channels_last=True)
    if "folded_cl" in wanted:
        runners["folded_cl"] = lambda x, m=folded_cl: m(x.contiguous(memory_format=torch.channels_last)).argmax(1)
    if "folded_cl_bf16" in wanted:

        def bf16(x, m=folded_cl):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m(x.contiguous(memory_format=torch.channels_last)).argmax(1)
        runners["folded_cl_bf16"] = bf16
    if "folded_cl_batch2" in wanted:
        runners["folded_cl_batch2"] = lambda x, m=folded_cl: m(torch.cat([x, x]).contiguous(memory_format=torch.channels_last)).argmax(1)
    if "compiled" in wanted:
        compiled = torch.compile(folded)
        runners["compiled"] = lambda x, m=compiled: m(x).argmax(1)
    if "onnxruntime" in wanted:
        try:
            started = time.perf_counter()
            session = onnxruntime_session(folded, size, None, threads)
            print(f"{name}: ONNX Runtime session exported and built in {time.perf_counter() - started:.2f} s")
            runners["onnxruntime"] = lambda x, s=session: s.run(None, {"image": x.numpy()})[0]
        except Exception as error:  # noqa: BLE001 - optional extra: report and go on
            print(f"{name}: onnxruntime unavailable ({type(error).__name__}: {error})")
    if with_smp:
        equivalent = smp_equivalent(card["arch"], raw.num_classes)
        if equivalent is not None:
            runners["smp"] = lambda x, m=equivalent.eval(): m(pad_to(x, 32)).argmax(1)
    return runners


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
        runners = candidates(name, args.candidates, size, args.threads, args.smp)
        with torch.inference_mode():
            for run in runners.values():  # warm-up (and compilation)
                run(x), run(x)
            timings = {key: [] for key in runners}
            order = list(runners)
            for _ in range(args.rounds):
                random.shuffle(order)
                for key in order:
                    started = time.perf_counter()
                    runners[key](x)
                    timings[key].append((time.perf_counter() - started) * 1000 / IMAGES_PER_PASS.get(key, 1))
        rows = {key: summarize_timings(values) for key, values in timings.items()}
        report["models"][name] = rows
        eager = rows.get("eager", {}).get("median_ms")
        smp_ms = rows.get("smp", {}).get("median_ms")
        print(f"\n{name} ({args.size}, {args.threads} threads, {args.rounds} interleaved rounds)")
        for key, row in rows.items():
            ratios = []
            if eager:
                ratios.append(f"{row['median_ms'] / eager:.2f}x eager")
            if smp_ms and key != "smp":
                ratios.append(f"{row['median_ms'] / smp_ms:.2f}x smp")
            print(f"  {key:12s} median {row['median_ms']:8.1f} ms  IQR {row['iqr_ms']:6.1f}  {'  '.join(ratios)}")
    totals = {key: sum(rows[key]["median_ms"] for rows in report["models"].values() if key in rows) for key in args.candidates}
    report["total_median_ms"] = totals
    print("\ntotal of the medians: " + ", ".join(f"{k} {v:.0f} ms" for k, v in totals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
