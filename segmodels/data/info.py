"""Dataset metadata: class names, display colours and the ignored label id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    """Names and colours of the classes of a segmentation dataset.

    Class ids are ``0 .. num_classes - 1``; ``ignore_index`` (if any) marks pixels that
    are left out of losses and metrics and is not one of the classes.
    """

    name: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.class_names)
        colors = tuple(tuple(int(v) for v in c) for c in self.colors)
        if len(names) != len(colors):
            raise ValueError(f"{self.name}: {len(names)} class names but {len(colors)} colours")
        for name, color in zip(names, colors):
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                raise ValueError(f"{self.name}: colour of class {name!r} must be 3 values in 0..255, got {color}")
        if self.ignore_index is not None and 0 <= self.ignore_index < len(names):
            raise ValueError(
                f"{self.name}: ignore_index {self.ignore_index} collides with class {names[self.ignore_index]!r}"
            )
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "colors", colors)

    @property
    def num_classes(self) -> int:
        """Number of classes (the ignored id not counted)."""
        return len(self.class_names)

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """Map an H x W array of class ids to an H x W x 3 uint8 image; ignored and unknown ids are black."""
        mask = np.asarray(mask)
        lut = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        out = np.zeros((*mask.shape, 3), dtype=np.uint8)
        valid = (mask >= 0) & (mask < self.num_classes)
        out[valid] = lut[mask[valid].astype(np.intp)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, e.g. for a model card."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            class_names=tuple(data["class_names"]),
            colors=tuple(tuple(c) for c in data["colors"]),
            ignore_index=data.get("ignore_index"),
        )


CAMVID = DatasetInfo(
    name="camvid",
    class_names=(
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    ),
    colors=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ignore_index=11,
)

SHAPES = DatasetInfo(
    name="shapes",
    class_names=("background", "circle", "triangle", "rectangle"),
    colors=((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)),
    ignore_index=None,
)
