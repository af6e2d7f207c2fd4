"""Tests of the Loss lab's texts and figures (demo/losslab_charts.py): the rare-class verdict and
the final table rendered from the shipped curves' numbers, the weight table, the CamVid section
and the figures. The tab's state, gate and live runs are tested in tests/demo/test_losslab_tab.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from demo import losslab_charts, losslab_runs
from demo.config import DemoConfig
from demo.losslab_charts import (
    camvid_section,
    false_positives_per_hit,
    final_table,
    iou_figure,
    lab_weights_note,
    lab_weights_table,
    loss_figure,
    precomputed_figure,
    rare_class_verdict,
)
from demo.losslab_runs import load_precomputed
from segmodels.data.info import SHAPES
from segmodels.teach.losslab import LAB_LOSSES, RARE_CLASS, lab_class_weights
from segmodels.teach.numbers import class_weight_schemes


@pytest.fixture(scope="module")
def precomputed():
    return load_precomputed()


def test_false_positives_per_hit() -> None:
    tp, fp, fn = 2, 6, 2
    assert false_positives_per_hit(tp / (tp + fp + fn), tp / (tp + fn)) == pytest.approx(fp / tp)


def last_five(curves, values: str) -> np.ndarray:
    """Each class's mean over the last five evaluations, computed here from the raw curves."""
    table = curves.per_class_iou if values == "iou" else curves.per_class_recall
    return np.nanmean(np.array(table[-5:], dtype=float), axis=0)


def test_verdict_is_rendered_from_the_averaged_numbers(precomputed) -> None:
    text = rare_class_verdict(precomputed)
    mfb = precomputed.runs["mfb"]
    rare = RARE_CLASS
    iou, recall = last_five(mfb, "iou")[rare], last_five(mfb, "recall")[rare]
    assert losslab_charts.LAST_EVALUATIONS == 5 and "one seed (seed 0), 600 steps; the mean of the last 5 evaluations (steps 500-600)" in text
    assert "only median-frequency weighted CE raises the triangle's IoU" in text and "above cross-entropy's at each of those evaluations" in text
    assert f"recall {recall:.2f}), yet its IoU is only {iou:.2f}" in text
    assert f"{false_positives_per_hit(iou, recall):.1f} pixels of other classes" in text
    assert f"{precomputed.loss_share['mfb'][rare]:.2%}" in text
    for loss, curves in precomputed.runs.items():
        assert f"{losslab_runs.SHORT_LABELS[loss]} {last_five(curves, 'iou')[rare]:.2f}" in text
    assert "α = 0.25" in text and "π = 0.01" in text and "same Adam learning rate and 600 steps" in text


def test_verdict_order_agrees_with_the_averaged_order_on_the_shipped_curves(precomputed) -> None:
    """The mIoU order the verdict states is that of the last five evaluations' mean (on the
    shipped curves the last snapshot alone puts CE first, the average median frequency)."""
    text = rare_class_verdict(precomputed)
    averaged = sorted(LAB_LOSSES, key=lambda loss: -np.mean(precomputed.runs[loss].miou[-5:]))
    snapshot = sorted(LAB_LOSSES, key=lambda loss: -precomputed.runs[loss].miou[-1])
    assert averaged != snapshot
    line = next(line for line in text.splitlines() if line.startswith("**mIoU**"))
    stated = sorted(LAB_LOSSES, key=lambda loss: line.index(f" {losslab_runs.SHORT_LABELS[loss]} "))
    assert stated == averaged
    assert "one seed does not rank" in line


def test_verdict_follows_the_numbers_when_no_loss_helps(precomputed) -> None:
    mfb = precomputed.runs["mfb"]
    flat = tuple(row[:RARE_CLASS] + (0.0,) + row[RARE_CLASS + 1 :] for row in mfb.per_class_iou)
    changed = replace(precomputed, runs={**precomputed.runs, "mfb": replace(mfb, per_class_iou=flat)})
    assert "no loss raises the triangle's IoU" in rare_class_verdict(changed)


