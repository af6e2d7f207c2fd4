"""A user's own dataset: ``<root>/images/*``, index masks in ``<root>/masks/*`` and a class file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset

from ..image_loading import load_image_and_mask
from .info import DatasetInfo
from .transforms import PairTransform, eval_transform, to_tv_pair

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
CLASS_FILES = ("classes.json", "classes.yaml", "classes.yml")


def load_class_file(root: str | Path) -> DatasetInfo:
    """Read ``classes.json`` / ``classes.yaml`` in ``root``:
    ``{"classes": [{"name": ..., "color": [r, g, b]}, ...], "ignore_index": 255}``."""
    root = Path(root)
    path = next((root / name for name in CLASS_FILES if (root / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no class file in {root}: expected one of {', '.join(CLASS_FILES)}")
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    classes = data.get("classes") if isinstance(data, dict) else None
    if not classes or not all(isinstance(c, dict) and "name" in c and "color" in c for c in classes):
        raise ValueError(f"{path}: expected a non-empty 'classes' list of {{name, color: [r, g, b]}} entries")
    return DatasetInfo(
        name=root.name,
        class_names=tuple(c["name"] for c in classes),
        colors=tuple(tuple(c["color"]) for c in classes),
        ignore_index=data.get("ignore_index"),
    )


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in files:
            raise ValueError(f"{folder}: two files share the stem {path.stem!r}: {files[path.stem].name}, {path.name}")
        files[path.stem] = path
    return files


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


class FolderDataset(Dataset):
    """Images and index masks (single-channel PNGs, e.g. mode L or P: palette indices are the
    class ids) paired by file stem, both read by :mod:`segmodels.image_loading`."""

    def __init__(self, root: str | Path, transform: PairTransform | None = None):
        self.root = Path(root)
        self.transform = transform or eval_transform()
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist")
        for sub in ("images", "masks"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"dataset folder {self.root} has no '{sub}' subfolder")
        self.info = load_class_file(self.root)
        images = _files_by_stem(self.root / "images")
        masks = _files_by_stem(self.root / "masks")
        if not images:
            raise FileNotFoundError(f"no images in {self.root / 'images'}")
        no_mask = sorted(images.keys() - masks.keys())
        no_image = sorted(masks.keys() - images.keys())
        if no_mask or no_image:
            problems = []
            if no_mask:
                problems.append(f"{len(no_mask)} image(s) without mask: {_listing(no_mask)}")
            if no_image:
                problems.append(f"{len(no_image)} mask(s) without image: {_listing(no_image)}")
            raise ValueError(f"{self.root}: unmatched file stems; " + "; ".join(problems))
        stems = sorted(images)
        self.files = [images[s] for s in stems]
        self.mask_files = [masks[s] for s in stems]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_image_and_mask(self.files[index], self.mask_files[index], self.info.num_classes, self.info.ignore_index)
        return self.transform(*to_tv_pair(image, mask))
