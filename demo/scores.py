"""The numbers of a results table: mIoU on the image, the model card's validation mIoU and
its gap to the best one against the run-to-run noise, latency with its spread and where it
comes from, parameters and FLOPs."""

from __future__ import annotations

import math
import time

from segmodels import ARCH_NAMES
from segmodels.data import DatasetInfo
from segmodels.inference import Latency

from .engine import Engine, ModelRun, ModelUnavailable

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


def card_evaluation(card: dict) -> dict:
    """The card's CPU re-evaluation on the validation split (``python -m segmodels evaluate``,
    recorded at export), or {} when it has none."""
    evaluation = card.get("evaluation") or {}
    return evaluation if evaluation.get("split", "val") == "val" else {}


def card_miou(engine: Engine, set_name: str, run: ModelRun) -> float:
    """The model card's validation mIoU: its CPU re-evaluation (:func:`card_evaluation`, the
    figure ``python -m segmodels zoo`` and the README give), else the training-time figure; at
    a pruning depth short of the full model only the training-time one exists."""
    try:
        card = engine.card(set_name, run.arch)
    except ModelUnavailable:
        return float("nan")
    pruning = {entry.get("depth"): entry for entry in card.get("pruning") or []}
    if run.depth is not None and pruning and run.depth != max(pruning):
        return rounded(pruning.get(run.depth, {}).get("val_miou"), 4)
    return rounded(card_evaluation(card).get("miou", card.get("val_miou")), 4)


def card_per_class(engine: Engine, set_name: str, arch: str, info: DatasetInfo) -> list[float]:
    """The model card's validation IoU of every class (NaN where the card has none), from the
    same evaluation as :func:`card_miou`."""
    try:
        card = engine.card(set_name, arch)
    except ModelUnavailable:
        card = {}
    values = card_evaluation(card).get("per_class_iou") or card.get("val_per_class_iou") or {}
    if isinstance(values, list):
        values = dict(zip(info.class_names, values))
    return [rounded(values.get(name), 4) for name in info.class_names]


def noise_note(noise: dict | None) -> str | None:
    """One sentence on a set's run-to-run noise (:func:`segmodels.zoo.seed_noise`), for the
    results' status."""
    if noise is None:
        return None
    arch = noise["model"].split("/")[-1]
    seeds = " and ".join(str(seed) for seed in noise["seeds"])
    return (f"Run-to-run noise: {ARCH_NAMES.get(arch, arch)} trained twice with the same recipe (seeds {seeds}) differs by **{noise['spread']:.4f}** "
            "in val mIoU (measured during training). A gap in *mIoU (card, val set)* no larger than that says nothing about the architectures.")


def gaps_to_best(mious: list[float], noise: float | None) -> list[str]:
    """Each validation mIoU against the best shown: ``best``, or the gap, marked as within
    the run-to-run noise where it is no larger than ``noise``."""
    known = [value for value in mious if not math.isnan(value)]
    if not known:
        return ["-"] * len(mious)
    best = max(known)
    gaps = []
    for value in mious:
        if math.isnan(value):
            gaps.append("-")
        elif value == best:
            gaps.append("best")
        else:
            gaps.append(f"−{best - value:.4f}" + (" (within noise)" if noise is not None and best - value <= noise else ""))
    return gaps


__all__ = ["LATENCY_NOTE", "NOISY", "card_evaluation", "card_miou", "card_per_class", "gaps_to_best", "latency_columns", "latency_origin", "noise_note", "origin_column", "rounded"]
