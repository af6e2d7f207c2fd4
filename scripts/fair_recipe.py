"""A recipe file's sizes and costs, and its one-model runs as ``python -m segmodels train``
arguments (for the CPU plan, scripts/train_camvid_fair.sh; the GPU plan trains the whole
recipe in lock-step: ``python -m segmodels train --recipe FILE``, scripts/GPU.md).

Decoder widths: matched parameter budgets. Every decoder (everything but the shared
EfficientNet-Lite0 encoder, deep-supervision heads included) has U-Net's 2.39M parameters
within 2% (tests/segmodels/training/test_fair_recipe.py); the architectures differ only in how the decoder
combines the scales:

* U-Net (Ronneberger et al. 2015): widths (32, 64, 128, 256) shallow to deep, the paper's
  doubling per level.
* U-Net++ (Zhou et al. 2018), paper-exact with 2x2 transposed-conv upsampling: the same
  doubling scaled to (26, 52, 104, 208) (its default widths give 3.41M). The U-Net++
  paper itself controls capacity this way, comparing against a "wide U-Net" of similar size
  (Table 2 of the DLMIA paper).
* U-Net 3+ (Huang et al. 2020): ``cat_channels`` 38 (the paper's 64 gives a 5.88M decoder).
* DeepLabV3+ (Chen et al. 2018): ASPP and decoder width 176 (the paper's 256 gives 4.00M),
  low-level projection 48 as in the paper, dense 3x3 convs (``separable: False``; the shipped
  set was trained so, before the paper's depthwise separable ones became the default).

Each paper's own widths would make the comparison one of capacity as much as of design.
FLOPs are not matched: U-Net 3+ spends its budget at full resolution, which is part of what
the comparison shows (``sizes`` prints them).

Usage: python scripts/fair_recipe.py sizes [--recipe FILE]              (params and GFLOPs table)
       OMP_NUM_THREADS=1 python scripts/fair_recipe.py step-cost [--recipe FILE]
                                                                      (CPU seconds of a training step)
       python scripts/fair_recipe.py train-args ARCH --data DIR --out DIR [--seed N] [--loss LOSS] [--recipe FILE]
                                                                      (segmodels train arguments, one a line)
The default recipe is recipes/camvid_fair_v1.yaml, the shipped set's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from segmodels import ARCH_NAMES, create_model
from segmodels.cards import count_flops, count_parameters
from segmodels.data import CAMVID
from segmodels.losses import LOSS_NAMES
from segmodels.training import Recipe, TrainConfig, load_recipe

REPO = Path(__file__).resolve().parents[1]
FAIR_V1 = REPO / "recipes" / "camvid_fair_v1.yaml"


def train_arguments(config: TrainConfig) -> list[str]:
    """``python -m segmodels train`` arguments that reproduce ``config`` (one model, levers off)."""
    height, width = config.crop_size
    flops_height, flops_width = config.flops_size
    return [
        "--arch", config.arch, "--encoder", config.encoder, "--options", json.dumps(config.options), "--dataset", config.dataset,
        "--data", config.data_root, "--crop", f"{height}x{width}", "--scale", *(str(s) for s in config.scale_range), "--loss", config.loss,
        "--epochs", str(config.epochs), "--batch-size", str(config.batch_size), "--lr", str(config.lr), "--weight-decay", str(config.weight_decay),
        "--warmup-epochs", str(config.warmup_epochs), "--schedule", config.schedule, "--seed", str(config.seed), "--val-every", str(config.val_every),
        "--flops-size", f"{flops_height}x{flops_width}", "--out", config.output_dir,
    ]


def model_sizes(recipe: Recipe, arch: str, input_size: tuple[int, int] = (360, 480)) -> dict:
    """Parameters (all, and the decoder's: all but the encoder) and FLOPs at ``input_size``."""
    model = create_model(arch, CAMVID.num_classes, encoder=recipe.encoder, pretrained=False, **recipe.archs[arch])
    params = count_parameters(model)
    return {"arch": arch, "params": params, "decoder_params": params - count_parameters(model.encoder), "flops": count_flops(model, input_size)}


def sizes_table(recipe: Recipe) -> str:
    lines = ["| model | decoder options | params (M) | decoder params (M) | GFLOPs at 360x480 |", "| --- | --- | --- | --- | --- |"]
    for arch in recipe.archs:
        size = model_sizes(recipe, arch)
        options = json.dumps(recipe.archs[arch]) if recipe.archs[arch] else "defaults"
        lines.append(f"| {ARCH_NAMES[arch]} | `{options}` | {size['params'] / 1e6:.2f} | {size['decoder_params'] / 1e6:.2f} | {size['flops'] / 1e9:.1f} |")
    return "\n".join(lines)


def step_seconds(recipe: Recipe, arch: str, steps: int = 2, batch_size: int | None = None, crop_size: tuple[int, int] | None = None) -> float:
    """CPU seconds of one training step of the recipe (forward over every head, backward,
    AdamW) on random crops, mean of ``steps`` after one warm-up step, in this process's threads.
    The void-ignoring cross-entropy stands in for the recipe's loss."""
    config = recipe.train_config(arch, "", "")
    batch_size, crop_size = batch_size or config.batch_size, crop_size or config.crop_size
    model = create_model(arch, CAMVID.num_classes, encoder=recipe.encoder, pretrained=False, **recipe.archs[arch]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=CAMVID.ignore_index)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, *crop_size, generator=generator)
    masks = torch.randint(0, CAMVID.num_classes, (batch_size, *crop_size), generator=generator)
    spent = []
    for _ in range(steps + 1):
        started = time.process_time()
        outputs = model(images, return_all=True)
        loss = sum(criterion(out, masks) for out in outputs) / len(outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        spent.append(time.process_time() - started)
    return sum(spent[1:]) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=FAIR_V1, help="recipe file (default: recipes/camvid_fair_v1.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sizes", help="Markdown table of params and GFLOPs at 360x480")
    cost = commands.add_parser("step-cost", help="CPU seconds of one training step of each architecture (run with OMP_NUM_THREADS=1)")
    cost.add_argument("--steps", type=int, default=2)
    arguments = commands.add_parser("train-args", help="print the segmodels train arguments of one run, one a line")
    arguments.add_argument("arch")
    arguments.add_argument("--loss", choices=LOSS_NAMES, help="instead of the recipe's loss")
    arguments.add_argument("--data", required=True)
    arguments.add_argument("--out", required=True)
    arguments.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        if args.command == "sizes":
            print(sizes_table(recipe))
        elif args.command == "step-cost":
            for arch in recipe.archs:
                config = recipe.train_config(arch, "", "")
                print(f"{ARCH_NAMES[arch]}: {step_seconds(recipe, arch, args.steps):.1f} CPU s a step of {config.batch_size} crops of {config.crop_size[0]}x{config.crop_size[1]}",
                      flush=True)
        else:
            overrides = {"loss": args.loss} if args.loss else {}
            print("\n".join(train_arguments(recipe.train_config(args.arch, args.data, args.out, args.seed, **overrides))))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
