"""Datasets (CamVid, user folders, synthetic Shapes), their metadata and joint image/mask transforms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .camvid import CamVidDataset, splits_present
from .folder import FolderDataset, load_class_file
from .info import CAMVID, SHAPES, DatasetInfo
from .shapes import ShapesDataset, render_shapes
from .transforms import PairTransform, eval_transform, to_tv_pair, train_transform

DATASET_KINDS = ("camvid", "folder", "shapes")
SHAPES_SPLITS = {"train": {"seed": 0, "num_images": 4000}, "val": {"seed": 1, "num_images": 100}, "test": {"seed": 2, "num_images": 100}}


def build_dataset(
    kind: str,
    root: str | Path | None = None,
    split: str = "train",
    transform: PairTransform | None = None,
    **kwargs: Any,
) -> CamVidDataset | FolderDataset | ShapesDataset:
    """Dataset of ``kind`` ('camvid', 'folder' or 'shapes'); every dataset has ``.info``.

    ``folder`` reads ``<root>/<split>`` when that folder exists, else ``root`` itself for
    split 'train'. ``shapes`` needs no root: 'train' is seed 0 with 4000 images, 'val'
    seed 1 with 100, 'test' seed 2 with 100, size 128; ``num_images``, ``size`` and ``seed`` override these.
    """
    if kind == "shapes":
        if split not in SHAPES_SPLITS:
            raise ValueError(f"shapes has splits {', '.join(SHAPES_SPLITS)}, not {split!r}")
        params: dict[str, Any] = {**SHAPES_SPLITS[split], "size": 128, **kwargs}
        return ShapesDataset(transform=transform, **params)
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {', '.join(DATASET_KINDS)}")
    if root is None:
        raise ValueError(f"dataset kind {kind!r} needs a root folder")
    if kind == "camvid":
        return CamVidDataset(root, split=split, transform=transform, **kwargs)
    root = Path(root)
    if (root / split).is_dir():
        return FolderDataset(root / split, transform=transform, **kwargs)
    if split != "train":
        raise FileNotFoundError(f"folder dataset {root} has no {split!r} subfolder")
    return FolderDataset(root, transform=transform, **kwargs)


__all__ = [
    "CAMVID",
    "DATASET_KINDS",
    "SHAPES",
    "CamVidDataset",
    "DatasetInfo",
    "FolderDataset",
    "PairTransform",
    "ShapesDataset",
    "build_dataset",
    "eval_transform",
    "load_class_file",
    "render_shapes",
    "splits_present",
    "to_tv_pair",
    "train_transform",
]
