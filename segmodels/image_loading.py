"""The one place where images and ground-truth masks enter the project.

Uploads, bundled examples, dataset samples and masks all go through :func:`load_image` /
:func:`load_mask` (:func:`load_image_and_mask` for a dataset's image and mask). Every
problem with the *input* is raised as :class:`ImageLoadError` (a ``ValueError``) whose
message says what is wrong and what to do; the UI shows it as-is. Files are identified by
content, never by name, and pixel limits are checked from the header before anything is
decoded.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_DECODE_BYTES",
    "MAX_MASK_DECODE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "ImageLoadError",
    "ImageSource",
    "load_image",
    "load_image_with_original_size",
    "load_image_and_mask",
    "load_mask",
]

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
MAX_PIXELS = 40_000_000
MAX_SIDE = 1024
MAX_DECODE_BYTES = 320 * 2**20  # memory one image may need while it is decoded and converted to 8-bit RGB
MAX_MASK_DECODE_BYTES = 64 * 2**20  # memory one mask may need while it is decoded and turned into class ids

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_MASK_ID_MODES = frozenset({"1", "L", "P", "I", "F"})
_MASK_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX"})
# What Pillow may raise while parsing or decoding a broken file.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error)
_FORMATS_TEXT = ", ".join(ACCEPTED_FORMATS)


class ImageLoadError(ValueError):
    """An input image or mask cannot be used; the message says why and what to do."""


# --------------------------------------------------------------------------- public API


def load_image(source: ImageSource, max_side: int | None = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load ``source`` as an H x W x 3 uint8 RGB array, longest side at most ``max_side``."""
    return load_image_with_original_size(source, max_side, max_pixels)[0]


