"""Where the image of a request comes from: a bundled example (with its ground truth) or an
upload (optionally with a ground-truth mask). Everything goes through
:mod:`segmodels.image_loading`; its :class:`ImageLoadError` messages become :class:`InputError`.

An upload's identity is the SHA-256 of its bytes (and of its mask's), so the same picture
uploaded twice is the same image, and two different pictures never share a name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmodels.data import CAMVID, render_shapes
from segmodels.image_loading import ImageLoadError, load_image_with_original_size, load_mask

from .catalogue import DATASETS, TRAINED_ON, UNLABELLED_COLOURS, Example
from .failures import InputError

SMALL_SIDE = 64  # the shorter side below which an upload says little to the models


@dataclass
class Source:
    """The decoded image of a request and what is known about it."""

    key: str
    label: str
    image: np.ndarray  # H x W x 3 uint8
    gt: np.ndarray | None = None  # H x W class ids, or None
    gt_dataset: str | None = None  # the dataset whose class ids ``gt`` uses
    instances: np.ndarray | None = None  # H x W instance ids (0 = none), ground truth
    notes: list[str] = field(default_factory=list)
    original_size: tuple[int, int] | None = None  # (H, W) before downscaling, when it was downscaled

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def gt_for(self, dataset: str) -> np.ndarray | None:
        """The ground truth when it uses ``dataset``'s classes, else None."""
        return self.gt if self.gt is not None and self.gt_dataset == dataset else None


def load_example(example: Example, max_side: int) -> Source:
    """Decode an example with its ground truth (and instances for Shapes)."""
    if example.dataset == "shapes":
        image, mask, instances = render_shapes(example.seed, 0, example.size)
        return Source(example.key, example.label, image, mask, "shapes", instances)
    try:
        image, original = load_image_with_original_size(example.image_path, max_side=max_side)
        mask = load_mask(example.mask_path, original, CAMVID.num_classes, CAMVID.ignore_index, resize_to=image.shape[:2])
    except ImageLoadError as error:
        raise InputError(f"example {example.label} cannot be read: {error}") from error
    return Source(example.key, example.label, image, mask, "camvid")


def file_digest(path: str) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes ("" when it cannot be read:
    decoding it then reports why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()[:16]


def mask_rule(dataset: str) -> str:
    """How a ground-truth mask of ``dataset`` must be drawn, for the upload box."""
    info = DATASETS.get(dataset)
    if info is None:
        return "class ids (grey or palette PNG) or the class colours"
    unlabelled = ""
    if info.ignore_index is not None:
        colour = UNLABELLED_COLOURS.get(dataset)
        unlabelled = f"; unlabelled pixels: id {info.ignore_index}" + (f" or black {colour}" if colour else "")
    return f"class ids 0-{info.num_classes - 1} (grey or palette PNG) or the class colours{unlabelled}"


def load_upload(image_file: str, mask_file: str | None, dataset: str, max_side: int) -> Source:
    """Decode an uploaded image and, when given, its ground-truth mask in ``dataset``'s class ids
    (a single-channel id image, or an RGB image in the dataset's colours, with black for the
    unlabelled pixels of CamVid)."""
    try:
        image, original = load_image_with_original_size(image_file, max_side=max_side)
    except ImageLoadError as error:
        raise InputError(f"Image: {error}") from error
    source = Source(f"upload-{file_digest(image_file)}", f"upload {Path(image_file).name}", image)
    if min(source.size) < SMALL_SIDE:
        source.notes.append(f"Your image is only {source.size[1]}x{source.size[0]} px: the models learned from {TRAINED_ON.get(dataset, 'much larger images')}, "
                            f"and their deepest layers see a few pixels at most of an image under {SMALL_SIDE} px, so these masks say little about them.")
    if original != source.size:
        source.original_size = original
        source.notes.append(f"Your {original[1]}x{original[0]} px image was shrunk to {source.size[1]}x{source.size[0]} px (the models run on at most {max_side} px on the longest side).")
    if mask_file:
        info = DATASETS[dataset]
        try:
            source.gt = load_mask(mask_file, original, info.num_classes, info.ignore_index, palette=info.colors, ignore_colour=UNLABELLED_COLOURS.get(dataset), resize_to=image.shape[:2])
        except ImageLoadError as error:
            raise InputError(f"Ground-truth mask: {error} Allowed: {mask_rule(dataset)}.") from error
        source.gt_dataset = dataset
        source.key += f"-mask-{file_digest(mask_file)}"
    return source