def test_verdict_ignores_a_lucky_last_evaluation(precomputed) -> None:
    """Raising only the final evaluation of a loss's rare-class IoU does not make it a raiser."""
    focal = precomputed.runs["focal"]
    rows = list(focal.per_class_iou)
    rows[-1] = rows[-1][:RARE_CLASS] + (0.04,) + rows[-1][RARE_CLASS + 1 :]
    changed = replace(precomputed, runs={**precomputed.runs, "focal": replace(focal, per_class_iou=tuple(rows))})
    assert "only median-frequency weighted CE raises" in rare_class_verdict(changed)
    rows[-5:] = [row[:RARE_CLASS] + (0.3,) + row[RARE_CLASS + 1 :] for row in rows[-5:]]
    recall = [row[:RARE_CLASS] + (0.5,) + row[RARE_CLASS + 1 :] for row in focal.per_class_recall]
    changed = replace(precomputed, runs={**precomputed.runs, "focal": replace(focal, per_class_iou=tuple(rows), per_class_recall=tuple(recall))})
    assert "median-frequency weighted CE and focal raise" in rare_class_verdict(changed)


def test_final_table_lists_every_loss_averaged(precomputed) -> None:
    table = final_table(precomputed)
    assert list(table["loss"]) == ["CE", "weighted CE", "median-frequency CE", "focal (γ = 2)", "weighted focal (γ = 2)"]
    assert list(table.columns[1:]) == [f"{name} IoU" for name in SHAPES.class_names] + ["triangle recall", "mIoU", "mIoU sd"]
    mfb = precomputed.runs["mfb"]
    row = table.iloc[LAB_LOSSES.index("mfb")]
    assert list(row.iloc[1:5]) == [round(float(v), 2) for v in last_five(mfb, "iou")]
    assert row["triangle recall"] == round(float(last_five(mfb, "recall")[RARE_CLASS]), 2)
    assert row["mIoU"] == round(float(np.mean(mfb.miou[-5:])), 2) and row["mIoU sd"] == round(float(np.std(mfb.miou[-5:])), 2)


def test_weights_table_uses_the_lab_weights() -> None:
    weights = lab_class_weights()
    table = lab_weights_table(weights, RARE_CLASS)
    by_loss = {info["loss"]: info for info in weights}
    rare_row = table.iloc[RARE_CLASS]
    assert rare_row["class"] == "triangle (rare)" and rare_row["w median-freq."] == round(by_loss["mfb"]["weights"][RARE_CLASS], 3)
    assert rare_row["loss share, (N − N_c)/N"] == f"{by_loss['wce']['loss_share'][RARE_CLASS]:.2%}"
    assert rare_row["loss share, median-freq."] == f"{by_loss['mfb']['loss_share'][RARE_CLASS]:.2%}"
    assert f"median-frequency {by_loss['mfb']['spread']:.1f}x" in lab_weights_note(weights)


def test_camvid_section_without_and_with_a_folder(tmp_path) -> None:
    assert "appear here when the server is started with a CamVid folder" in camvid_section(None, tmp_path)
    assert "unavailable" in camvid_section(tmp_path / "no-camvid", tmp_path)
    masks = [np.array([[0, 0, 0, 1], [0, 0, 2, 1]])]
    schemes = class_weight_schemes(masks, 3, class_names=("road", "car", "bike"))
    text = losslab_charts.camvid_markdown(schemes, ["mfb"])
    assert f"a {schemes['inverse_share_spread']:.2f}x spread" in text and "trained with median-frequency weighted CE" in text
    assert "runs from 0.375 (road, 62% of the pixels) to 0.875 (bike)" in text


def test_camvid_section_quotes_the_spreads_of_correction_1(camvid_root) -> None:
    text = camvid_section(camvid_root, DemoConfig().weights_dir)
    assert "a 1.49x spread" in text and "spread 59x" in text and "(Road, 33% of the pixels)" in text


def test_figures_draw_the_runs(precomputed) -> None:
    empty = iou_figure(None, None, precomputed.class_names, RARE_CLASS, 600)
    assert not empty.data and "press Train" in empty.layout.title.subtitle.text
    assert not loss_figure(None, None, 600).data
    figure = precomputed_figure(precomputed)
    assert len(figure.data) == 2 * len(LAB_LOSSES)
    assert list(figure.data[2 * LAB_LOSSES.index("mfb")].y) == list(precomputed.runs["mfb"].class_series("iou", RARE_CLASS))
    assert list(figure.data[2 * LAB_LOSSES.index("mfb") + 1].y) == list(precomputed.runs["mfb"].class_series("recall", RARE_CLASS))