def load_image_with_original_size(
    source: ImageSource, max_side: int | None = MAX_SIDE, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`load_image`, also returning the (height, width) before downscaling.

    The original size is measured after EXIF orientation, so it is the size a mask
    drawn on the displayed image must have (pass it as ``load_mask(expected_size=...)``).
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    if isinstance(source, np.ndarray):
        image = Image.fromarray(_array_to_uint8(source, max_pixels))
    else:
        image = _load_pil(source, max_pixels)
    original = (image.height, image.width)
    rgb = _downscale(_to_rgb(image), max_side)
    return np.array(rgb, dtype=np.uint8), original


def load_mask(
    source: ImageSource,
    expected_size: tuple[int, int] | None,
    num_classes: int,
    ignore_index: int | None = None,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_colour: Sequence[int] | None = None,
    resize_to: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Load a ground-truth mask as an H x W array of class ids.

    Index images (L / P mode: palette *indices*, not colours), 16-bit single-channel
    images and integer arrays are read as ids. RGB masks need ``palette`` (one
    (r, g, b) colour per class); pixels of ``ignore_colour`` (e.g. CamVid's black void)
    become ``ignore_index``. The mask must be ``expected_size`` (height, width),
    the original image size; it is then resized with NEAREST to ``resize_to``
    (e.g. the downscaled image's size). Returns uint8 when every allowed id fits,
    else int64.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if palette is not None and len(palette) != num_classes:
        raise ValueError(f"palette has {len(palette)} colours but num_classes is {num_classes}; give one colour per class")
    if ignore_colour is not None and (ignore_index is None or palette is None):
        raise ValueError("ignore_colour needs a palette and an ignore_index to map it to")
    colours = None if palette is None else [*palette] + ([ignore_colour] if ignore_colour is not None else [])
    ids = _mask_ids(source, colours, max_pixels, expected_size, ignore=None if ignore_colour is None else (num_classes, ignore_index))
    _check_mask_size(ids.shape, expected_size)
    _check_mask_values(ids, num_classes, ignore_index)
    ids = ids.astype(_mask_dtype(num_classes, ignore_index), copy=False)
    return ids if resize_to is None else _resize_nearest(ids, resize_to)


def load_image_and_mask(
    image_source: ImageSource,
    mask_source: ImageSource,
    num_classes: int,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A dataset sample: the image at full size (H x W x 3 uint8 RGB, never downscaled) and
    its mask of class ids (index image), checked to have the image's size and only valid
    ids. Errors about the mask name its file."""
    image, size = load_image_with_original_size(image_source, max_side=None)
    try:
        mask = load_mask(mask_source, size, num_classes, ignore_index)
    except ImageLoadError as error:
        raise ImageLoadError(f"mask {_describe(mask_source)}: {error}") from error
    return image, mask


# --------------------------------------------------------------------------- opening and decoding


def _describe(source: object) -> str:
    """A short human name for ``source`` to use in messages."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    name = getattr(source, "name", None) or getattr(source, "filename", None)
    return f"'{Path(name).name}'" if isinstance(name, str) and name else "the image"


def _read_bytes(source: object, name: str) -> bytes:
    """The raw bytes of a path, bytes-like or binary file-like ``source``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise ImageLoadError(f"cannot open image: '{path}' {what}. Check the path and try again.")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(f"cannot read '{path}': {exc}. Check that the file is readable.") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file-like image sources must be opened in binary mode ('rb')")
        data = bytes(data)
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}; pass a path, bytes, a binary file, a PIL image or a numpy array")
    if not data:
        raise ImageLoadError(f"{name} is an empty file (0 bytes). Upload the image again or choose another file.")
    return data


def _sniff(data: bytes) -> str:
    """Name well-known non-image (or unsupported) formats, for a friendlier message."""
    head = data[:1024].lstrip().lower()
    if head.startswith(b"%pdf"):
        return " (it looks like a PDF document)"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return " (it looks like an SVG vector image)"
    if data[4:8] == b"ftyp":
        return " (it looks like a HEIC/AVIF photo or a video)"
    return ""


def _open(data: bytes, name: str) -> Image.Image:
    """Identify ``data`` by content; only :data:`ACCEPTED_FORMATS` are tried."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"{name} is not a supported image{_sniff(data)}. Accepted formats: {_FORMATS_TEXT}; "
            "convert the file to PNG or JPEG and try again."
        ) from exc


def _decode_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel that decoding an image of ``mode`` and converting it to 8-bit RGB needs:
    Pillow's own buffer (1 byte for single-band 8-bit modes, 2 for 16-bit, 4 for 32-bit and for
    every multi-band mode), a float32 working copy for high-depth modes, and the RGB result."""
    if mode.startswith("I;16"):
        stored, work = 2, 4 + 1
    elif mode in ("I", "F"):
        stored, work = 4, 4 + 1
    else:
        stored, work = (1 if mode in ("1", "L", "P") else 4), 0
    return stored + work + 3


def _check_size(width: int, height: int, max_pixels: int, name: str, mode: str = "RGB", bytes_per_pixel: int | None = None, budget: int = MAX_DECODE_BYTES,
                advice: str = "Save it as an 8-bit image, or downscale it") -> None:
    """Reject zero-sized images, images above ``max_pixels``, and images whose decoding would
    need more than ``budget`` bytes at ``bytes_per_pixel`` (default: an image's decoding to RGB),
    from the header, before decoding."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{name} has zero size ({width}x{height}); it contains no pixels. Choose another image.")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name} is too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:g} megapixels. Downscale it (e.g. to {MAX_SIDE} px on the longest side) and try again."
        )
    needed = width * height * (_decode_bytes_per_pixel(mode) if bytes_per_pixel is None else bytes_per_pixel)
    if needed > budget:
        raise ImageLoadError(
            f"{name} is too large to decode safely: {width}x{height} pixels in mode {mode} would need {needed / 2**20:.0f} MB "
            f"(the limit is {budget / 2**20:.0f} MB). {advice}, and try again."
        )


def _decode(data: bytes | Image.Image, name: str, max_pixels: int, check_header=None) -> Image.Image:
    """Open raw bytes (or take a PIL image), size-check from the header (``check_header(image)``
    instead of the image limits when given), then decode the first frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = data if isinstance(data, Image.Image) else _open(data, name)
            image.seek(0)
            if check_header is None:
                _check_size(image.width, image.height, max_pixels, name, image.mode)
            else:
                check_header(image)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(
                f"{name} is too large to load safely ({exc}). Downscale it and try again."
            ) from exc
        except ImageLoadError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageLoadError(
                f"{name} could not be decoded: the file is truncated or corrupt ({exc}). "
                "Re-export or re-download it and try again."
            ) from exc
    return image


def _orient(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image


def _load_pil(source: object, max_pixels: int, check_header=None) -> Image.Image:
    """Decoded, upright first frame of any non-array source."""
    name = _describe(source)
    data = source if isinstance(source, Image.Image) else _read_bytes(source, name)
    return _orient(_decode(data, name, max_pixels, check_header))


# --------------------------------------------------------------------------- pixel conversion


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """16/32-bit integer (I;16*, I) and float (F) images -> 8-bit grey.

    16-bit data (including 'I' images whose values fit 0..65535) is divided by 257,
    so 65535 -> 255 and 32768 -> 128. Floats in [0, 1] are multiplied by 255;
    anything else is stretched from its own min/max.
    """
    values = np.array(image, dtype=np.float32)  # the one working copy; converted in place
    if not np.isfinite(values).all():
        raise ImageLoadError("the image contains NaN or infinite values. Replace them and save it again.")
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0 and high <= 1:
        values *= 255
    elif image.mode != "F" and low >= 0 and high <= 65535:
        values /= 257
    else:
        values -= low
        values *= 255 / ((high - low) or 1)
    return np.rint(values, out=values).astype(np.uint8)


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten transparency onto a white background."""
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            return _composite_on_white(image)
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(f"the image's colour mode {image.mode!r} is not supported ({exc}). Save it as RGB.") from exc


