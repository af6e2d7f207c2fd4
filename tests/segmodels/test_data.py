"""Tests for segmodels.data: Shapes, transforms, folder and CamVid datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmodels.data import (
    CAMVID,
    SHAPES,
    CamVidDataset,
    DatasetInfo,
    FolderDataset,
    ShapesDataset,
    build_dataset,
    render_shapes,
    splits_present,
    train_transform,
)
from segmodels.data.shapes import CIRCLE, MIN_CONTRAST, RECTANGLE, TRIANGLE, _contrasting_color, _outline
from segmodels.image_loading import ImageLoadError

SIZE = 64


@pytest.fixture(scope="module")
def shapes_samples() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [render_shapes(0, i, SIZE) for i in range(120)]


def test_shapes_deterministic() -> None:
    first = render_shapes(3, 7, SIZE)
    render_shapes(3, 8, SIZE)
    again = ShapesDataset(10, size=SIZE, seed=3).sample(7)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], render_shapes(4, 7, SIZE)[0])
    assert not np.array_equal(first[0], render_shapes(3, 6, SIZE)[0])


def test_shapes_arrays_and_tensors() -> None:
    image, mask, instances = render_shapes(0, 0, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
    assert instances.dtype == np.uint16
    x, y = ShapesDataset(2, size=SIZE)[0]
    assert x.dtype == torch.float32 and x.shape == (3, SIZE, SIZE) and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(mask).long())
    with pytest.raises(IndexError):
        ShapesDataset(2, size=SIZE)[2]


def test_shapes_mask_instance_consistency(shapes_samples) -> None:
    for _, mask, instances in shapes_samples:
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        np.testing.assert_array_equal(instances > 0, mask > 0)
        ids = np.unique(instances[instances > 0])
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        for i in ids:
            assert len(np.unique(mask[instances == i])) == 1


def test_shapes_class_balance_and_size_variety(shapes_samples) -> None:
    counts = np.zeros(4, dtype=int)
    areas = []
    for _, mask, instances in shapes_samples:
        assert 1 <= instances.max() <= 4
        for i in range(1, int(instances.max()) + 1):
            counts[mask[instances == i][0]] += 1
            areas.append(int((instances == i).sum()))
    shares = counts[1:] / counts[1:].sum()
    assert shares.min() > 0.2, shares
    assert min(areas) < 0.05 * SIZE * SIZE and max(areas) > 0.3 * SIZE * SIZE
    background = np.mean([(m == 0).mean() for _, m, _ in shapes_samples])
    assert 0.3 < background < 0.95


def test_shapes_objects_lie_inside_the_image() -> None:
    rng = np.random.default_rng(0)
    for shape_class in (CIRCLE, TRIANGLE, RECTANGLE):
        for _ in range(300):
            geometry = np.asarray(_outline(rng, shape_class, SIZE), dtype=float)
            assert geometry.min() >= 0 and geometry.max() <= SIZE - 1, (shape_class, geometry)


def test_shapes_object_colors_stand_out_from_the_background() -> None:
    rng = np.random.default_rng(0)
    for reference in ([0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [127.5, 127.5, 127.5], [200.0, 30.0, 90.0]):
        for _ in range(200):
            color = _contrasting_color(rng, np.asarray(reference))
            assert np.linalg.norm(color - reference) >= MIN_CONTRAST, (reference, color)


def test_shapes_color_does_not_give_class_away(shapes_samples) -> None:
    colors: dict[int, list[np.ndarray]] = {1: [], 2: [], 3: []}
    for image, mask, instances in shapes_samples:
        for i in range(1, int(instances.max()) + 1):
            pixels = instances == i
            colors[int(mask[pixels][0])].append(image[pixels].mean(axis=0))
    means = np.array([np.mean(colors[c], axis=0) for c in (1, 2, 3)])
    assert np.abs(means - 127.5).max() < 40, means
    assert np.abs(means[:, None] - means[None]).max() < 45, means


def test_shapes_background_is_textured(shapes_samples) -> None:
    for image, mask, _ in shapes_samples[:10]:
        assert image[mask == 0].std(axis=0).mean() > 5


def test_train_transform_keeps_label_values() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 3, 7, 200], dtype=np.uint8)
    mask = labels[rng.integers(0, 4, (30, 40))]
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    transform = train_transform((48, 48), scale_range=(0.5, 2.0), ignore_index=255)
    padded = 0
    for _ in range(20):
        x, y = transform(Image.fromarray(image), Image.fromarray(mask))
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert y.shape == (48, 48) and y.dtype == torch.int64
        assert set(torch.unique(y).tolist()) <= {0, 3, 7, 200, 255}
        if (y == 255).any():
            padded += 1
            assert x[:, y == 255].max() == 0
    assert padded > 0


def test_train_transform_keeps_mask_aligned() -> None:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
    rng = np.random.default_rng(1)
    mask = np.kron(rng.integers(0, 4, (4, 6)), np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
    image = torch.from_numpy(palette[mask]).permute(2, 0, 1).contiguous()
    transform = train_transform((56, 72), scale_range=(0.5, 1.5), color_jitter=False)
    for _ in range(10):
        x, y = transform(image, torch.from_numpy(mask))
        rgb = x.permute(1, 2, 0).numpy() * 255
        dist = np.linalg.norm(rgb[:, :, None] - palette[None, None].astype(np.float32), axis=-1)
        labelled = y.numpy() != 255
        pure = (dist.min(axis=-1) < 30) & labelled
        assert pure.sum() > 0.5 * labelled.sum()
        np.testing.assert_array_equal(dist.argmin(axis=-1)[pure], y.numpy()[pure])


def _write_folder_dataset(root: Path) -> tuple[np.ndarray, np.ndarray]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[3:9, 4:12] = 2
    mask[0, :] = 255
    Image.fromarray(image).save(root / "images" / "a.jpg", quality=100)
    palette_mask = Image.fromarray(mask, mode="P")
    palette_mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [255, 255, 255] * 253)
    palette_mask.save(root / "masks" / "a.png")
    names_colors = [("bg", [0, 0, 0]), ("x", [200, 0, 0]), ("y", [0, 200, 0])]
    classes = {"classes": [{"name": n, "color": c} for n, c in names_colors], "ignore_index": 255}
    (root / "classes.json").write_text(json.dumps(classes))
    return image, mask


def test_folder_dataset_round_trip(tmp_path: Path) -> None:
    _, mask = _write_folder_dataset(tmp_path)
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    ds = FolderDataset(tmp_path)
    assert len(ds) == 1 and ds.info.class_names == ("bg", "x", "y") and ds.info.ignore_index == 255
    assert ds.info.colors[2] == (0, 200, 0)
    x, y = ds[0]
    assert x.shape == (3, 12, 16) and x.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), mask.astype(np.int64))
    assert build_dataset("folder", tmp_path).info == ds.info


def test_folder_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="images"):
        FolderDataset(tmp_path)
    _write_folder_dataset(tmp_path)
    (tmp_path / "classes.json").rename(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="classes.json"):
        FolderDataset(tmp_path)
    (tmp_path / "other.json").rename(tmp_path / "classes.json")
    Image.new("L", (16, 12)).save(tmp_path / "masks" / "orphan.png")
    with pytest.raises(ValueError, match="orphan"):
        FolderDataset(tmp_path)
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "orphan.png")
    with pytest.raises(ValueError, match="size"):
        FolderDataset(tmp_path)[1]


def test_folder_dataset_reads_through_the_image_gate(tmp_path: Path) -> None:
    _write_folder_dataset(tmp_path)
    bad_ids = np.full((12, 16), 7, dtype=np.uint8)
    Image.fromarray(bad_ids, mode="L").save(tmp_path / "masks" / "a.png")
    with pytest.raises(ImageLoadError, match="mask 'a.png': the mask contains values 7 that are not class ids: expected 0..2 or the ignore index 255"):
        FolderDataset(tmp_path)[0]
    (tmp_path / "images" / "a.jpg").write_bytes(b"this is not a JPEG")
    with pytest.raises(ImageLoadError, match="'a.jpg'"):
        FolderDataset(tmp_path)[0]


def test_camvid_reads_through_the_image_gate(tmp_path: Path) -> None:
    for name in ("val", "valannot"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "val" / "f.png")
    labels = np.full((6, 8), 11, dtype=np.uint8)
    labels[0, 0] = 3
    Image.fromarray(labels, mode="L").save(tmp_path / "valannot" / "f.png")
    x, y = CamVidDataset(tmp_path, "val")[0]
    assert x.shape == (3, 6, 8) and y[0, 0] == 3 and (y == 11).sum() == 47
    labels[0, 0] = 12
    Image.fromarray(labels, mode="L").save(tmp_path / "valannot" / "f.png")
    with pytest.raises(ImageLoadError, match="mask 'f.png': the mask contains values 12"):
        CamVidDataset(tmp_path, "val")[0]


def test_camvid_missing_split_error(tmp_path: Path) -> None:
    for name in ("train", "trainannot", "val", "valannot"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "train" / "f.png")
    assert splits_present(tmp_path) == ["train", "val"]
    with pytest.raises(FileNotFoundError, match=r"test.*train, val"):
        CamVidDataset(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="f.png"):
        CamVidDataset(tmp_path, split="train")


def test_dataset_info_round_trip_and_colorize() -> None:
    assert CAMVID.num_classes == 11 and CAMVID.ignore_index == 11 and "Unlabelled" not in CAMVID.class_names
    assert DatasetInfo.from_dict(json.loads(json.dumps(CAMVID.to_dict()))) == CAMVID
    assert SHAPES.num_classes == 4 and len(set(SHAPES.colors)) == 4
    rgb = CAMVID.colorize(np.array([[0, 4], [11, 255]]))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [60, 40, 222] and rgb[1].max() == 0


def test_build_dataset_shapes() -> None:
    train, val = build_dataset("shapes"), build_dataset("shapes", split="val", size=SIZE)
    assert (len(train), train.seed, train.size) == (4000, 0, 128)
    assert (len(val), val.seed, val.size) == (100, 1, SIZE)
    assert val.info == SHAPES
    with pytest.raises(ValueError, match="unknown"):
        build_dataset("nope")


def test_camvid_real_dataset(camvid_root) -> None:
    train = build_dataset("camvid", camvid_root, "train")
    val = CamVidDataset(camvid_root, "val")
    test = CamVidDataset(camvid_root, "test")
    assert (len(train), len(val), len(test)) == (367, 101, 233)
    assert splits_present(camvid_root) == ["test", "train", "val"]
    assert train.info == CAMVID
    for ds, i in ((train, 0), (val, 50), (test, 200)):
        x, y = ds[i]
        assert x.shape == (3, 360, 480) and x.dtype == torch.float32
        assert y.shape == (360, 480) and y.dtype == torch.int64
        assert 0 <= y.min() and y.max() <= 11
    with pytest.raises(FileNotFoundError, match="'extra'.*splits present"):  # a missing split is named, with those there
        CamVidDataset(camvid_root, "extra")
