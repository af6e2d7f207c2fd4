"""Tests for segmodels.image_loading: a corpus of bad/odd files plus property tests."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from segmodels.image_loading import (
    MAX_PIXELS,
    ImageLoadError,
    load_image,
    load_image_with_original_size,
    load_mask,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ORIENTATION = 0x0112


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels but carries no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


# --------------------------------------------------------------------------- bad-file corpus


def test_load_truncated_images_flag_untouched() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_zero_byte_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="empty file"):
        load_image(write(tmp_path, "empty.png", b""))
    with pytest.raises(ImageLoadError, match="empty file"):
        load_image(b"")


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "cat.png"
    with pytest.raises(ImageLoadError, match="does not exist") as info:
        load_image(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(ImageLoadError, match="is not a file"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    data = encode(gradient(200, 150), fmt)
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2]))


@pytest.mark.parametrize(
    ("name", "data", "hint"),
    [
        ("noise.png", np.random.default_rng(0).bytes(4096), ""),
        ("notes.txt", b"just some text, definitely not pixels\n" * 20, ""),
        ("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        ("paper.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        ("photo.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(64), "HEIC"),
        ("icon.png", encode(gradient(16, 16), "ICO"), ""),
    ],
)
def test_not_a_supported_image(tmp_path: Path, name: str, data: bytes, hint: str) -> None:
    with pytest.raises(ImageLoadError, match="not a supported image") as info:
        load_image(write(tmp_path, name, data))
    message = str(info.value)
    assert hint in message and "PNG" in message and name in message


def test_wrong_extension_valid_content_is_fine(tmp_path: Path) -> None:
    image = gradient()
    loaded = load_image(write(tmp_path, "really_a_png.jpg", encode(image)))
    np.testing.assert_array_equal(loaded, np.asarray(image))


def test_huge_header_rejected_before_decoding(tmp_path: Path) -> None:
    # 100000 x 100000: Pillow's own decompression-bomb error.
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(write(tmp_path, "bomb.png", png_header_only(100_000, 100_000)))
    # 8000 x 8000 = 64 MP is below Pillow's limit: our header check must fire, not a decode error.
    assert 8000 * 8000 > MAX_PIXELS
    with pytest.raises(ImageLoadError, match="64.0 megapixels, above the limit of 40 megapixels"):
        load_image(write(tmp_path, "big.png", png_header_only(8000, 8000)))


def test_pillow_bomb_warning_is_an_error(tmp_path: Path) -> None:
    # 10000 x 10000 = 100 MP triggers Pillow's warning (not its error); our limit is lifted.
    with pytest.raises(ImageLoadError, match="too large to load safely"):
        load_image(write(tmp_path, "warn.png", png_header_only(10_000, 10_000)), max_pixels=10**9)


def test_small_pixel_limit() -> None:
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(encode(gradient(64, 48)), max_pixels=64 * 48 - 1)
    assert load_image(encode(gradient(64, 48)), max_pixels=64 * 48).shape == (48, 64, 3)


def test_zero_sized_inputs() -> None:
    with pytest.raises(ImageLoadError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ImageLoadError, match="zero size"):
        load_image(np.zeros((0, 4, 3), np.uint8))


# --------------------------------------------------------------------------- sources, orientation, modes


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    image = gradient()
    data = encode(image)
    path = write(tmp_path, "g.png", data)
    expected = np.asarray(image)
    for source in (path, str(path), data, bytearray(data), io.BytesIO(data), image, expected):
        result = load_image(source)
        assert result.dtype == np.uint8 and result.flags.writeable
        np.testing.assert_array_equal(result, expected)
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_exif_orientation_6_rotates() -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :10] = (255, 0, 0)  # red top-left corner
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    loaded, original = load_image_with_original_size(encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    assert loaded.shape == (40, 20, 3) and original == (40, 20)
    assert loaded[2, -3, 0] > 200 and loaded[2, -3, 1] < 60  # now top-right
    assert loaded[2, 2, 0] < 60


def test_palette_with_transparency_composites_over_white() -> None:
    image = Image.new("P", (4, 2))
    image.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    loaded = load_image(encode(image, transparency=0))
    np.testing.assert_array_equal(loaded[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(loaded[1, 3], (255, 255, 255))


def test_la_composites_over_white() -> None:
    pixels = np.array([[[100, 255], [0, 0]]], np.uint8)
    loaded = load_image(encode(Image.fromarray(pixels, "LA")))
    np.testing.assert_array_equal(loaded[0], [[100, 100, 100], [255, 255, 255]])


def test_rgba_array_composites_over_white() -> None:
    pixels = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    np.testing.assert_array_equal(load_image(pixels)[0], [[10, 20, 30], [255, 255, 255]])


def test_cmyk_jpeg() -> None:
    loaded = load_image(encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    assert loaded.shape == (8, 8, 3) and loaded.min() >= 250


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[65535, 32768, 257, 0]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    loaded = load_image(encode(image))
    np.testing.assert_array_equal(loaded[0, :, 0], [255, 128, 1, 0])
    np.testing.assert_array_equal(load_image(values)[0, :, 0], [255, 128, 1, 0])


def test_int32_and_float_tiffs() -> None:
    ints = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert ints.mode == "I"
    np.testing.assert_array_equal(load_image(encode(ints, "TIFF"))[0, :, 0], [0, 255])
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    np.testing.assert_array_equal(load_image(encode(unit, "TIFF"))[0, :, 0], [0, 128, 255])
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], np.float32))
    np.testing.assert_array_equal(load_image(encode(wide, "TIFF"))[0, :, 0], [0, 128, 255])


def test_animated_gif_takes_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(load_image(data)[3, 3], (255, 0, 0))


def test_multipage_tiff_takes_first_page() -> None:
    pages = [Image.new("L", (5, 3), 40), Image.new("L", (9, 9), 200)]
    loaded = load_image(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert loaded.shape == (3, 5, 3) and (loaded == 40).all()


def test_downscale_keeps_aspect() -> None:
    loaded, original = load_image_with_original_size(Image.new("RGB", (3000, 1000), (9, 99, 199)))
    assert loaded.shape == (341, 1024, 3) and original == (1000, 3000)
    np.testing.assert_array_equal(loaded[170, 512], (9, 99, 199))
    assert load_image(Image.new("L", (10, 500)), max_side=50).shape == (50, 1, 3)
    assert load_image(Image.new("L", (3000, 1000)), max_side=None).shape == (1000, 3000, 3)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0.0, 0.5, 1.0]]), [0, 128, 255]),
        (np.array([[0.0, 127.6, 300.0, -5.0]], np.float32), [0, 128, 255, 0]),
        (np.array([[False, True]]), [0, 255]),
        (np.array([[0, 7, 255]], np.int64), [0, 7, 255]),
        (np.array([[[3], [4]]], np.uint8), [3, 4]),
    ],
)
def test_array_dtypes(array: np.ndarray, expected: list[int]) -> None:
    loaded = load_image(array)
    assert loaded.shape == (*array.shape[:2], 3)
    np.testing.assert_array_equal(loaded[0, :, 0], expected)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0, 256]], np.int32), "0..255"),
        (np.array([[np.nan, 0.5]]), "NaN"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros(5, np.uint8), "shape"),
        (np.zeros((2, 2), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)


# --------------------------------------------------------------------------- masks


def test_palette_png_mask_gives_indices_not_colours() -> None:
    ids = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)
    mask = Image.fromarray(ids).convert("P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224] * (3 * 253))
    loaded = load_mask(encode(mask), (2, 3), num_classes=3, ignore_index=255)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, ids)


def test_mask_wrong_size_names_both_sizes() -> None:
    with pytest.raises(ImageLoadError, match="mask is 100x80 but the image is 120x90"):
        load_mask(np.zeros((80, 100), np.uint8), (90, 120), num_classes=2, ignore_index=None)


def test_mask_bad_values_listed() -> None:
    ids = np.arange(20, dtype=np.uint8).reshape(4, 5)
    with pytest.raises(ImageLoadError, match=r"values 3, 4, 5, 6, 7, \.\.\. that are not class ids: expected 0\.\.2"):
        load_mask(encode(Image.fromarray(ids)), (4, 5), num_classes=3, ignore_index=None)
    with pytest.raises(ImageLoadError, match=r"values -1 that"):
        load_mask(np.array([[0, -1]]), None, num_classes=2, ignore_index=255)


def test_sixteen_bit_mask_and_int64_result() -> None:
    ids = np.array([[0, 300], [65535, 2]], np.uint16)
    loaded = load_mask(encode(Image.fromarray(ids)), (2, 2), num_classes=301, ignore_index=65535)
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, ids)


def test_rgb_mask_requires_palette() -> None:
    colours = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ImageLoadError, match="no palette"):
        load_mask(encode(Image.fromarray(colours)), (2, 2), num_classes=2, ignore_index=None)


def test_rgb_mask_palette_mapping() -> None:
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    colours = np.array([[palette[2], palette[0]], [palette[1], palette[2]]], np.uint8)
    loaded = load_mask(encode(Image.fromarray(colours)), (2, 2), 3, None, palette=palette)
    np.testing.assert_array_equal(loaded, [[2, 0], [1, 2]])
    colours[0, 1] = (1, 2, 3)
    with pytest.raises(ImageLoadError, match=r"colour \(1, 2, 3\) which is not in the palette"):
        load_mask(colours, (2, 2), 3, None, palette=palette)
    with pytest.raises(ValueError, match="one colour per class"):
        load_mask(colours, (2, 2), 4, None, palette=palette)



def test_rgb_mask_ignore_colour_becomes_ignore_index() -> None:
    palette = [(128, 128, 128), (128, 0, 0)]
    colours = np.array([[palette[1], (0, 0, 0)], [palette[0], (0, 0, 0)]], np.uint8)
    loaded = load_mask(encode(Image.fromarray(colours)), (2, 2), 2, 255, palette=palette, ignore_colour=(0, 0, 0))
    np.testing.assert_array_equal(loaded, [[1, 255], [0, 255]])
    with pytest.raises(ImageLoadError, match=r"colour \(0, 0, 0\) which is not in the palette"):
        load_mask(colours, (2, 2), 2, 255, palette=palette)
    grey = np.array([[0, 2], [1, 0]], np.uint8)  # an id mask: the colour does not apply, id 2 stays invalid
    with pytest.raises(ImageLoadError):
        load_mask(grey, (2, 2), 2, 255, palette=palette, ignore_colour=(0, 0, 0))
    with pytest.raises(ValueError, match="needs a palette and an ignore_index"):
        load_mask(colours, (2, 2), 2, None, palette=palette, ignore_colour=(0, 0, 0))

def test_mask_resized_after_size_check() -> None:
    ids = np.repeat(np.repeat(np.array([[0, 1], [2, 3]], np.uint8), 3, 0), 4, 1)  # 6 x 8
    loaded = load_mask(ids, (6, 8), num_classes=4, ignore_index=None, resize_to=(2, 2))
    np.testing.assert_array_equal(loaded, [[0, 1], [2, 3]])
    noisy = np.random.default_rng(1).integers(0, 4, (37, 53), dtype=np.uint8)
    for size in [(10, 20), (37, 53), (80, 41)]:
        expected = np.asarray(Image.fromarray(noisy).resize(size[::-1], Image.Resampling.NEAREST))
        np.testing.assert_array_equal(load_mask(noisy, (37, 53), 4, None, resize_to=size), expected)
    with pytest.raises(ImageLoadError, match="mask is 8x6 but the image is 4x3"):
        load_mask(ids, (3, 4), num_classes=4, ignore_index=None, resize_to=(3, 4))


def test_mask_matches_downscaled_image_via_original_size() -> None:
    image, original = load_image_with_original_size(Image.new("RGB", (2048, 512)))
    mask = load_mask(np.ones((512, 2048), np.uint8), original, 2, None, resize_to=image.shape[:2])
    assert mask.shape == image.shape[:2] == (256, 1024)


def test_float_and_odd_masks() -> None:
    np.testing.assert_array_equal(load_mask(np.array([[1.0, 0.0]]), None, 2, None), [[1, 0]])
    with pytest.raises(ImageLoadError, match="non-integer"):
        load_mask(np.array([[0.5]]), None, 2, None)
    with pytest.raises(ImageLoadError, match="not supported"):
        load_mask(encode(Image.new("LA", (2, 2))), None, 2, None)


# --------------------------------------------------------------------------- properties

MODES_BY_FORMAT = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "F"],
    "JPEG": ["L", "RGB", "CMYK"],
    "WEBP": ["L", "RGB", "RGBA"],
}
FORMAT_AND_MODE = st.sampled_from(sorted((fmt, mode) for fmt, modes in MODES_BY_FORMAT.items() for mode in modes))
CHANNEL_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I;16": 2}


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "F":
        return Image.fromarray((rng.standard_normal((height, width)) * seed % 7).astype(np.float32))
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width), dtype=np.uint8) * 255).convert("1")
    image = Image.frombytes(mode, (width, height), rng.bytes(width * height * CHANNEL_BYTES[mode]))
    if mode == "P":
        image.putpalette(rng.bytes(768))
        if seed % 2:
            image.info["transparency"] = seed % 256
    return image


@PROPERTY
@given(
    format_and_mode=FORMAT_AND_MODE,
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    orientation=st.integers(1, 8),
    max_side=st.integers(8, 400),
    seed=st.integers(0, 2**16),
)
def test_property_encoded_images(
    format_and_mode: tuple[str, str], width: int, height: int, orientation: int, max_side: int, seed: int
) -> None:
    fmt, mode = format_and_mode
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = encode(random_image(mode, width, height, seed), fmt, exif=exif)
    loaded, original = load_image_with_original_size(data, max_side=max_side)  # valid files never fail
    assert loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3
    assert max(loaded.shape[:2]) <= max_side
    assert sorted(original) == sorted((height, width))
    assert original == ((width, height) if orientation >= 5 else (height, width))


ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.float16, np.float32, np.float64, np.bool_]
)
ARRAY_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 5)),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
)


@PROPERTY
@given(array=hnp.arrays(ARRAY_DTYPES, ARRAY_SHAPES), max_side=st.integers(1, 64))
def test_property_arrays(array: np.ndarray, max_side: int) -> None:
    try:
        loaded = load_image(array, max_side=max_side)
    except ImageLoadError:
        return
    assert loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3
    assert max(loaded.shape[:2]) <= max_side


@PROPERTY
@given(array=hnp.arrays(ARRAY_DTYPES, ARRAY_SHAPES), num_classes=st.integers(1, 300))
def test_property_mask_arrays(array: np.ndarray, num_classes: int) -> None:
    try:
        loaded = load_mask(array, None, num_classes, None)
    except ImageLoadError:
        return
    assert loaded.ndim == 2 and loaded.min() >= 0 and loaded.max() < num_classes


@PROPERTY
@given(ids=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=50), elements=st.integers(0, 20)))
def test_property_mask_png_round_trip(ids: np.ndarray) -> None:
    loaded = load_mask(encode(Image.fromarray(ids)), ids.shape, num_classes=21, ignore_index=None)
    np.testing.assert_array_equal(loaded, ids)


VALID_FILES = [
    encode(gradient(40, 30), fmt, **params)
    for fmt, params in [
        ("PNG", {}),
        ("JPEG", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {"save_all": True, "append_images": [gradient(40, 30)]}),
    ]
]


@pytest.mark.filterwarnings("ignore:(Corrupt EXIF data|Truncated File Read):UserWarning")
@PROPERTY
@given(
    data=st.sampled_from(VALID_FILES),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), max_size=6),
)
def test_property_corrupted_files(data: bytes, cut: float, flips: list[tuple[float, int]]) -> None:
    corrupted = bytearray(data[: max(1, int(len(data) * cut))])
    for where, value in flips:
        corrupted[int(where * len(corrupted))] = value
    try:
        loaded = load_image(bytes(corrupted))
    except ImageLoadError:
        return
    assert loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3


def test_decoding_is_bounded_by_bytes_not_only_pixels():
    """A 16-bit 6300x6300 PNG is under the pixel limit but would need ~400 MB to decode and
    convert: refused from its header, before decoding, with a message that says why."""
    import io
    import tracemalloc

    from PIL import Image

    from segmodels.image_loading import ImageLoadError, load_image

    buffer = io.BytesIO()
    Image.new("I;16", (6300, 6300)).save(buffer, format="PNG")
    assert buffer.tell() < 1_000_000
    tracemalloc.start()
    with pytest.raises(ImageLoadError, match="too large to decode safely.*mode I;16"):
        load_image(buffer.getvalue())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20
    small = io.BytesIO()
    Image.new("I;16", (600, 400), 30000).save(small, format="PNG")
    assert load_image(small.getvalue()).shape == (400, 600, 3)


# --------------------------------------------------------------------------- memory of mask decoding

MEASURE_PEAK = r"""
import importlib.util, json, re, sys
spec = importlib.util.spec_from_file_location("image_loading", sys.argv[2])  # without the package's torch
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
ImageLoadError, load_mask = module.ImageLoadError, module.load_mask

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

