"""The Shapes instance model: Panoptic-DeepLab's centre and offset heads (Cheng et al., CVPR 2020;
:mod:`segmodels.panoptic`) on the shipped Shapes DeepLabV3+, trained on the CPU.

    python scripts/train_shapes_instance.py train [--epochs 6] [--out runs/shapes_instance] [--threads 1]
    python scripts/train_shapes_instance.py evaluate [--run runs/shapes_instance]   # default: the shipped model
    python scripts/train_shapes_instance.py export [--run runs/shapes_instance]

``train`` starts from the shipped ``shapes/deeplabv3p`` (encoder, decoder and semantic head)
with new instance heads and trains all of it on the Shapes train split (seed 0, 4000 images)
with the Panoptic-DeepLab loss, rendering each image's centre heatmap and offsets from its
instance labels; every epoch it measures PQ on Shapes val (seed 1, 100 images) and keeps the
best epoch in ``best.pt``. ``evaluate`` prints PQ, SQ and RQ on Shapes val, beside those of the
connected components of the same model's semantic mask. ``export`` writes the best epoch as an
fp16 state dict with its card (and that evaluation) to
``assets/weights/shapes/instance/panoptic_deeplab.{pt,json}``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segmodels import zoo
from segmodels.cards import (
    count_flops,
    count_parameters,
    device_description,
    git_commit,
)
from segmodels.data import SHAPES, build_dataset
from segmodels.panoptic import (
    CENTRE_SIGMA,
    CENTRE_THRESHOLD,
    CENTRE_WEIGHT,
    NMS_KERNEL,
    OFFSET_WEIGHT,
    SHAPES_THING_CLASSES,
    TOP_K,
    centre_and_offset_targets,
    evaluate_panoptic,
    export_panoptic,
    load_panoptic,
    panoptic_from_spec,
    panoptic_loss,
    panoptic_spec,
)
from segmodels.training import learning_rate_factor

NAME = "panoptic_deeplab"
START_FROM = "shapes/deeplabv3p"
RUN = Path("runs/shapes_instance")


class PanopticShapes(Dataset):
    """Shapes images with their Panoptic-DeepLab targets; with ``augment``, a random flip and
    quarter turn (exact on pixels, and the labels and targets follow)."""

    def __init__(self, split: str, augment: bool, seed: int = 0, num_images: int | None = None):
        self.shapes = build_dataset("shapes", split=split, **({} if num_images is None else {"num_images": num_images}))
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int):
        image, semantic, instances = self.shapes.sample(index)
        if self.augment:
            turns, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            image, semantic, instances = (np.rot90(a, turns) for a in (image, semantic, instances))
            if flip:
                image, semantic, instances = (a[:, ::-1] for a in (image, semantic, instances))
        heatmap, offsets = centre_and_offset_targets(instances, CENTRE_SIGMA)
        things = np.isin(semantic, SHAPES_THING_CLASSES)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255)
        return image, torch.from_numpy(semantic.astype(np.int64)), torch.from_numpy(heatmap), torch.from_numpy(offsets), torch.from_numpy(things)


def val_samples() -> list:
    val = build_dataset("shapes", split="val")
    return [val.sample(i) for i in range(len(val))]


def evaluate(model, samples) -> dict:
    model.eval()
    return evaluate_panoptic(model, samples, SHAPES.class_names, SHAPES_THING_CLASSES)


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    semantic_card = zoo.load_card(START_FROM)
    spec = panoptic_spec({key: semantic_card[key] for key in ("arch", "encoder", "num_classes", "base_channels", "options")})
    model = panoptic_from_spec(spec)
    model.semantic.load_state_dict(zoo.read_model(START_FROM).state_dict())
    loader = DataLoader(PanopticShapes("train", augment=True, seed=args.seed, num_images=args.train_images), batch_size=args.batch_size, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    total_steps = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, total_steps, 0, "poly"))
    samples = val_samples()
    history, best, started = [], None, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        for image, semantic, heatmap, offsets, things in loader:
            terms = panoptic_loss(model(image), semantic, heatmap, offsets, things)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            scheduler.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.item()
        scores = evaluate(model, samples)
        row = {"epoch": epoch, **{f"loss_{k}": v / len(loader) for k, v in sums.items()}, "val_pq": scores["pq"], "val_sq": scores["sq"], "val_rq": scores["rq"],
               "val_pq_things": scores["pq_things"], "val_pq_connected_components": scores["connected_components"]["pq"], "seconds": time.perf_counter() - started}
        history.append(row)
        print(json.dumps(row), flush=True)
        if best is None or scores["pq"] > best["val_pq"]:
            best = row
            torch.save({"model": model.state_dict(), "spec": spec, "epoch": epoch}, out / "best.pt")
    card = {
        **spec,
        "dataset": SHAPES.to_dict(),
        "thing_classes": list(SHAPES_THING_CLASSES),
        "started_from": START_FROM,
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adam", "schedule": "poly", "seed": args.seed,
                     "train_images": len(loader.dataset), "augmentation": "random quarter turn and flip", "centre_sigma": CENTRE_SIGMA,
                     "loss_weights": {"semantic": 1.0, "centre": CENTRE_WEIGHT, "offset": OFFSET_WEIGHT}},
        "post_processing": {"centre_threshold": CENTRE_THRESHOLD, "nms_kernel": NMS_KERNEL, "top_k": TOP_K},
        "history": history,
        "best_epoch": best["epoch"],
        "params": count_parameters(model),
        "flops": count_flops(model, (128, 128)),
        "flops_input_size": [128, 128],
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_device": device_description(torch.device("cpu")),
        "git_commit": git_commit(),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2))


def print_scores(scores: dict) -> None:
    print(f"Shapes val, {scores['num_images']} images (PQ, SQ, RQ: Kirillov et al. 2019; means over classes)")
    print("| grouping | PQ | SQ | RQ | PQ things | PQ stuff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, row in (("Panoptic-DeepLab centres and offsets", scores), ("connected components of the same semantic mask", scores["connected_components"])):
        print(f"| {label} | {row['pq']:.4f} | {row['sq']:.4f} | {row['rq']:.4f} | {row['pq_things']:.4f} | {row['pq_stuff']:.4f} |")
    print("\n| class | PQ | SQ | RQ | TP | FP | FN | PQ, connected components |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in scores["per_class"].items():
        other = scores["connected_components"]["per_class"][name]
        print(f"| {name} | {row['pq']:.4f} | {row['sq']:.4f} | {row['rq']:.4f} | {row['tp']} | {row['fp']} | {row['fn']} | {other['pq']:.4f} |")
    print(f"\nmIoU of the semantic mask: {scores['semantic_miou']:.4f}")


def load_run(run: Path):
    """A run's best epoch with its weights rounded to float16 as :func:`export_panoptic` ships
    them, so that its evaluation is the shipped model's."""
    checkpoint = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    model = panoptic_from_spec(checkpoint["spec"])
    model.load_state_dict({key: value.half().float() if value.is_floating_point() else value for key, value in checkpoint["model"].items()})
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="train from the shipped shapes/deeplabv3p")
    train_parser.add_argument("--out", default=str(RUN))
    train_parser.add_argument("--epochs", type=int, default=6)
    train_parser.add_argument("--batch-size", type=int, default=8)
    train_parser.add_argument("--lr", type=float, default=1e-3)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--train-images", type=int, help="the first N of the 4000 training images (for a quick try)")
    train_parser.add_argument("--threads", type=int, default=1)
    evaluate_parser = sub.add_parser("evaluate", help="PQ, SQ and RQ on Shapes val (the shipped model unless --run)")
    evaluate_parser.add_argument("--run", type=Path)
    evaluate_parser.add_argument("--json", type=Path)
    evaluate_parser.add_argument("--threads", type=int, default=1)
    export_parser = sub.add_parser("export", help="ship a run's best epoch with its card and evaluation")
    export_parser.add_argument("--run", type=Path, default=RUN)
    export_parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
        return 0
    torch.set_num_threads(args.threads)
    if args.command == "evaluate":
        model = load_run(args.run) if args.run else load_panoptic("shapes", NAME)
        scores = evaluate(model, val_samples())
        print_scores(scores)
        if args.json:
            args.json.write_text(json.dumps(scores, indent=2))
        return 0
    scores = evaluate(load_run(args.run), val_samples())
    command = "python scripts/train_shapes_instance.py evaluate"
    path = export_panoptic(args.run, "shapes", NAME, extra={"evaluation": {"split": "val", "command": command, **scores}})
    print(f"wrote {path}")
    print_scores(scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
