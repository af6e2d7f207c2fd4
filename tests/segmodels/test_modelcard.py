"""The typed model card: lossless round trips of every shipped card, figures read by
attribute, and the once-per-model test record written by ``test-card``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segmodels import zoo
from segmodels.bootstrap import bootstrap
from segmodels.cli import main
from segmodels.modelcard import SCHEMA_VERSION, ModelCard
from segmodels.testset import AlreadyEvaluatedOnTest, read_per_image, record_test


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_shipped_card_round_trips_unchanged(name: str) -> None:
    original = zoo.load_card(name)
    card = ModelCard.from_dict(original)
    written = card.to_dict()
    assert written.pop("schema_version") == SCHEMA_VERSION
    original.pop("schema_version", None)
    assert written == original
    assert ModelCard.from_dict(card.to_dict()) == card


def test_one_val_figure_the_cpu_re_evaluation() -> None:
    card = zoo.read_card("camvid/deeplabv3p")
    assert card.val is not None and card.val_miou() == card.val.miou
    assert card.selection_val_miou is not None and card.selection_val_miou != card.val_miou()
    unetpp = zoo.read_card("camvid/unetpp")
    assert unetpp.val_miou(2) == next(e.val_miou for e in unetpp.pruning if e.depth == 2)
    assert unetpp.val_miou(4) == unetpp.val.miou


def test_newer_schema_is_refused_with_a_message() -> None:
    values = zoo.load_card("shapes/unet") | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(ValueError, match="newer than this library"):
        ModelCard.from_dict(values)


def test_broken_card_is_a_weights_error(own_zoo: Path) -> None:
    (own_zoo / "shapes" / "unet.json").write_text(json.dumps({"arch": "unet"}))
    with pytest.raises(zoo.WeightsError, match="unreadable"):
        zoo.read_card("shapes/unet", own_zoo)


@pytest.mark.slow
def test_test_record_once_per_model(own_zoo: Path) -> None:
    card = record_test("shapes/unetpp", None, own_zoo, resamples=200)
    depths = [result.depth for result in card.test.results]
    assert depths == [1, 2, 3, 4]
    again = zoo.read_card("shapes/unetpp", own_zoo)
    assert again.test == card.test and again.test_result(None).depth == 4
    per_image = read_per_image("shapes/unetpp", 2, own_zoo)
    assert per_image.shape == (100, 4, 4)
    result = card.test_result(2)
    assert math.isclose(result.miou, bootstrap(per_image, resamples=200).miou.estimate)
    assert result.confusion_matrix == per_image.sum(0).tolist()
    assert result.miou_interval.low <= result.miou <= result.miou_interval.high
    with pytest.raises(AlreadyEvaluatedOnTest, match="once per finished model"):
        record_test("shapes/unetpp", None, own_zoo)
    reproduced = record_test("shapes/unetpp", None, own_zoo, again=True, resamples=200)
    assert reproduced.test.results == card.test.results


def test_test_record_file_is_checked(own_zoo: Path) -> None:
    record_test("shapes/unet", None, own_zoo, resamples=50)
    path = own_zoo / "shapes" / "unet.test.npz"
    np.savez_compressed(path, full=np.zeros((1, 4, 4), dtype=np.int64))
    with pytest.raises(zoo.WeightsError, match="does not match"):
        read_per_image("shapes/unet", None, own_zoo)


def test_cli_test_card_refuses_a_second_evaluation(own_zoo: Path, capsys) -> None:
    assert main(["test-card", "shapes/deeplabv3p", "--data", "-", "--weights", str(own_zoo), "--device", "cpu"]) == 0
    assert "test mIoU" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already evaluated on test"):
        main(["test-card", "shapes/deeplabv3p", "--data", "-", "--weights", str(own_zoo), "--device", "cpu"])


def test_pretrained_is_a_new_checked_copy() -> None:
    import segmodels

    first, second = segmodels.pretrained("shapes/unet"), segmodels.pretrained("shapes/unet")
    assert first is not second and not first.training
    assert segmodels.model_card("shapes/unet").sha256 == zoo.read_card("shapes/unet").sha256
    with pytest.raises(zoo.WeightsError, match="no shipped model"):
        segmodels.pretrained("shapes/nope")


def test_cli_predict_writes_a_mask(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from segmodels.data import render_shapes

    image, truth, _ = render_shapes(2, 5, 128)
    Image.fromarray(image).save(tmp_path / "shapes.png")
    assert main(["predict", str(tmp_path / "shapes.png"), "--model", "shapes/unet", "--out", str(tmp_path / "ids.png"), "--device", "cpu"]) == 0
    ids = np.asarray(Image.open(tmp_path / "ids.png"))
    assert ids.shape == truth.shape and (ids == truth).mean() > 0.9
    assert main(["predict", str(tmp_path / "shapes.png"), "--model", "shapes/unet", "--out", str(tmp_path / "colour.png"), "--colour", "--device", "cpu"]) == 0
    assert np.asarray(Image.open(tmp_path / "colour.png")).shape == (*truth.shape, 3)
    assert "class ids from shapes/unet" in capsys.readouterr().out
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="not a supported image"):
        main(["predict", str(tmp_path / "bad.png"), "--model", "shapes/unet", "--out", str(tmp_path / "x.png")])
