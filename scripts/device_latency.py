"""The shipped models' latency on a device as the app runs them, for the serving issue's GPU
item: one click moves the image to the device once and runs each model of a set once
(:class:`segmodels.inference.Predictor`, PyTorch backend), timed with and without the CUDA
options the app turns on there (bf16 autocast and channels_last), in interleaved rounds.

    python scripts/device_latency.py [--device auto] [--set camvid] [--size 360x480] [--rounds 20] [--json OUT]

Prints, per option set, each model's median and IQR (ms) and one whole click's (the image's
upload to the device included), and the ratio of the app's options to plain fp32 NCHW. On a
CPU the app's options are channels_last only (no autocast)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segmodels import zoo  # noqa: E402
from segmodels.benchmark import summarize_timings  # noqa: E402
from segmodels.inference import Predictor  # noqa: E402

OPTION_SETS = {"as the app runs them": {}, "fp32, NCHW": {"amp": False, "channels_last": False}}


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
    predictors = {label: Predictor(args.weights, device=args.device, backend="torch", **options) for label, options in OPTION_SETS.items()}
    device = next(iter(predictors.values())).device
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
              "options": {label: {"amp": p.amp, "channels_last": p.channels_last} for label, p in predictors.items()},
              "ms": {label: {name: summarize_timings(values) for name, values in rows.items()} for label, rows in timings.items()}}
    app_label, plain_label = OPTION_SETS
    print(f"{report['device_name']} ({report['device']}), torch {torch.__version__}, {args.size}, {args.rounds} interleaved rounds")
    for label, rows in report["ms"].items():
        print(f"\n{label} ({', '.join(f'{k} {v}' for k, v in report['options'][label].items())})")
        for name, row in rows.items():
            ratio = row["median_ms"] / report["ms"][plain_label][name]["median_ms"]
            print(f"  {name:22s} median {row['median_ms']:8.2f} ms  IQR {row['iqr_ms']:6.2f}" + (f"  {ratio:.2f}x fp32 NCHW" if label == app_label else ""))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