results = {}
for case in json.loads(sys.argv[1]):
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # the peak (VmHWM) starts again from the current size
    before = status("VmRSS")
    try:
        load_mask(case["path"], tuple(case["expected"]), case["classes"], 255, palette=case.get("palette"), resize_to=(64, 64))
        outcome = "loaded"
    except ImageLoadError as error:
        outcome = str(error)
    results[case["path"]] = {"growth": status("VmHWM") - before, "outcome": outcome}
print(json.dumps(results))
"""


def png_of_zeros(width: int, height: int, grey: bool) -> bytes:
    """A valid all-zero 8-bit grey or RGB PNG, compressed row by row (no full-size buffer)."""
    compressor = zlib.compressobj(1)
    row = b"\0" * (1 + width * (1 if grey else 3))
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if grey else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def peak_growth(cases: list[dict]) -> dict:
    """Each case's peak memory growth (bytes, from /proc's high-water mark) and outcome, in a
    fresh process whose allocator returns every block over 128 KiB to the system, so that
    nothing freed earlier hides an allocation."""
    import json
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    import segmodels.image_loading

    done = subprocess.run([sys.executable, "-c", MEASURE_PEAK, json.dumps(cases), segmodels.image_loading.__file__], capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(done.stdout)


def test_mask_bomb_refused_from_its_header(tmp_path: Path) -> None:
    """A 6300x6300 mask PNG of a few hundred KB is under the pixel limit; its decoding would take
    gigabytes. It is refused from its header with a clear message, whether or not its size is
    the image's, and the process grows by at most 100 MiB on the way."""
    bomb = write(tmp_path, "bomb.png", png_of_zeros(6300, 6300, grey=True))
    assert bomb.stat().st_size < 256 * 1024
    colour_bomb = write(tmp_path, "colour_bomb.png", png_of_zeros(6300, 6300, grey=False))
    (tmp_path / "copy.png").write_bytes(bomb.read_bytes())
    results = peak_growth([
        {"path": str(bomb), "expected": [6300, 6300], "classes": 12},
        {"path": str(colour_bomb), "expected": [6300, 6300], "classes": 2, "palette": [[0, 0, 0], [255, 255, 255]]},
        {"path": str(tmp_path / "copy.png"), "expected": [360, 480], "classes": 12},
    ])
    for name in ("bomb.png", "colour_bomb.png"):
        result = results[str(tmp_path / name)]
        assert re.search(rf"'{name}' is too large to decode safely: 6300x6300 pixels .*the limit is 64 MB", result["outcome"]), result
        assert "Save it as a smaller single-channel" in result["outcome"]
        assert result["growth"] <= 100 * 2**20, result
    mismatched = results[str(tmp_path / "copy.png")]
    assert "mask is 6300x6300 but the image is 480x360" in mismatched["outcome"]
    assert mismatched["growth"] <= 100 * 2**20


