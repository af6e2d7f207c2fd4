"""Run the loss lab once with each of its five losses and write the curves the dashboard shows
when the server is too busy for a live run.

Usage: python scripts/precompute_losslab.py [--out assets/losslab/curves.json] [--budget 30]
Every run uses the default :class:`segmodels.teach.losslab.LabSettings` (600 steps or the time
budget, whichever comes first) on ``--threads`` CPU threads; on a shared machine raise
``--budget`` so that every run reaches the same step (the CPU seconds each run took are
recorded next to its wall-clock time). ``--losses ce wce --update`` reruns some losses and
keeps the others' runs from the existing file (which must hold the same settings).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from segmodels.data.info import SHAPES
from segmodels.teach.losslab import LAB_LOSSES, LOSS_LABELS, RARE_CLASS, LabSettings, lab_class_weights, run_loss_lab

DECIMALS = 4


def rounded(value):
    """Floats rounded for a small file; NaN (a class absent from truth and prediction) as null."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, DECIMALS)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def run_all(settings: LabSettings, gamma: float, threads: int, losses: list[str]) -> list[dict]:
    runs = []
    weights = {info["loss"]: info for info in lab_class_weights(gamma, settings)}
    for loss in losses:
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        records = [record.as_dict() for record in run_loss_lab(loss, gamma=gamma, settings=settings, threads=threads)]
        cpu_seconds, wall_seconds = time.process_time() - cpu_start, time.perf_counter() - wall_start
        last = records[-1]
        runs.append({
            "loss": loss,
            "label": LOSS_LABELS[loss],
            "gamma": gamma if loss in ("focal", "wfocal") else None,
            "class_weights": weights[loss]["weights"],
            "weight_spread": weights[loss]["spread"],
            "class_loss_share": weights[loss]["loss_share"],
            "steps": last["step"],
            "stop_reason": last["stop_reason"],
            "wall_seconds": wall_seconds,
            "cpu_seconds": cpu_seconds,
            "setup_seconds": last["setup_seconds"],
            "final": {key: last[key] for key in ("per_class_iou", "per_class_accuracy", "miou", "train_loss")},
            "curves": {
                key: [record[key] for record in records]
                for key in ("step", "seconds", "train_loss", "miou", "per_class_iou", "per_class_accuracy")
            },
        })
        iou = last["per_class_iou"]
        print(
            f"{loss:7s} {last['step']:4d} steps, {wall_seconds:5.1f} s wall, {cpu_seconds:5.1f} s CPU: "
            + ", ".join(f"{name} {value:.3f}" for name, value in zip(SHAPES.class_names, iou))
            + f" | {SHAPES.class_names[RARE_CLASS]} recall {last['per_class_accuracy'][RARE_CLASS]:.3f}",
            flush=True,
        )
    return runs


def kept_runs(path: Path, settings: LabSettings, threads: int, rerun: list[str]) -> dict[str, dict]:
    """The runs of ``path`` not in ``rerun``, after checking that they were made alike."""
    if not path.is_file():
        raise SystemExit(f"--update needs an existing {path}")
    previous = json.loads(path.read_text())
    made_alike = {"settings": rounded(settings.as_dict()), "torch_version": torch.__version__, "threads": threads}
    differing = [key for key, value in made_alike.items() if previous.get(key) != value]
    if differing:
        raise SystemExit(f"cannot --update {path}: its {', '.join(differing)} differ from this run's; rerun every loss")
    return {run["loss"]: run for run in previous["runs"] if run["loss"] not in rerun}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/losslab/curves.json"))
    parser.add_argument("--budget", type=float, default=LabSettings.time_budget_s, help="time budget of each run, seconds")
    parser.add_argument("--gamma", type=float, default=2.0, help="focal parameter of focal and wfocal")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", nargs="+", default=list(LAB_LOSSES), choices=LAB_LOSSES)
    parser.add_argument("--update", action="store_true", help="keep the other losses' runs of an existing --out")
    args = parser.parse_args(argv)
    settings = replace(LabSettings(), time_budget_s=args.budget)
    settings.validate()
    kept = kept_runs(args.out, settings, args.threads, args.losses) if args.update else {}
    fresh = {run["loss"]: run for run in run_all(settings, args.gamma, args.threads, args.losses)}
    runs = [({**kept, **fresh})[loss] for loss in LAB_LOSSES if loss in kept or loss in fresh]
    weights = lab_class_weights(args.gamma, settings)[0]
    result = {
        "description": "Loss lab on Imbalanced Shapes: a plain-encoder U-Net trained with each loss; "
        "per-class IoU and recall on a fixed held-out batch every eval_every steps.",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "settings": settings.as_dict(),
        "class_names": list(SHAPES.class_names),
        "rare_class": RARE_CLASS,
        "train_pixel_share": weights["pixel_share"],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rounded(result), separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
