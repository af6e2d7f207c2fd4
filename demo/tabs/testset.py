"""Test set: for the chosen model set, what its cards' held-out test evaluation says: one
model's row-normalised confusion matrix (which classes are taken for which), every model's
per-class IoU with 95% bootstrap intervals, and how sure the ranking is (a paired bootstrap
of each model against the best, over the same test images).

Everything here is read from the model cards and the per-image confusion matrices beside
them, written once per model by ``python -m segmodels test-card`` (:mod:`segmodels.testset`);
nothing runs a model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from segmodels import ARCH_NAMES, ARCHITECTURES, testset, zoo
from segmodels.bootstrap import BETTER, WORSE, Entrant, Interval, against_best
from segmodels.modelcard import Evaluation, TestRecord

from .. import testset_charts, text
from ..catalogue import set_label
from ..context import Shared
from ..contract import Job, no_image
from ..core import App
from ..errors import InputError, short, shown_inline
from ..session import Request
from ..view import View, hidden

VIEW = View("status", "model", "heatmap", "confusions", "per_class", "ranking")
CONFUSIONS_NAMED = 2
MIOU_ROW = "<b>mIoU</b>"  # the first row of the per-class chart
RANKING_CAPTION = "Each model against the best on this test set (paired bootstrap over its images)"

DATA_HINT = {"camvid": "DIR: the CamVid folder that holds test/ and testannot/", "shapes": "Shapes generates its test images, so DIR is not read"}
SPLIT_NOTES = {
    "camvid": (
        "**Why val runs high.** CamVid's val frames are a stretch from the middle of drive 0016E5, whose neighbouring "
        "frames are training frames, so val looks much like training. The test frames come from a drive the training "
        "never saw (Seq05VD) and from a later stretch of training drive 0001TP, at dusk."
    ),
    "shapes": "Shapes' val and test images come from the same generator as its training images, each split with its own seed.",
}
EXPLANATION = """\
**Test split.** Each model was evaluated on it once, after training; recipes, epochs and checkpoints
were chosen on val, never on test.

**Confusion matrix.** A row is a true class; its cells say where that class's pixels went, in % of
the class's test pixels, so each row sums to 100%. The diagonal is the share predicted right; a large
cell off the diagonal is a confusion. Unlabelled (void) pixels, where a set has them, are not counted.

**Intervals.** 95% percentile bootstrap over the test *images*: draw as many images as the split has,
with replacement, sum their confusion matrices, score the sum; repeat (the count is read from the
card) and keep the middle 95% of the scores. It says how much a score would move on another set of
frames like these, not how much another training run of the same recipe would move it.

**Ranking.** Each model against the best is a *paired* bootstrap: both scored on the same resampled
images, the interval is that of the difference of their mIoU. Only when it excludes 0 is a model
*better* or *worse*; otherwise it is *not distinguishable on this test set*. Like the intervals, it
leaves out training noise: the same recipe trained with another seed scores differently.
"""


class NoTestRecords(Exception):
    """No model of the set has a test record; the message says how to make one."""


@dataclass(frozen=True)
class ModelTest:
    """One model's test evaluation (at one pruning depth) and its per-image confusion
    matrices (None, with the reason in ``problem``, where they cannot be read)."""

    arch: str
    depth: int | None
    evaluation: Evaluation
    record: TestRecord
    per_image: np.ndarray | None
    problem: str | None = None
    val_miou: float | None = None  # the card's validation mIoU at the same depth

    @property
    def label(self) -> str:
        return ARCH_NAMES[self.arch] + (f" L{self.depth}" if self.depth is not None else "")


@dataclass(frozen=True)
class TestSet:
    """The test records of a set's models: those evaluated, those not yet, those unreadable."""

    set_name: str
    class_names: tuple[str, ...]
    models: list[ModelTest]
    missing: list[str]  # architectures shipped without a test record
    unreadable: list[str]  # why a card could not be read

    @property
    def set_label(self) -> str:
        """The set's name without its description: 'CamVid'."""
        return set_label(self.set_name).split(" (")[0]


@dataclass(frozen=True)
class Confusion:
    """The share of a true class's pixels predicted as another class."""

    true_class: str
    predicted_class: str
    percent: float


