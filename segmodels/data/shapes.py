"""Synthetic Shapes: circles, triangles and rectangles on textured, noisy backgrounds.

Image ``index`` of ``seed`` is rendered from ``np.random.default_rng([seed, index])`` alone,
so it is the same whatever the access order. Object colour is drawn independently of the
class (but always stands out from the background under it), sizes run from 16 px to most of
the image, every object lies wholly inside the image, and later objects occlude earlier ones
(an object that would hide more than a quarter of an earlier one is left out, so every visible
object keeps enough of its shape to be recognised), so telling the classes apart needs shape,
i.e. a large enough receptive field.

Imbalanced Shapes (:func:`render_imbalanced_shapes`) is the class-imbalance variant: 1 to 3
circles and rectangles of the usual sizes, and only in a ``rare_image_fraction`` (0.25) of the
images one small triangle (extent ``RARE_EXTENT`` = 10..16 px, about 50..140 px of area),
drawn last. At 64 x 64 the triangles then hold about 0.5 % of the pixels (background about
77 %, circles 13 %, rectangles 10 %), about the share of CamVid's rarest classes, so a loss
that counts every pixel alike can all but ignore them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from .info import SHAPES
from .transforms import PairTransform, eval_transform, to_tv_pair

CIRCLE, TRIANGLE, RECTANGLE = 1, 2, 3
MIN_EXTENT = 16.0
MIN_VISIBLE_FRACTION = 0.75
MIN_CONTRAST = 80.0
MAX_EXTENT_FRACTION = 0.8
OBJECTS_PER_IMAGE = (1, 4)
COMMON_OBJECTS_PER_IMAGE = (1, 3)
RARE_CLASS = TRIANGLE
RARE_EXTENT = (10.0, 16.0)
RARE_IMAGE_FRACTION = 0.25
IMBALANCED_STREAM = 1
STYLES = ("solid", "textured", "outlined")
STYLE_PROBABILITIES = (0.5, 0.25, 0.25)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _contrasting_color(rng: np.random.Generator, reference: np.ndarray, attempts: int = 32) -> np.ndarray:
    """A random colour at least ``MIN_CONTRAST`` (RGB distance) from ``reference``, so the object is visible;
    the farthest of ``attempts`` draws if none is that far."""
    colors = rng.integers(0, 256, (attempts, 3)).astype(np.float32)
    distances = np.linalg.norm(colors - reference, axis=1)
    far_enough = np.flatnonzero(distances >= MIN_CONTRAST)
    return colors[far_enough[0] if far_enough.size else int(distances.argmax())]


def _stripes(rng: np.random.Generator, size: int, hard_edges: bool = True) -> np.ndarray:
    """Sine (or, with ``hard_edges``, sometimes square-wave) stripes in [0, 1] at a random
    angle, period and phase."""
    yy, xx = _grid(size)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(4.0, 24.0)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period) + rng.uniform(0.0, 2 * np.pi))
    return (wave > 0).astype(np.float32) if hard_edges and rng.random() < 0.5 else 0.5 + 0.5 * wave


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise, size x size x 3 floats in [0, 255]."""
    cells = int(rng.integers(2, 10))
    small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _blend(base: np.ndarray, color: np.ndarray, weight: np.ndarray) -> np.ndarray:
    weight = weight[..., None]
    return base * (1.0 - weight) + color * weight


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise, optionally overlaid with a colour gradient and faint soft stripes
    (so object outlines stay the sharpest edges: the class is in the shape)."""
    base = _random_color(rng)
    background = base + rng.uniform(0.2, 0.5) * (_smooth_noise(rng, size) - 127.5)
    if rng.random() < 0.5:
        yy, xx = _grid(size)
        angle = rng.uniform(0.0, 2 * np.pi)
        ramp = xx * np.cos(angle) + yy * np.sin(angle)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        background = _blend(background, _random_color(rng), rng.uniform(0.3, 0.8) * ramp)
    if rng.random() < 0.6:
        background = _blend(background, _random_color(rng), rng.uniform(0.1, 0.3) * _stripes(rng, size, hard_edges=False))
    return background


def _outline(
    rng: np.random.Generator, shape_class: int, size: int, extent_range: tuple[float, float] | None = None
) -> list[tuple[float, float]] | tuple[float, ...]:
    """Polygon vertices (triangle, rectangle) or ellipse box (circle) of one random object,
    placed wholly inside the image (a shape cut by the border can look like another class).
    The extent is log-uniform in [``MIN_EXTENT``, ``MAX_EXTENT_FRACTION * size``], or uniform
    in ``extent_range`` when given."""
    if extent_range is None:
        extent = float(np.exp(rng.uniform(np.log(MIN_EXTENT), np.log(MAX_EXTENT_FRACTION * size))))
    else:
        extent = float(rng.uniform(*extent_range))
    if shape_class == CIRCLE:
        r = extent / 2
        cx, cy = rng.uniform(r, size - 1 - r, 2)
        return (cx - r, cy - r, cx + r, cy + r)
    angle = rng.uniform(0.0, 2 * np.pi)
    if shape_class == TRIANGLE:
        angles = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3 + rng.uniform(-0.35, 0.35, 3)
        radius = extent / np.sqrt(3.0)
        px, py = radius * np.cos(angles), radius * np.sin(angles)
    else:
        w, h = extent / 2, extent * rng.uniform(0.35, 1.0) / 2
        cx0, cy0 = np.array([-w, w, w, -w]), np.array([-h, -h, h, h])
        px = cx0 * np.cos(angle) - cy0 * np.sin(angle)
        py = cx0 * np.sin(angle) + cy0 * np.cos(angle)
    fit = min(1.0, (size - 1) / float(np.ptp(px)), (size - 1) / float(np.ptp(py)))
    px, py = px * fit, py * fit
    # A shape scaled to fill the image can leave a range of -1e-15 from rounding; clamp it to one point.
    cx = rng.uniform(-px.min(), max(-px.min(), size - 1 - px.max()))
    cy = rng.uniform(-py.min(), max(-py.min(), size - 1 - py.max()))
    return list(zip((cx + px).tolist(), (cy + py).tolist()))


def _draw_object(
    rng: np.random.Generator, shape_class: int, image: np.ndarray, extent_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one object over ``image``: (pixel colours size x size x 3, canvas with 255 = fill and
    128 = outline, 0 = outside)."""
    size = image.shape[0]
    geometry = _outline(rng, shape_class, size, extent_range)
    style = STYLES[rng.choice(len(STYLES), p=STYLE_PROBABILITIES)]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    outline = {"outline": 128, "width": int(rng.integers(1, 4))} if style == "outlined" else {}
    if shape_class == CIRCLE:
        draw.ellipse(geometry, fill=255, **outline)
    else:
        draw.polygon(geometry, fill=255, **outline)
    coverage = np.asarray(canvas)
    color = _contrasting_color(rng, image[coverage > 0].mean(axis=0))
    pixels = np.broadcast_to(color, (size, size, 3))
    if style == "textured":
        pattern = _stripes(rng, size) if rng.random() < 0.5 else _smooth_noise(rng, size).mean(axis=2) / 255.0
        pixels = _blend(pixels, _random_color(rng), rng.uniform(0.2, 0.5) * pattern)
    elif style == "outlined":
        pixels = np.where((coverage == 128)[..., None], _random_color(rng), pixels)
    return pixels, coverage


