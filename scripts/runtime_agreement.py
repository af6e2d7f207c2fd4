"""What a runtime changes in the masks: every shipped model of a set over a split, run by the
:class:`segmodels.runtime.Predictor` in two runtimes (default: PyTorch float32 against
PyTorch under bfloat16 autocast), scored against the ground truth with one confusion matrix
per runtime.

    python scripts/runtime_agreement.py --camvid DIR [--split val] [--runtimes torch torch-bf16] [--threads 2] [--json OUT]

Prints, per model, each runtime's mIoU and the share of pixels on which the two runtimes'
masks agree (the lowest frame and the mean over frames)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from segmodels import zoo
from segmodels.data import CAMVID
from segmodels.data.camvid import CamVidDataset
from segmodels.metrics import ConfusionMatrix
from segmodels.runtime import Predictor, runtime_named


def agreement(predictors: dict[str, Predictor], name: str, dataset) -> dict:
    """Both runtimes' mIoU of ``name`` over ``dataset`` and their per-frame pixel agreement."""
    depth = max(predictors[next(iter(predictors))].pruning_depths(name), default=None)
    matrices = {runtime: ConfusionMatrix(CAMVID.num_classes, CAMVID.ignore_index) for runtime in predictors}
    agreed = []
    for index in range(len(dataset)):
        image, mask = dataset[index]
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        labels = {}
        for runtime, predictor in predictors.items():
            labels[runtime] = predictor.predict(name, predictor.to_tensor(pixels), depth).labels
            matrices[runtime].update(torch.from_numpy(labels[runtime].astype(np.int64)), mask)
        first, second = labels.values()
        agreed.append(float((first == second).mean()))
    return {"miou": {runtime: matrix.compute()["miou"] for runtime, matrix in matrices.items()}, "agreement_min": min(agreed), "agreement_mean": float(np.mean(agreed))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camvid", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--runtimes", nargs=2, default=["torch", "torch-bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=zoo.WEIGHTS_DIR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    predictors = {runtime: Predictor(args.weights, device="cpu", threads=args.threads, runtime=runtime_named(runtime, torch.device("cpu"), args.threads)) for runtime in args.runtimes}
    dataset = CamVidDataset(args.camvid, args.split)
    report = {}
    for name in [name for name in zoo.list_models(args.weights) if name.startswith("camvid/")]:
        report[name] = agreement(predictors, name, dataset)
        row = report[name]
        scores = ", ".join(f"{runtime} {miou:.4f}" for runtime, miou in row["miou"].items())
        print(f"{name}: mIoU {scores}; pixels agreeing: lowest frame {row['agreement_min']:.4f}, mean {row['agreement_mean']:.4f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
