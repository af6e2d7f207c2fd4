"""The numbers of a results table: mIoU on the image, the model card's test mIoU with its
interval and a verdict against the best model shown (a paired bootstrap over the test
images), the card's validation mIoU, latency with its spread and where it comes from,
parameters and FLOPs."""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict

from segmodels import zoo
from segmodels.bootstrap import BETTER, NOT_DISTINGUISHABLE, WORSE, Entrant, against_best
from segmodels.data import DatasetInfo
from segmodels.modelcard import Evaluation
from segmodels.runtime import Latency
from segmodels.testset import read_per_image

from .engine import Engine, ModelRun, ModelUnavailable, run_label

NOISY = "⚠"
LATENCY_NOTE = (
    "Latency: median of a benchmark taken while the server had no request, IQR beside it; the models of one table are timed "
    "together, one pass of each per round. GFLOPs: the cost on any machine. "
    f"{NOISY}: a single pass, a noisy figure (IQR above a quarter of the median), one taken while other programs used more than "
    "a quarter of the processor, or one timed apart from the others: compare with care."
)


def rounded(value: float | None, digits: int) -> float:
    """``value`` rounded, NaN for a missing value."""
    return float("nan") if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def latency_origin(latency: Latency, compared: int = 1, together: bool = False) -> str:
    """Where a latency figure comes from, starting with ⚠ (and why) when it is doubtful; short,
    so the table fits a desktop screen. ``compared``: the models of the table; ``together``:
    whether this figure was timed in the same rounds as theirs."""
    when = time.strftime("%H:%M", time.localtime(latency.measured_at))
    if latency.source != "benchmark":
        return f"{NOISY} 1 pass, {when} (benchmark pending)"
    doubts = []
    if latency.busy:
        doubts.append(f"busy machine ({latency.others_share:.0%} used by others)")
    if latency.noisy:
        doubts.append(f"noisy ({latency.samples} passes)" if latency.samples < 3 else "noisy (IQR > ¼ median)")
    if compared > 1 and not together:
        doubts.append("timed apart (together: pending)")
    origin = f"{'timed together' if compared > 1 and together else 'benchmark'} ×{latency.samples}, {when}"
    return f"{NOISY} {'; '.join(doubts)}, {origin}" if doubts else origin


def latency_columns(latency: Latency | None) -> dict:
    """Median and IQR, for a table row (GFLOPs follows them); where the figure comes from goes
    last, under :func:`origin_column`."""
    if latency is None:
        return {"Latency (ms)": float("nan"), "IQR (ms)": float("nan")}
    return {"Latency (ms)": rounded(latency.median_ms, 1), "IQR (ms)": rounded(latency.iqr_ms, 1) if latency.samples > 1 else float("nan")}


def origin_column(latency: Latency | None, compared: int = 1, together: bool = False) -> dict:
    """Where the figure comes from (:func:`latency_origin`), for a table row."""
    return {"Latency from": latency_origin(latency, compared, together) if latency is not None else "-"}


def card_miou(engine: Engine, set_name: str, run: ModelRun) -> float:
    """The model card's validation mIoU: its CPU re-evaluation of the shipped weights (the
    figure ``python -m segmodels zoo`` and the README give), else the training-time figure; at
    a pruning depth short of the full model only the training-time one exists."""
    try:
        return rounded(engine.card(set_name, run.arch).val_miou(run.depth), 4)
    except ModelUnavailable:
        return float("nan")


def card_per_class(engine: Engine, set_name: str, arch: str, info: DatasetInfo) -> list[float]:
    """The model card's validation IoU of every class (NaN where the card has none), from the
    same evaluation as :func:`card_miou`."""
    try:
        values = engine.card(set_name, arch).val_per_class_iou()
    except ModelUnavailable:
        values = {}
    return [rounded(values.get(name), 4) for name in info.class_names]


def card_test(engine: Engine, set_name: str, run: ModelRun) -> Evaluation | None:
    """The card's test evaluation at the run's depth, None without one."""
    try:
        return engine.card(set_name, run.arch).test_result(run.depth)
    except ModelUnavailable:
        return None


