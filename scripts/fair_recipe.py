"""The fair CamVid recipe: one encoder, one training recipe and matched decoder budgets for
U-Net, U-Net++, U-Net 3+ and DeepLabV3+; read by both plans (scripts/train_camvid_fair.sh on
CPUs, scripts/train_zoo_gpu.py on one GPU) so that they cannot drift apart.

Decoder widths: matched parameter budgets. Every decoder (everything but the shared
EfficientNet-Lite0 encoder, deep-supervision heads included) has U-Net's 2.39M parameters
within 2%; the architectures differ only in how the decoder combines the scales:

* U-Net (Ronneberger et al. 2015): widths (32, 64, 128, 256) shallow to deep, the paper's
  doubling per level: 2.39M.
* U-Net++ (Zhou et al. 2018), paper-exact with 2x2 transposed-conv upsampling: the same
  doubling scaled to (26, 52, 104, 208): 2.38M (its default widths give 3.41M). The U-Net++
  paper itself controls capacity this way, comparing against a "wide U-Net" of similar size
  (Table 2 of the DLMIA paper).
* U-Net 3+ (Huang et al. 2020): ``cat_channels`` 38 (the paper's 64 gives a 5.88M decoder
  and 203 GFLOPs at 360x480, 15x U-Net): 2.35M.
* DeepLabV3+ (Chen et al. 2018): ASPP and decoder width 176 (the paper's 256 gives 4.00M),
  low-level projection 48 as in the paper, dense 3x3 convs (``separable: False``; the shipped
  set was trained so, before the paper's depthwise separable ones became the default): 2.43M.

Each paper's own widths would make the comparison one of capacity as much as of design, and
U-Net 3+ alone would cost more than the other three together on a CPU. FLOPs are not matched:
U-Net 3+ spends its budget at full resolution (80 GFLOPs at 360x480 against U-Net's 14),
which is part of what the comparison shows.

Usage: python scripts/fair_recipe.py sizes                       (params and GFLOPs table)
       OMP_NUM_THREADS=1 python scripts/fair_recipe.py step-cost   (CPU seconds of a training step)
       python scripts/fair_recipe.py train-args ARCH --loss LOSS --data DIR --out DIR [--seed N]
                                                                   (segmodels train arguments, one a line)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segmodels import ARCH_NAMES, create_model  # noqa: E402
from segmodels.cards import count_flops, count_parameters  # noqa: E402
from segmodels.data import CAMVID  # noqa: E402
from segmodels.losses import LOSS_NAMES  # noqa: E402
from segmodels.training import TrainConfig  # noqa: E402

ENCODER = "efficientnet_lite0"
ARCHS = ("unet", "unetpp", "unet3p", "deeplabv3p")
DECODER_OPTIONS = {
    "unet": {},
    "unetpp": {"decoder_channels": [26, 52, 104, 208]},
    "unet3p": {"cat_channels": 38},
    "deeplabv3p": {"aspp_channels": 176, "separable": False},
}
RECIPE = {
    "epochs": 80,
    "crop_size": (288, 384),
    "scale_range": (0.75, 1.5),
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 0.5,
    "schedule": "poly",
    "val_every": 4,
    "flops_size": (360, 480),
}
SEED = 0
SECOND_SEED = 1


def train_config(arch: str, loss: str, data_root: str, output_dir: str, seed: int = SEED, **overrides) -> TrainConfig:
    """The recipe as a :class:`TrainConfig` for ``arch`` (``overrides`` only for tests)."""
    if arch not in DECODER_OPTIONS:
        raise ValueError(f"unknown architecture {arch!r}; the fair zoo has {', '.join(ARCHS)}")
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSS_NAMES)}")
    values = {**RECIPE, **overrides}
    return TrainConfig(arch=arch, encoder=ENCODER, pretrained=True, options=dict(DECODER_OPTIONS[arch]), dataset="camvid", data_root=data_root,
                       loss=loss, seed=seed, output_dir=output_dir, **values)


def train_arguments(config: TrainConfig) -> list[str]:
    """``python -m segmodels train`` arguments that reproduce ``config``."""
    height, width = config.crop_size
    flops_height, flops_width = config.flops_size
    return [
        "--arch", config.arch, "--encoder", config.encoder, "--options", json.dumps(config.options), "--dataset", config.dataset,
        "--data", config.data_root, "--crop", f"{height}x{width}", "--scale", *(str(s) for s in config.scale_range), "--loss", config.loss,
        "--epochs", str(config.epochs), "--batch-size", str(config.batch_size), "--lr", str(config.lr), "--weight-decay", str(config.weight_decay),
        "--warmup-epochs", str(config.warmup_epochs), "--schedule", config.schedule, "--seed", str(config.seed), "--val-every", str(config.val_every),
        "--flops-size", f"{flops_height}x{flops_width}", "--out", config.output_dir,
    ]


def model_sizes(arch: str, input_size: tuple[int, int] = RECIPE["flops_size"]) -> dict:
    """Parameters (all, and the decoder's: all but the encoder) and FLOPs at ``input_size``."""
    model = create_model(arch, CAMVID.num_classes, encoder=ENCODER, pretrained=False, **DECODER_OPTIONS[arch])
    params = count_parameters(model)
    return {"arch": arch, "params": params, "decoder_params": params - count_parameters(model.encoder), "flops": count_flops(model, input_size)}


def sizes_table() -> str:
    lines = ["| model | decoder options | params (M) | decoder params (M) | GFLOPs at 360x480 |", "| --- | --- | --- | --- | --- |"]
    for arch in ARCHS:
        size = model_sizes(arch)
        options = json.dumps(DECODER_OPTIONS[arch]) if DECODER_OPTIONS[arch] else "defaults"
        lines.append(f"| {ARCH_NAMES[arch]} | `{options}` | {size['params'] / 1e6:.2f} | {size['decoder_params'] / 1e6:.2f} | {size['flops'] / 1e9:.1f} |")
    return "\n".join(lines)


def step_seconds(arch: str, steps: int = 2, batch_size: int = RECIPE["batch_size"], crop_size: tuple[int, int] = RECIPE["crop_size"]) -> float:
    """CPU seconds of one training step of the recipe (forward over every head, backward,
    AdamW) on random crops, mean of ``steps`` after one warm-up step, in this process's threads.
    The void-ignoring cross-entropy stands in for the chosen loss (the weights cost nothing)."""
    model = create_model(arch, CAMVID.num_classes, encoder=ENCODER, pretrained=False, **DECODER_OPTIONS[arch]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
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
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sizes", help="Markdown table of params and GFLOPs at 360x480")
    cost = commands.add_parser("step-cost", help="CPU seconds of one training step of each architecture (run with OMP_NUM_THREADS=1)")
    cost.add_argument("--steps", type=int, default=2)
    arguments = commands.add_parser("train-args", help="print the segmodels train arguments of one run, one a line")
    arguments.add_argument("arch", choices=ARCHS)
    arguments.add_argument("--loss", required=True, choices=LOSS_NAMES)
    arguments.add_argument("--data", required=True)
    arguments.add_argument("--out", required=True)
    arguments.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.command == "sizes":
        print(sizes_table())
    elif args.command == "step-cost":
        for arch in ARCHS:
            print(f"{ARCH_NAMES[arch]}: {step_seconds(arch, args.steps):.1f} CPU s a step of {RECIPE['batch_size']} crops of {RECIPE['crop_size'][0]}x{RECIPE['crop_size'][1]}", flush=True)
    else:
        print("\n".join(train_arguments(train_config(args.arch, args.loss, args.data, args.out, args.seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