def _downscale(image: Image.Image, max_side: int | None) -> Image.Image:
    """Shrink (antialiased, aspect kept) so the longest side is at most ``max_side``."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _array_to_uint8(array: np.ndarray, max_pixels: int) -> np.ndarray:
    """Validate an image array and convert it to uint8 H x W, H x W x 3 or H x W x 4."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageLoadError(f"an image array must be H x W, H x W x 1, H x W x 3 or H x W x 4; got shape {array.shape}.")
    _check_size(array.shape[1], array.shape[0], max_pixels, "the image array")
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.rint(array / 257).astype(np.uint8)
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind in "iu":
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise ImageLoadError(
                f"integer image values must be in 0..255, found {low}..{high}. "
                "Pass 16-bit data as uint16, or floats in [0, 1]."
            )
        return array.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageLoadError("the image array contains NaN or infinite values. Replace them first.")
        scale = 255 if array.max() <= 1 else 1
        return np.rint(np.clip(array * scale, 0, 255)).astype(np.uint8)
    raise ImageLoadError(f"image arrays of dtype {array.dtype} are not supported; use uint8, uint16, int, float or bool.")


# --------------------------------------------------------------------------- masks


def _mask_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel that turning a mask of ``mode`` into class ids needs at its peak:
    Pillow's buffer, its copy as an array, and the working arrays of :func:`_colours_to_ids`
    (colour modes: 32-bit colour keys and their temporaries) or of the value checks (id
    modes: comparisons, and float64 copies for float masks). Measured by
    ``tests/segmodels/test_image_loading.py::test_mask_decoding_stays_within_its_estimate``."""
    if mode in _MASK_COLOUR_MODES:
        return 4 + 3 + 3 * 4 + 2
    if mode in ("I", "F"):
        return 4 + 4 + 3 * 8 + 3
    if mode.startswith("I;16"):
        return 2 + 2 + 2 + 3
    return 1 + 1 + 1 + 3


def _mask_header_check(max_pixels: int, expected_size: tuple[int, int] | None, name: str):
    """The header check of a mask file: its size must be the image's (either way round, as
    EXIF orientation is only known after decoding) and its decoding within
    :data:`MAX_MASK_DECODE_BYTES`; both before any pixel is decoded."""

    def check(image: Image.Image) -> None:
        if expected_size is not None and (image.height, image.width) not in (tuple(expected_size), tuple(expected_size)[::-1]):
            _check_mask_size((image.height, image.width), expected_size)
        _check_size(image.width, image.height, max_pixels, name, image.mode, _mask_bytes_per_pixel(image.mode), MAX_MASK_DECODE_BYTES, "Save it as a smaller single-channel (L or P mode) PNG")

    return check


def _mask_ids(source: object, palette: Sequence[Sequence[int]] | None, max_pixels: int, expected_size: tuple[int, int] | None = None, ignore: tuple[int, int] | None = None) -> np.ndarray:
    """The raw H x W integer class ids of a mask source (colours mapped through ``palette``;
    ``ignore`` = (palette position, id): that colour's pixels get that id)."""
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim < 2:
            raise ImageLoadError(f"a mask array must be H x W; got shape {array.shape}.")
        _check_size(array.shape[1], array.shape[0], max_pixels, "the mask array")
    else:
        array = _mask_array_from_image(_load_pil(source, max_pixels, _mask_header_check(max_pixels, expected_size, f"the mask {_describe(source)}")))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if palette is None:
            raise ImageLoadError(
                "the mask is an RGB colour image but no palette was given. Save class ids as a single-channel "
                "(L or P mode) PNG, or pass palette=[(r, g, b), ...] with one colour per class."
            )
        ids = _colours_to_ids(array[..., :3] if array.dtype == np.uint8 else _integer_values(array[..., :3]), palette, ignore)
        if ignore is not None:
            ids[ids == ignore[0]] = ignore[1]
        return ids
    if array.ndim != 2:
        raise ImageLoadError(f"a mask must be H x W (or H x W x 3 with a palette); got shape {array.shape}.")
    return _integer_values(array)


def _mask_array_from_image(image: Image.Image) -> np.ndarray:
    """Pixel values of a mask image: indices for single-channel modes, RGB for colour ones."""
    if image.mode in _MASK_ID_MODES or image.mode.startswith("I;16"):
        return np.array(image)
    if image.mode in _MASK_COLOUR_MODES:
        return np.array(image.convert("RGB"))
    raise ImageLoadError(
        f"masks in colour mode {image.mode!r} are not supported. Save class ids as a single-channel "
        "8-bit (L or P mode) or 16-bit PNG."
    )


def _integer_values(array: np.ndarray) -> np.ndarray:
    """``array`` as integers (its own integer type; int64 for floats), rejecting non-numeric
    dtypes and non-whole-number floats."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if kind in "iu":
        return array
    if kind == "f":
        values = array.astype(np.float64)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (np.abs(values) < 2**31) & (values == np.round(values))
        if not whole.all():
            raise ImageLoadError(f"the mask contains non-integer values (e.g. {values[~whole][0]}); class ids must be whole numbers.")
        return values.astype(np.int64)
    raise ImageLoadError(f"masks of dtype {array.dtype} are not supported; use an integer array of class ids.")


def _colours_to_ids(rgb: np.ndarray, palette: Sequence[Sequence[int]], ignore: tuple[int, int] | None = None) -> np.ndarray:
    """Map H x W x 3 colours to the index of their colour in ``palette``: one 32-bit key per
    pixel, compared with each palette colour in turn (a palette has tens of colours), so the
    working memory is a few bytes per pixel whatever the palette."""
    colours = np.asarray(palette, dtype=np.int64)
    if colours.ndim != 2 or colours.shape[1] != 3 or ((colours < 0) | (colours > 255)).any():
        raise ValueError("palette must be a list of (r, g, b) colours with values in 0..255")
    if rgb.dtype != np.uint8 and ((rgb < 0) | (rgb > 255)).any():
        raise ImageLoadError("colour mask values must be in 0..255.")
    keys = rgb[..., 0].astype(np.int32)
    keys <<= 8
    keys |= rgb[..., 1]
    keys <<= 8
    keys |= rgb[..., 2]
    palette_keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    if len(np.unique(palette_keys)) != len(palette_keys):
        raise ValueError("palette contains the same colour twice; each class needs its own colour")
    unknown = len(palette_keys)
    largest = max(unknown, ignore[1] if ignore is not None else 0)
    ids = np.full(keys.shape, unknown, dtype=np.uint8 if largest <= 255 and (ignore is None or ignore[1] >= 0) else np.int64)
    for index, key in enumerate(palette_keys):
        ids[keys == key] = index
    missing = ids == unknown
    if missing.any():
        key = int(keys[missing][0])
        raise ImageLoadError(
            f"the mask contains colour ({key >> 16}, {(key >> 8) & 255}, {key & 255}) which is not in the palette ({int(missing.sum())} pixels "
            "have unknown colours). Masks must use exactly the palette colours: no antialiasing or JPEG compression."
        )
    return ids


def _check_mask_size(shape: tuple[int, ...], expected_size: tuple[int, int] | None) -> None:
    """The mask must match the original image size exactly."""
    if expected_size is None or tuple(shape) == tuple(expected_size):
        return
    (height, width), (exp_height, exp_width) = shape, expected_size
    raise ImageLoadError(
        f"mask is {width}x{height} but the image is {exp_width}x{exp_height} (width x height). "
        "A mask must have exactly its image's size: check that you picked the matching mask."
    )


def _check_mask_values(ids: np.ndarray, num_classes: int, ignore_index: int | None) -> None:
    """Every id must be a class in [0, num_classes) or ``ignore_index``."""
    valid = (ids >= 0) & (ids < num_classes)
    if ignore_index is not None:
        valid |= ids == ignore_index
    if valid.all():
        return
    bad = np.unique(ids[~valid])
    shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
    ignore = "" if ignore_index is None else f" or the ignore index {ignore_index}"
    raise ImageLoadError(
        f"the mask contains values {shown} that are not class ids: expected 0..{num_classes - 1}{ignore} "
        f"(num_classes={num_classes}). Check that the mask belongs to this dataset/model."
    )


def _mask_dtype(num_classes: int, ignore_index: int | None) -> type[np.integer]:
    """uint8 when every allowed value fits in it, else int64."""
    fits = num_classes <= 256 and (ignore_index is None or 0 <= ignore_index <= 255)
    return np.uint8 if fits else np.int64


def _resize_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D id map to (height, width), sampling pixel centres."""
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"resize_to must be a positive (height, width), got {size}")
    rows = ((2 * np.arange(height) + 1) * ids.shape[0]) // (2 * height)
    cols = ((2 * np.arange(width) + 1) * ids.shape[1]) // (2 * width)
    return ids[np.ix_(rows, cols)]