def test_miou_text(test: Evaluation | None) -> str:
    """``0.623 [0.610, 0.634]``: the test mIoU and its 95% bootstrap interval."""
    if test is None:
        return "-"
    interval = test.miou_interval
    return f"{test.miou:.3f}" + (f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else "")


TEST_VERDICTS = {BETTER: "better than", WORSE: "worse than", NOT_DISTINGUISHABLE: "not distinguishable from"}


def test_entrant(engine: Engine, set_name: str, run: ModelRun) -> Entrant | None:
    """The run's card test mIoU, per-image matrices and resampling, for :func:`against_best`;
    None without a test record."""
    test = card_test(engine, set_name, run)
    if test is None:
        return None
    record = engine.card(set_name, run.arch).test
    try:
        per_image, problem = read_per_image(f"{set_name}/{run.arch}", run.depth, engine.weights_dir), None
    except (zoo.WeightsError, OSError, ValueError) as error:
        per_image, problem = None, str(error)
    return Entrant(test.miou, per_image, problem, record.resamples, record.seed)


def test_standings(engine: Engine, set_name: str, runs: list[ModelRun]) -> list[str]:
    """Each run against the run with the best test mIoU shown: ``best on test``, or the
    paired-bootstrap verdict with the difference in mIoU and its 95% interval (``-`` where the
    card has no test record). Computed once per choice of models and depths while their files
    stay the same (the bootstrap costs a class tens of milliseconds a click)."""
    models = tuple((run.arch, run.depth) for run in runs)
    key = (set_name, models, tuple(zoo.file_stamp(f"{set_name}/{arch}", engine.weights_dir) for arch, _ in models))
    kept = _STANDINGS.setdefault(engine, OrderedDict())
    if key not in kept:
        kept[key] = _standings(engine, set_name, models)
        while len(kept) > STANDINGS_KEPT:
            kept.popitem(last=False)
    return list(kept[key])


STANDINGS_KEPT = 64  # choices of models and depths remembered per engine
_STANDINGS: weakref.WeakKeyDictionary[Engine, OrderedDict[tuple, tuple[str, ...]]] = weakref.WeakKeyDictionary()


def _standings(engine: Engine, set_name: str, models: tuple[tuple[str, int | None], ...]) -> tuple[str, ...]:
    """:func:`test_standings` of ``models`` ((arch, depth) pairs)."""
    entrants = [test_entrant(engine, set_name, ModelRun(arch, run_label(arch, depth), depth)) for arch, depth in models]
    known = [entrant for entrant in entrants if entrant is not None]
    standings = iter(against_best(known))
    texts = []
    for entrant in entrants:
        standing = next(standings) if entrant is not None else None
        if standing is None:
            texts.append("-")
        elif standing.problem is not None:
            texts.append("- (per-image test record unreadable)")
        elif standing.best:
            texts.append("best on test")
        else:
            difference = standing.difference
            texts.append(f"{TEST_VERDICTS[standing.verdict]} best: {difference.estimate:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]")
    return tuple(texts)


TEST_NOTE = (
    "*mIoU (test)*: the model card's figure on the held-out test split (frames the training never saw), evaluated once per model, "
    "with its 95% interval [low, high] from a bootstrap over the test images. *Test vs best*: each model against the best one shown, "
    "on the same resampled images (a paired bootstrap): the difference in mIoU and its 95% interval; *not distinguishable* when the "
    "interval contains 0. The intervals cover which test images were drawn, not seed-to-seed training noise (not yet measured at a "
    "fixed final epoch). *mIoU (val)*: the split the checkpoints were chosen on; it runs high."
)


__all__ = ["LATENCY_NOTE", "NOISY", "TEST_NOTE", "card_miou", "card_per_class", "card_test", "latency_columns", "latency_origin", "origin_column",
           "rounded", "test_entrant", "test_miou_text", "test_standings"]
