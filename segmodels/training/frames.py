"""A dataset held as uint8 tensors (what the lock-step trainer augments on its device):
from a CamVid-layout folder here, or from packed parts on a lent GPU (scripts/train_zoo_gpu.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..data import CamVidDataset


@dataclass
class FrameSet:
    """Images N x 3 x H x W (uint8) and label maps N x H x W (uint8, void as the dataset's
    ignore index) of the train and val splits, with each frame's file name."""

    train_images: Tensor
    train_masks: Tensor
    val_images: Tensor
    val_masks: Tensor
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)
    description: str = ""

    def to(self, device: torch.device) -> FrameSet:
        tensors = {name: getattr(self, name).to(device) for name in ("train_images", "train_masks", "val_images", "val_masks")}
        return FrameSet(**tensors, train_names=self.train_names, val_names=self.val_names, description=self.description)

    def limited(self, train_images: int | None, val_images: int | None) -> FrameSet:
        """The first ``train_images`` / ``val_images`` frames (all when None)."""
        train, val = slice(train_images), slice(val_images)
        return FrameSet(self.train_images[train], self.train_masks[train], self.val_images[val], self.val_masks[val], self.train_names[train], self.val_names[val],
                        self.description)

    def train_and_val(self) -> FrameSet:
        """Val's frames appended to train's (the final fit of the train+val protocol); val stays."""
        if self.train_images.shape[-2:] != self.val_images.shape[-2:]:
            raise ValueError(f"train frames are {tuple(self.train_images.shape[-2:])}, val frames {tuple(self.val_images.shape[-2:])}: cannot train on both")
        return FrameSet(torch.cat([self.train_images, self.val_images]), torch.cat([self.train_masks, self.val_masks]), self.val_images, self.val_masks,
                        self.train_names + self.val_names, self.val_names, self.description)


def resized(images: Tensor, masks: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Images resized bilinearly with antialiasing, label maps by nearest neighbour."""
    scaled = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    labels = F.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(torch.uint8)
    return scaled, labels


def read_split(root: Path, split: str, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """A CamVid-layout split as uint8 tensors (all frames must share one size)."""
    dataset = CamVidDataset(root, split=split)
    images, masks = [], []
    for image_path, mask_path in zip(dataset.files, dataset.mask_files):
        with Image.open(image_path) as image:
            images.append(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1))
        with Image.open(mask_path) as mask:
            masks.append(torch.from_numpy(np.asarray(mask).copy()))
    sizes = {tuple(image.shape[-2:]) for image in images} | {tuple(mask.shape) for mask in masks}
    if len(sizes) != 1:
        raise ValueError(f"{root / split}: frames and label maps must share one size; found {sorted(sizes)}")
    stacked_images, stacked_masks = torch.stack(images), torch.stack(masks)
    if size is not None:
        stacked_images, stacked_masks = resized(stacked_images, stacked_masks, size)
    return stacked_images, stacked_masks, [path.name for path in dataset.files]


def read_camvid_frames(root: str | Path, size: tuple[int, int] | None = None) -> FrameSet:
    """CamVid's train and val splits (never test) from ``root``, resized to ``size`` when given."""
    root = Path(root)
    train_images, train_masks, train_names = read_split(root, "train", size)
    val_images, val_masks, val_names = read_split(root, "val", size)
    described = f"{root}, frames {'as stored' if size is None else f'resized to {size[0]}x{size[1]}'}"
    return FrameSet(train_images, train_masks, val_images, val_masks, train_names, val_names, described)


class FrameDataset(Dataset):
    """Frames as ``(float image in [0, 1], int64 mask)`` for ``segmodels.evaluation.evaluate``."""

    def __init__(self, images: Tensor, masks: Tensor, ignore_index: int):
        self.images, self.masks, self.ignore_index = images, masks, ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].float().div(255), self.masks[index].long()
