"""The shipped models' latency on a device as the app runs them, for the serving issue's GPU
item: one click moves the image to the device once and runs each model of a set once
(:class:`segmodels.runtime.Predictor`, PyTorch backend), for the four combinations of
bf16 autocast and channels_last, in interleaved rounds.

    python scripts/device_latency.py [--device auto] [--set camvid] [--size 360x480] [--rounds 20] [--json OUT]

Prints, per combination, each model's median and IQR (ms) and one whole click's (the image's
upload to the device included), its ratio to the combination the Predictor picks by default
on that device (marked "app"), and writes the same as JSON. On a machine with the checkout but
without the package (``pip install -e .``), run it as ``PYTHONPATH=. python scripts/device_latency.py ...``."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from segmodels import zoo
from segmodels.benchmark import summarize_timings
from segmodels.runtime import Predictor, TorchRuntime

OPTION_SETS = {
    "fp32, NCHW": {"amp": False, "channels_last": False},
    "fp32, channels_last": {"amp": False, "channels_last": True},
    "bf16 autocast, NCHW": {"amp": True, "channels_last": False},
    "bf16 autocast, channels_last": {"amp": True, "channels_last": True},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=zoo.WEIGHTS_DIR)
    parser.add_argument("--set", default="camvid", dest="set_name")
    parser.add_argument("--size", default="360x480")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    names = [name for name in zoo.list_models(args.weights) if name.startswith(f"{args.set_name}/")]
    if not names:
        raise SystemExit(f"no {args.set_name} models in {args.weights}")
    default = Predictor(args.weights, device=args.device)
    device = default.device
    predictors = {label: Predictor(args.weights, device=str(device), channels_last=options["channels_last"], runtime=TorchRuntime.autocast(device) if options["amp"] else TorchRuntime())
                  for label, options in OPTION_SETS.items()}
    app_label = next(label for label, p in predictors.items() if (p.runtime.name, p.channels_last) == (default.runtime.name, default.channels_last))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    timings = {label: {name: [] for name in [*names, "one click"]} for label in predictors}

    def click(predictor: Predictor, record: dict) -> None:
        started = time.perf_counter()
        x = predictor.to_tensor(image)
        for name in names:
            synchronize(device)
            model_started = time.perf_counter()
            predictor.predict(name, x)
            synchronize(device)
            record[name].append((time.perf_counter() - model_started) * 1000)
        record["one click"].append((time.perf_counter() - started) * 1000)

    for label, predictor in predictors.items():  # loading and warm-up, not timed
        for _ in range(3):
            click(predictor, {name: [] for name in timings[label]})
    order = list(predictors)
    for _ in range(args.rounds):
        random.shuffle(order)
        for label in order:
            click(predictors[label], timings[label])
    report = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "size": args.size, "rounds": args.rounds, "threads": torch.get_num_threads(),
              "options": {label: {"amp": p.runtime.dtype is not None, "channels_last": p.channels_last} for label, p in predictors.items()}, "app": app_label,
              "ms": {label: {name: summarize_timings(values) for name, values in rows.items()} for label, rows in timings.items()}}
    print(f"{report['device_name']} ({report['device']}), torch {torch.__version__}, {args.size}, {args.rounds} interleaved rounds")
    for label, rows in report["ms"].items():
        print(f"\n{label}" + (" (app)" if label == app_label else ""))
        for name, row in rows.items():
            ratio = row["median_ms"] / report["ms"][app_label][name]["median_ms"]
            print(f"  {name:22s} median {row['median_ms']:8.2f} ms  IQR {row['iqr_ms']:6.2f}  {ratio:.2f}x app")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