def _hides_too_much(instances: np.ndarray, inside: np.ndarray, full_areas: np.ndarray, new_id: int) -> bool:
    """Whether drawing ``inside`` on top would leave an earlier object under ``MIN_VISIBLE_FRACTION`` visible."""
    remaining = np.bincount(instances[~inside].ravel(), minlength=new_id)[1:new_id]
    drawn = full_areas[1:new_id] > 0
    return bool(np.any(remaining[drawn] < MIN_VISIBLE_FRACTION * full_areas[1:new_id][drawn]))


def _place_objects(
    rng: np.random.Generator,
    image: np.ndarray,
    num_objects: int,
    objects: Iterable[tuple[int, tuple[float, float] | None]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``num_objects`` objects, each a (class, extent range) taken from ``objects`` just
    before it is drawn, over the float ``image``, add sensor noise, and return (RGB uint8,
    class ids uint8, instance ids uint16)."""
    size = image.shape[0]
    mask = np.zeros((size, size), dtype=np.uint8)
    instances = np.zeros((size, size), dtype=np.uint16)
    full_areas = np.zeros(num_objects + 1, dtype=np.int64)
    for instance_id, (shape_class, extent_range) in zip(range(1, num_objects + 1), objects):
        pixels, canvas = _draw_object(rng, shape_class, image, extent_range)
        inside = canvas > 0
        if _hides_too_much(instances, inside, full_areas, instance_id):
            continue
        full_areas[instance_id] = inside.sum()
        image[inside] = pixels[inside]
        mask[inside] = shape_class
        instances[inside] = instance_id
    image += rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
    visible = np.unique(instances)
    relabel = np.zeros(num_objects + 1, dtype=np.uint16)
    relabel[visible] = np.arange(len(visible), dtype=np.uint16)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask, relabel[instances]


def render_shapes(seed: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of ``seed``: (RGB uint8 H x W x 3, class ids uint8 H x W,
    instance ids uint16 H x W with 0 = background and 1..n for the visible objects)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    num_objects = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    objects = ((int(rng.integers(CIRCLE, RECTANGLE + 1)), None) for _ in range(num_objects))
    return _place_objects(rng, image, num_objects, objects)


def check_imbalance_options(size: int, rare_image_fraction: float, rare_extent: tuple[float, float]) -> None:
    """Raise ValueError unless the Imbalanced Shapes options are valid for ``size``-pixel images."""
    if not 0.0 <= rare_image_fraction <= 1.0:
        raise ValueError(f"rare_image_fraction must lie in [0, 1], got {rare_image_fraction}")
    if len(rare_extent) != 2 or not 1.0 <= rare_extent[0] <= rare_extent[1] <= MAX_EXTENT_FRACTION * size:
        raise ValueError(
            f"rare_extent must be (low, high) with 1 <= low <= high <= {MAX_EXTENT_FRACTION * size:g} px, got {rare_extent}"
        )


def render_imbalanced_shapes(
    seed: int,
    index: int,
    size: int = 64,
    rare_image_fraction: float = RARE_IMAGE_FRACTION,
    rare_extent: tuple[float, float] = RARE_EXTENT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of Imbalanced Shapes ``seed`` (arrays as :func:`render_shapes`): 1 to 3
    circles or rectangles, then, with probability ``rare_image_fraction``, one triangle of
    extent uniform in ``rare_extent`` on top. Drawn from its own random stream, so it never
    repeats a plain Shapes image."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    check_imbalance_options(size, rare_image_fraction, rare_extent)
    rng = np.random.default_rng([seed, index, IMBALANCED_STREAM])
    image = _background(rng, size)
    num_common = int(rng.integers(COMMON_OBJECTS_PER_IMAGE[0], COMMON_OBJECTS_PER_IMAGE[1] + 1))
    has_rare = bool(rng.random() < rare_image_fraction)
    objects = [(int(rng.choice((CIRCLE, RECTANGLE))), None) for _ in range(num_common)]
    if has_rare:
        objects.append((RARE_CLASS, (float(rare_extent[0]), float(rare_extent[1]))))
    return _place_objects(rng, image, len(objects), objects)


class ShapesDataset(Dataset):
    """``num_images`` Shapes images of ``size`` x ``size`` as (image, mask) tensors like :class:`CamVidDataset`."""

    info = SHAPES

    def __init__(self, num_images: int, size: int = 128, seed: int = 0, transform: PairTransform | None = None):
        if num_images < 0 or size < 2 * MIN_EXTENT:
            raise ValueError(f"need num_images >= 0 and size >= {2 * MIN_EXTENT:g}, got {num_images}, {size}")
        self.num_images = num_images
        self.size = size
        self.seed = seed
        self.transform = transform or eval_transform()

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw (image, mask, instances) arrays of image ``index``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return render_shapes(self.seed, index, self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask, _ = self.sample(index)
        return self.transform(*to_tv_pair(image, mask))


class ImbalancedShapesDataset(ShapesDataset):
    """``num_images`` Imbalanced Shapes images (:func:`render_imbalanced_shapes`): triangles are
    the rare, small class."""

    def __init__(
        self,
        num_images: int,
        size: int = 64,
        seed: int = 0,
        transform: PairTransform | None = None,
        rare_image_fraction: float = RARE_IMAGE_FRACTION,
        rare_extent: tuple[float, float] = RARE_EXTENT,
    ):
        super().__init__(num_images, size, seed, transform)
        check_imbalance_options(size, rare_image_fraction, rare_extent)
        self.rare_image_fraction = rare_image_fraction
        self.rare_extent = rare_extent

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return render_imbalanced_shapes(self.seed, index, self.size, self.rare_image_fraction, self.rare_extent)