def test_mask_decoding_stays_within_its_estimate(tmp_path: Path) -> None:
    """The header check's per-pixel estimate (``_mask_bytes_per_pixel``) bounds the memory a
    mask really takes to decode and map to class ids, in every mode, so the limit bounds memory."""
    from segmodels.image_loading import _mask_bytes_per_pixel

    width, height = 1200, 1000
    ids = np.random.default_rng(0).integers(0, 3, (height, width))
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    cases = {}
    for mode in ("L", "P", "I;16", "I", "F", "RGB", "RGBA"):
        path = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode in ('I', 'F') else 'png'}"
        if mode in ("RGB", "RGBA"):
            Image.fromarray(np.array(palette, np.uint8)[ids]).convert(mode).save(path)
            cases[mode] = {"path": str(path), "expected": [height, width], "classes": 3, "palette": palette}
        else:
            values = {"I;16": np.uint16, "I": np.int32, "F": np.float32}.get(mode, np.uint8)
            image = Image.fromarray(ids.astype(values))
            (image if mode in ("I;16", "I", "F") else image.convert(mode)).save(path)
            cases[mode] = {"path": str(path), "expected": [height, width], "classes": 3}
        assert Image.open(path).mode == mode
    results = peak_growth(list(cases.values()))
    for mode, case in cases.items():
        result = results[case["path"]]
        assert result["outcome"] == "loaded", (mode, result)
        assert result["growth"] <= width * height * _mask_bytes_per_pixel(mode) + 4 * 2**20, (mode, result, width * height * _mask_bytes_per_pixel(mode))
