"""CamVid (11 classes, 360x480, SegNet layout): ``<root>/<split>/*.png`` with label maps in ``<root>/<split>annot``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..image_loading import load_image_and_mask
from .info import CAMVID
from .transforms import PairTransform, eval_transform, to_tv_pair


def splits_present(root: str | Path) -> list[str]:
    """Splits of a CamVid folder that have both an image and an annotation folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (root / f"{p.name}annot").is_dir())


class CamVidDataset(Dataset):
    """CamVid split as ``(image float 3 x H x W in [0, 1], mask int64 H x W)`` pairs; void is id 11."""

    info = CAMVID

    def __init__(self, root: str | Path, split: str = "train", transform: PairTransform | None = None):
        self.root = Path(root)
        self.split = split
        self.transform = transform or eval_transform()
        if not self.root.is_dir():
            raise FileNotFoundError(f"CamVid root {self.root} does not exist")
        self.image_dir = self.root / split
        self.annot_dir = self.root / f"{split}annot"
        for folder in (self.image_dir, self.annot_dir):
            if not folder.is_dir():
                present = ", ".join(splits_present(self.root)) or "none"
                raise FileNotFoundError(
                    f"CamVid split {split!r}: folder {folder} is missing (splits present in {self.root}: {present})"
                )
        self.files = sorted(self.image_dir.glob("*.png"))
        if not self.files:
            raise FileNotFoundError(f"CamVid split {split!r}: no .png images in {self.image_dir}")
        self.mask_files = [self.annot_dir / f.name for f in self.files]
        missing = [m.name for m in self.mask_files if not m.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise FileNotFoundError(
                f"CamVid split {split!r}: {len(missing)} image(s) have no annotation in {self.annot_dir}: {shown}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_image_and_mask(self.files[index], self.mask_files[index], self.info.num_classes, self.info.ignore_index)
        return self.transform(*to_tv_pair(image, mask))