@dataclass(frozen=True)
class TestSetView:
    """What the tab shows for one set and one chosen model."""

    tests: TestSet
    chosen: ModelTest
    percent: np.ndarray  # K x K, rows sum to 100 (NaN rows: class absent from the test images)
    confusions: list[Confusion]
    per_class: pd.DataFrame  # Model, Class, IoU, Low, High; "mIoU" first
    ranking: pd.DataFrame


def row_percent(matrix) -> np.ndarray:
    """A confusion matrix (rows ground truth) as % of each row's pixels; NaN rows for a
    class absent from the ground truth."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, 100 * counts / np.maximum(totals, 1), np.nan)


def largest_confusions(percent: np.ndarray, class_names: tuple[str, ...], count: int = CONFUSIONS_NAMED) -> list[Confusion]:
    """The ``count`` largest off-diagonal cells of a row-normalised matrix (none that are 0)."""
    off_diagonal = np.where(np.eye(len(class_names), dtype=bool), np.nan, percent)
    cells = np.argsort(np.nan_to_num(off_diagonal, nan=-1.0), axis=None)[::-1][:count]
    found = []
    for cell in cells:
        true, predicted = np.unravel_index(cell, off_diagonal.shape)
        if off_diagonal[true, predicted] > 0:
            found.append(Confusion(class_names[true], class_names[predicted], float(off_diagonal[true, predicted])))
    return found


def share(percent: float) -> str:
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.1f}%"


def confusion_sentence(model: str, confusions: list[Confusion]) -> str:
    """The largest confusions in words: 'Pole is taken for Building in 23% of its pixels'."""
    if not confusions:
        return f"{model} confuses no class with another on these test images."
    first, *rest = confusions
    sentence = f"{model}'s largest confusion: **{first.true_class}** is taken for **{first.predicted_class}** in {share(first.percent)} of its test pixels"
    return sentence + "".join(f"; next, **{c.true_class}** for **{c.predicted_class}** in {share(c.percent)}" for c in rest) + "."


def val_sentence(model: ModelTest) -> str:
    if model.val_miou is None:
        return ""
    return f" On the val split its card gives {model.val_miou:.3f} ({model.val_miou - model.evaluation.miou:+.3f} against test)."


def interval_text(interval: Interval | None, digits: int = 3) -> str:
    if interval is None or math.isnan(interval.low):
        return "-"
    return f"{interval.low:.{digits}f} to {interval.high:.{digits}f}"


def ranking_table(models: list[ModelTest]) -> pd.DataFrame:
    """Each model's test mIoU with its interval, and its paired bootstrap difference to the
    best one (same images, the best's resample count and seed) with the verdict."""
    best = max(models, key=lambda m: m.evaluation.miou)
    standings = against_best([Entrant(m.evaluation.miou, m.per_image, m.problem, m.record.resamples, m.record.seed) for m in models])
    rows = []
    for model, standing in sorted(zip(models, standings), key=lambda pair: -pair[0].evaluation.miou):
        if standing.best:
            comparison, difference = "-", "highest mIoU (the reference)" if len(models) > 1 else "the only model evaluated"
        elif standing.difference is None:
            comparison, difference = "-", f"not compared: {standing.problem}"
        else:
            interval = standing.difference
            comparison = f"{interval.estimate:+.3f} ({interval.low:+.3f} to {interval.high:+.3f})"
            relation = {BETTER: "better than", WORSE: "worse than"}.get(standing.verdict, "not distinguishable from")
            difference = f"{relation} {best.label}"
        rows.append({"Model": model.label, "Verdict": difference, "Minus the best (95% interval)": comparison,
                     "Test mIoU (95% interval)": f"{model.evaluation.miou:.3f} ({interval_text(model.evaluation.miou_interval)})"})
    return pd.DataFrame(rows)


def ranking_markdown(table: pd.DataFrame) -> str:
    """The ranking as a two-column Markdown table, whose cells wrap on a phone."""
    lines = [f"**{RANKING_CAPTION}**", "", "| Model: test mIoU (95% interval) | Against the best: difference (95% interval) |", "| --- | --- |"]
    for row in table.itertuples(index=False):
        model, verdict_text, difference, miou = row
        against = verdict_text if difference == "-" else f"{verdict_text}: {difference}"
        lines.append(f"| **{model}**: {miou} | {against} |")
    return "\n".join(lines)


def per_class_table(models: list[ModelTest], class_names: tuple[str, ...]) -> pd.DataFrame:
    """Long form: every model's mIoU and per-class test IoU with their interval bounds."""
    rows = []
    for model in models:
        evaluation = model.evaluation
        entries = [(MIOU_ROW, evaluation.miou, evaluation.miou_interval)]
        entries += [(name, evaluation.per_class_iou.get(name, math.nan), evaluation.per_class_interval.get(name)) for name in class_names]
        for name, value, interval in entries:
            low, high = (interval.low, interval.high) if interval is not None else (math.nan, math.nan)
            rows.append({"Model": model.label, "Class": name, "IoU": value, "Low": low, "High": high})
    return pd.DataFrame(rows)


def no_record_sentence(set_label: str, set_name: str, missing: list[str], unreadable: list[str]) -> str:
    sentence = f"No {set_label} model has been evaluated on its test split yet, so there is nothing to show here."
    if missing:
        names = " ".join(f"{set_name}/{arch}" for arch in missing)
        hint = DATA_HINT.get(set_name, "DIR: the folder that holds the set's test split")
        sentence += f" Make the test records (once per finished model) with `python -m segmodels test-card {names} --data DIR` ({hint})."
    return sentence + "".join(f"\n\n{problem}" for problem in unreadable)


class TestSetTab:
    """The Test set tab's handlers (typed results) and presenter (Gradio updates)."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App):
        self.app = app
        self.reading = Job(None, self.viewed, self.present, shown_inline(lambda message: VIEW(status=message, heatmap=hidden(), confusions="", per_class=hidden(), ranking=hidden())))

    def collect(self, set_name: str, depth: int) -> TestSet:
        """Every shipped model of the set with its test record, U-Net++ at ``depth`` (its
        deepest evaluated depth when ``depth`` is deeper)."""
        weights_dir = self.app.engine.weights_dir
        models, missing, unreadable = [], [], []
        for arch in self.app.choices.archs(set_name):
            name = f"{set_name}/{arch}"
            try:
                card = zoo.read_card(name, weights_dir)
            except (zoo.WeightsError, OSError) as error:
                unreadable.append(f"{ARCH_NAMES[arch]}: {error}")
                continue
            if card.test is None:
                missing.append(arch)
                continue
            depths = [result.depth for result in card.test.results if result.depth is not None]
            at = min(depth, max(depths)) if depths else None
            evaluation = card.test_result(at)
            if evaluation is None:
                unreadable.append(f"{ARCH_NAMES[arch]}: its test record has no result at depth {at}")
                continue
            try:
                per_image, problem = testset.read_per_image(name, at, weights_dir), None
            except (zoo.WeightsError, OSError, ValueError) as error:
                per_image, problem = None, str(error)
            models.append(ModelTest(arch, at, evaluation, card.test, per_image, problem, card.val_miou(at)))
        return TestSet(set_name, self.app.choices.info(set_name).class_names, models, missing, unreadable)

    def view(self, set_name, arch, depth) -> TestSetView:
        """The chosen model's confusion matrix, every model's per-class IoU and the ranking;
        :class:`NoTestRecords` when no model of the set has been evaluated on test."""
        set_name = self.app.check.set_name(set_name)
        tests = self.collect(set_name, self.app.check.depth(depth))
        if not tests.models:
            raise NoTestRecords(no_record_sentence(tests.set_label, set_name, tests.missing, tests.unreadable))
        if arch not in (None, "") and arch not in ARCHITECTURES:
            raise InputError(f"Unknown model {short(arch)}; choose from {', '.join(ARCH_NAMES.values())}.")
        chosen = next((model for model in tests.models if model.arch == arch), tests.models[0])
        percent = row_percent(chosen.evaluation.confusion_matrix)
        if percent.shape != (len(tests.class_names),) * 2:
            raise InputError(
                f"The test confusion matrix of {chosen.label} is {percent.shape[0]} x {percent.shape[1]}, "
                f"but the {tests.set_label} set has {len(tests.class_names)} classes: its card is inconsistent."
            )
        return TestSetView(tests, chosen, percent, largest_confusions(percent, tests.class_names),
                           per_class_table(tests.models, tests.class_names), ranking_table(tests.models))

    # ------------------------------------------------------------------ presenter

    def show(self, set_name, arch, depth):
        return self.reading.answer(lambda: no_image(set_name=set_name, arch=arch, depth=depth))

    def viewed(self, request: Request) -> TestSetView | NoTestRecords:
        """The view, or why there is none."""
        try:
            return self.view(request.choices["set_name"], request.choices["arch"], request.choices["depth"])
        except NoTestRecords as missing:
            return missing

    @staticmethod
    def present(request: Request, result: TestSetView | NoTestRecords) -> tuple:
        if isinstance(result, NoTestRecords):
            return VIEW(status=str(result), model=gr.update(choices=[], value=None), heatmap=hidden(), confusions="", per_class=hidden(), ranking=hidden())
        tests, chosen = result.tests, result.chosen
        evaluation = chosen.evaluation
        resamples = " or ".join(str(n) for n in sorted({m.record.resamples for m in tests.models}))
        lines = [(f"**{tests.set_label}** test split: {evaluation.num_images} images, each model evaluated on it once; "
                  f"intervals from {resamples} bootstrap resamples of the images.")]
        if tests.missing:
            names = " ".join(f"{tests.set_name}/{arch}" for arch in tests.missing)
            lines.append(f"Not evaluated on test yet: {', '.join(ARCH_NAMES[a] for a in tests.missing)}. Make their records with `python -m segmodels test-card {names} --data DIR`.")
        lines += tests.unreadable
        confusions = (f"{confusion_sentence(chosen.label, result.confusions)} Its test mIoU is **{evaluation.miou:.3f}** "
                      f"(95% interval {interval_text(evaluation.miou_interval)}), mean class accuracy {evaluation.mean_class_accuracy:.3f}, "
                      f"pixel accuracy {evaluation.pixel_accuracy:.3f}." + val_sentence(chosen))
        return VIEW(
            status="\n\n".join(lines),
            model=gr.update(choices=[(m.label, m.arch) for m in tests.models], value=chosen.arch),
            heatmap=gr.update(value=testset_charts.confusion_figure(result.percent, tests.class_names, chosen.label, evaluation.num_images), visible=True),
            confusions=confusions,
            per_class=gr.update(value=testset_charts.per_class_interval_figure(result.per_class), visible=True),
            ranking=gr.update(value=ranking_markdown(result.ranking), visible=True),
        )


def build(shared: Shared) -> gr.Tab:
    """The Test set tab, its components and its events."""
    tab = TestSetTab(shared.app)
    with gr.Tab("Test set", id="testset") as testset_tab:
        status = gr.Markdown(label="Test set status", elem_id="testset-status")
        model = gr.Dropdown([], label="Confusion matrix of", min_width=200, elem_id="testset-model")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=320):
                heatmap = gr.Plot(label="Test confusion matrix", show_label=False, visible=False, elem_id="testset-heatmap")
                confusions = gr.Markdown(label="Largest confusions", elem_id="testset-confusions")
            per_class = gr.Plot(label="Per-class test IoU with intervals", show_label=False, visible=False, min_width=320, elem_id="testset-per-class")
        ranking = gr.Markdown(label="Ranking", visible=False, elem_id="testset-ranking")
        with gr.Accordion("What am I looking at?", open=False):
            gr.Markdown(EXPLANATION, latex_delimiters=text.LATEX)
            notes = gr.Markdown(SPLIT_NOTES.get(shared.set_radio.value, ""))

    outputs = VIEW.components(status=status, model=model, heatmap=heatmap, confusions=confusions, per_class=per_class, ranking=ranking)
    gr.on([testset_tab.select, shared.set_radio.change, shared.depth_sl.release, model.input], tab.show, [shared.set_radio, model, shared.depth_sl], outputs,
          trigger_mode="always_last", show_progress="hidden", api_name="testset", **shared.light)
    shared.set_radio.change(lambda set_name: SPLIT_NOTES.get(set_name, ""), shared.set_radio, notes, show_progress="hidden", api_name="testset_notes", **shared.light)
    return testset_tab
