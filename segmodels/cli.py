"""``python -m segmodels train | evaluate | bench | export``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import Subset

from . import zoo
from .bench_command import add_bench_arguments, run_bench
from .data import build_dataset, eval_transform
from .encoders import ENCODERS
from .evaluation import TestTimeAugmentation, evaluate, evaluation_report, format_report, write_report
from .losses import LOSS_NAMES
from .models import ARCHITECTURES
from .training import LockstepRun, TrainConfig, build_from_spec, load_recipe, read_camvid_frames, train, train_recipe


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes look like 360x480 or 256, got {text!r}") from None
    return height, width


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=list(ARCHITECTURES), default="unet")
    parser.add_argument("--encoder", default="plain", help=", ".join(ENCODERS))
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random encoder weights")
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--options", type=json.loads, default={}, help='architecture options as JSON, e.g. \'{"cat_channels": 32}\'')
    parser.add_argument("--dataset", choices=["camvid", "folder", "shapes"], default="shapes")
    parser.add_argument("--data", dest="data_root", help="dataset root (camvid, folder)")
    parser.add_argument("--train-images", type=int, help="use only the first N training images")
    parser.add_argument("--val-images", type=int, help="use only the first N validation images")
    parser.add_argument("--crop", dest="crop_size", type=_size, default=(128, 128), help="training crop HxW")
    parser.add_argument("--scale", dest="scale_range", type=float, nargs=2, default=(0.5, 2.0), help="random scale range")
    parser.add_argument("--loss", choices=list(LOSS_NAMES), default="ce", help="wce/wfocal weight class c by (N - N_c) / N; mfb: median frequency; ohem: CE over the hard pixels")
    parser.add_argument("--gamma", dest="focal_gamma", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--schedule", choices=["poly", "cosine"], default="poly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=1, help="validate (and pick the best checkpoint) every N epochs and after the last")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", dest="output_dir", default="runs/default")
    parser.add_argument("--flops-size", type=_size, default=(360, 480), help="input size for the FLOPs in the model card")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available; torchrun picks per rank)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (with --recipe: from each model's OUT/NAME/last.pt)")
    parser.add_argument("--stop-after", type=int, help="end this run (with --recipe: this call) after N epochs (continue later with --resume)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    recipe = parser.add_argument_group("a recipe in lock-step (--recipe FILE; the options above then stay unset, but --data, --out, --device)")
    recipe.add_argument("--recipe", type=Path, help="recipe file (recipes/*.yaml): train all its models side by side on one device")
    recipe.add_argument("--archs", nargs="+", choices=list(ARCHITECTURES), help="only these architectures of the recipe (their extra seeds and peers too)")
    recipe.add_argument("--no-peers", dest="peers", action="store_false", help="leave out the recipe's smp peers")
    recipe.add_argument("--models", nargs="+", help="only these models, by run folder name (unet-seed1, smp-unet, ...)")
    recipe.add_argument("--budget-minutes", type=float, default=24 * 60.0, help="wall-clock budget from start to written cards")
    recipe.add_argument("--fit-budget", action="store_true", help="time the second epoch and shorten every schedule to the epochs that fit the budget (a run's first call only)")
    recipe.add_argument("--checkpoint-every", type=int, default=1, help="write each model's last.pt every N epochs")
    recipe.add_argument("--frame-size", type=_size, help="resize the frames to HxW first (short experiments)")
    recipe.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE", help="replace recipe training settings (YAML values), e.g. epochs=2 crop_size=[64,96]")


RECIPE_RUN_OPTIONS = ("recipe", "archs", "peers", "budget_minutes", "fit_budget", "checkpoint_every", "frame_size", "override", "resume", "stop_after", "models")
SHARED_OPTIONS = ("data_root", "output_dir", "device", "command", "func", "progress")


def parse_overrides(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise SystemExit(f"--override takes KEY=VALUE items, got {item!r}")
        try:
            values[key] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise SystemExit(f"--override {item!r}: the value is not YAML ({error})") from None
    return values


def run_recipe(args: argparse.Namespace) -> int:
    """``train --recipe``: every model of the recipe in lock-step (segmodels.training.loop)."""
    defaults = vars(build_parser().parse_args(["train"]))
    given = sorted(f"--{key.replace('_', '-')}" for key, value in vars(args).items()
                   if key not in RECIPE_RUN_OPTIONS + SHARED_OPTIONS and key in defaults and value != defaults[key])
    if given:
        raise SystemExit(f"with --recipe the recipe file sets the training; {', '.join(given)} would be ignored: change the recipe or use --override KEY=VALUE")
    if args.data_root is None:
        raise SystemExit("--recipe needs --data CAMVID_DIR (train/, trainannot/, val/, valannot/)")
    try:
        recipe = load_recipe(args.recipe)
        frames = read_camvid_frames(args.data_root, args.frame_size)
        run = LockstepRun(budget_seconds=args.budget_minutes * 60, fit_budget=args.fit_budget, checkpoint_every=args.checkpoint_every, device=args.device,
                          resume=args.resume, stop_after=args.stop_after)
        out = Path(args.output_dir if args.output_dir != defaults["output_dir"] else f"runs/{recipe.name}")
        cards = train_recipe(recipe, frames, str(args.data_root), out, run, args.archs, args.peers, log=lambda text: print(text, flush=True), models=args.models,
                             **parse_overrides(args.override))
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{len(cards)} cards in {out}/*/card.json")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if args.recipe is not None:
        return run_recipe(args)
    values = {k: v for k, v in vars(args).items() if k not in ("command", "progress", "func", *RECIPE_RUN_OPTIONS)}
    card = train(TrainConfig.from_dict(values), resume=args.resume, show_progress=args.progress, stop_after=args.stop_after)
    if card:
        print(f"best val mIoU {card['val_miou']:.4f} (epoch {card['best_epoch']}); card: {Path(args.output_dir) / 'card.json'}")
    return 0


def load_for_evaluation(target: str, device: str):
    """A zoo name (``camvid/unetpp``) or a checkpoint path -> (model, card-like spec)."""
    path = Path(target)
    if path.suffix == ".pt" and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_from_spec(state["spec"])
        model.load_state_dict(state["model"])
        return model.to(device).eval(), state["spec"]
    if target in zoo.list_models():
        return zoo.load_model(target, device), zoo.load_card(target)
    raise SystemExit(f"{target!r} is neither a checkpoint file (.pt) nor a shipped model ({', '.join(zoo.list_models()) or 'none shipped'})")


def run_evaluate(args: argparse.Namespace) -> int:
    device = args.device or _default_device()
    model, _ = load_for_evaluation(args.model, device)
    try:
        dataset = build_dataset(args.dataset, args.data_root, split=args.split, transform=eval_transform())
        tta = TestTimeAugmentation(tuple(args.tta_scales), args.tta_flip) if args.tta_flip or args.tta_scales != [1.0] else None
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"cannot read the dataset: {error}") from None
    info = dataset.info
    if args.images is not None:
        dataset = Subset(dataset, range(min(args.images, len(dataset))))
    options = {"depth": args.depth} if args.depth else {}
    started = time.perf_counter()
    matrix = evaluate(model, dataset, info.num_classes, info.ignore_index, device, show_progress=True, tta=tta, **options)
    seconds = time.perf_counter() - started
    report = evaluation_report(matrix, info.class_names, args.split, len(dataset))
    report["model"] = args.model
    report["seconds_per_image"] = seconds / max(1, len(dataset))
    report["seconds_device"] = f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else device
    if tta is not None:
        report["tta"] = tta.describe()
    if args.images is not None:
        report["first_images_only"] = args.images
    if args.depth:
        report["depth"] = args.depth
    print(format_report(report))
    print(f"  {report['seconds_per_image']:.3f} s per image" + (f" ({tta.passes} passes each)" if tta else ""))
    if args.json:
        write_report(report, args.json)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from .image_loading import ImageLoadError, load_image

    try:
        model = zoo.pretrained(args.model, args.device or _default_device())
        card = zoo.read_card(args.model)
        image = load_image(args.image)
    except (zoo.WeightsError, ImageLoadError) as error:
        raise SystemExit(str(error)) from None
    if args.depth is not None and args.depth not in model.pruning_depths:
        raise SystemExit(f"{args.model} has no pruning depth {args.depth} (depths: {', '.join(map(str, model.pruning_depths)) or 'none'})")
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div(255).to(next(model.parameters()).device)
    with torch.inference_mode():
        labels = model(x, **({"depth": args.depth} if args.depth else {})).argmax(1)[0].cpu().numpy().astype("uint8")
    output = card.dataset.colorize(labels) if args.colour else labels
    Image.fromarray(output).save(args.out)
    present = ", ".join(card.dataset.class_names[c] for c in sorted(set(labels.flatten().tolist())))
    print(f"{args.out}: {labels.shape[1]}x{labels.shape[0]} {'colour mask' if args.colour else 'class ids'} from {args.model}; classes: {present}")
    return 0


def run_test_card(args: argparse.Namespace) -> int:
    from .testset import AlreadyEvaluatedOnTest, record_test

    weights_dir = Path(args.weights) if args.weights else zoo.WEIGHTS_DIR
    for name in args.models:
        try:
            card = record_test(name, args.data_root, weights_dir, device=args.device or _default_device(), again=args.again, show_progress=True)
        except (AlreadyEvaluatedOnTest, zoo.WeightsError, FileNotFoundError, ValueError) as error:
            raise SystemExit(f"{name}: {error}") from None
        for result in card.test.results:
            at = "" if result.depth is None else f" L{result.depth}"
            interval = result.miou_interval
            print(f"{name}{at}: test mIoU {result.miou:.4f} (95% interval {interval.low:.4f}-{interval.high:.4f}), "
                  f"mean class acc. {result.mean_class_accuracy:.4f}, pixel acc. {result.pixel_accuracy:.4f}, {result.num_images} images")
    return 0


def run_export(args: argparse.Namespace) -> int:
    extra = {key: json.loads(Path(path).read_text()) for key, path in (("evaluation", args.evaluation), ("benchmark", args.benchmark)) if path}
    path = zoo.export_model(args.run, args.name, extra=extra, seed_run_dirs=args.seed_run)
    print(f"exported {args.run}/best.pt to {path}")
    return 0


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_zoo(args: argparse.Namespace) -> int:
    weights_dir = Path(args.weights) if args.weights else zoo.WEIGHTS_DIR
    rows = zoo.summary(weights_dir)
    if not rows:
        print("no shipped models")
        return 0
    print("| model | val mIoU | val mean class acc. | test mIoU (95% interval) | test mean class acc. | params (M) | GFLOPs | latency (ms) | bench | epochs | training |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        bench = f"{r['bench_input']} {r['bench_device']}" if r["bench_input"] else "-"
        duration = f"{r['train_minutes']:.0f} min" if r["train_minutes"] >= 10 else f"{r['train_minutes'] * 60:.0f} s"
        training = f"{duration} on {r['train_device']}" if r["train_device"] else "-"
        test = _fixed(r["test_miou"], 4) + (f" ({r['test_interval'][0]:.4f}-{r['test_interval'][1]:.4f})" if r["test_interval"] else "")
        print(f"| {r['model']} | {_fixed(r['val_miou'], 4)} | {_fixed(r['val_mean_class_accuracy'], 4)} | {test} | {_fixed(r['test_mean_class_accuracy'], 4)} "
              f"| {_fixed(r['params_m'], 2)} | {_fixed(r['gflops'], 2)} | {_fixed(r['median_ms'], 1)} | {bench} | {r['epochs'] or '-'} | {training} |")
    from .testset import paired_standings

    for set_name in sorted({row["model"].split("/")[0] for row in rows}):
        standings = paired_standings(set_name, weights_dir)
        if standings:
            print(f"\n{set_name} on test, each model against the best (paired bootstrap over the test images, 95% interval of the mIoU difference):")
            for name, difference, judged in standings:
                print(f"  {name}: best" if difference is None else f"  {name}: {difference.estimate:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]: {judged}")
        noise = zoo.seed_noise(set_name, weights_dir)
        if noise:
            runs = ", ".join(f"seed {seed} {miou:.4f}" for seed, miou in zip(noise["seeds"], noise["val_miou"]))
            print(f"\n{set_name} run-to-run noise: {noise['model']} trained with the same recipe, val mIoU {runs}: spread {noise['spread']:.4f} "
                  "(each seed at its best validation: not used for verdicts)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segmodels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train a model (also under torchrun)")
    add_train_arguments(train_parser)
    train_parser.set_defaults(func=run_train)

    evaluate_parser = commands.add_parser("evaluate", help="evaluate at full native resolution")
    evaluate_parser.add_argument("--model", required=True, help="checkpoint .pt or shipped name such as camvid/unetpp")
    evaluate_parser.add_argument("--dataset", choices=["camvid", "folder", "shapes"], default="camvid")
    evaluate_parser.add_argument("--data", dest="data_root")
    evaluate_parser.add_argument("--split", default="val")
    evaluate_parser.add_argument("--depth", type=int, choices=[1, 2, 3, 4], help="U-Net++ pruning depth")
    evaluate_parser.add_argument("--device")
    evaluate_parser.add_argument("--json", help="write the report here")
    evaluate_parser.add_argument("--tta-flip", action="store_true", help="test-time augmentation: also run the mirrored image and average the probabilities")
    evaluate_parser.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], help="test-time augmentation: run the image at these scales (e.g. 0.75 1 1.25)")
    evaluate_parser.add_argument("--images", type=int, help="only the first N images of the split (e.g. to time test-time augmentation)")
    evaluate_parser.set_defaults(func=run_evaluate)

    bench_parser = commands.add_parser("bench", help="time models (median and IQR of timed runs)")
    add_bench_arguments(bench_parser, _size)
    bench_parser.set_defaults(func=lambda args: run_bench(args, load_for_evaluation))

    export_parser = commands.add_parser("export", help="copy a run's best checkpoint into the weights folder ($SEGMODELS_WEIGHTS, else assets/weights) as fp16 with its card")
    export_parser.add_argument("--run", required=True, help="training output directory")
    export_parser.add_argument("--name", required=True, help="zoo name such as camvid/unet")
    export_parser.add_argument("--evaluation", help="evaluate --json report to put in the card")
    export_parser.add_argument("--benchmark", help="bench --json rows to put in the card")
    export_parser.add_argument("--seed-run", action="append", default=[], type=Path,
                               help="a run of the same recipe with another seed (repeatable): the card records the seeds' val mIoU spread")
    export_parser.set_defaults(func=run_export)

    predict_parser = commands.add_parser("predict", help="segment an image with a shipped model and write the mask as a PNG")
    predict_parser.add_argument("image", help="an image file (JPEG, PNG, WebP...)")
    predict_parser.add_argument("--model", default="camvid/unet", help="shipped name such as camvid/unetpp (python -m segmodels zoo lists them)")
    predict_parser.add_argument("--depth", type=int, help="U-Net++ pruning depth")
    predict_parser.add_argument("--out", default="mask.png", help="PNG to write")
    predict_parser.add_argument("--colour", action="store_true", help="the dataset's class colours instead of class ids")
    predict_parser.add_argument("--device")
    predict_parser.set_defaults(func=run_predict)

    test_parser = commands.add_parser("test-card", help="evaluate shipped models once on their test split; write the figures and bootstrap intervals into their cards")
    test_parser.add_argument("models", nargs="+", help="shipped names such as camvid/unet")
    test_parser.add_argument("--data", dest="data_root", required=True, help="dataset root holding the test split")
    test_parser.add_argument("--weights", help="zoo folder (default: $SEGMODELS_WEIGHTS, else assets/weights)")
    test_parser.add_argument("--device")
    test_parser.add_argument("--again", action="store_true", help="evaluate although the card already holds a test record of these weights (to reproduce it)")
    test_parser.set_defaults(func=run_test_card)

    zoo_parser = commands.add_parser("zoo", help="table of the shipped models from their cards (evaluate and bench results)")
    zoo_parser.add_argument("--weights", help="zoo folder (default: $SEGMODELS_WEIGHTS, else assets/weights)")
    zoo_parser.set_defaults(func=run_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
