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
    "Latency = median of a benchmark measured while the server was idle, IQR beside it; "
    f"{NOISY} marks a figure from a single pass or with an IQR above a quarter of the median "
    "(another job shared the processor): compare such figures with care."
)


def rounded(value: float | None, digits: int) -> float:
    """``value`` rounded, NaN for a missing value."""
    return float("nan") if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def latency_origin(latency: Latency) -> str:
    """Where a latency figure comes from, starting with ⚠ (and why) when it is noisy; short,
    so the table fits a desktop screen."""
    when = time.strftime("%H:%M", time.localtime(latency.measured_at))
    if latency.source != "benchmark":
        return f"{NOISY} 1 pass, {when} (benchmark pending)"
    origin = f"benchmark ×{latency.samples}, {when}"
    if latency.noisy:
        reason = f"{latency.samples} passes" if latency.samples < 3 else "IQR > ¼ median"
        return f"{NOISY} noisy ({reason}), {origin}"
    return origin


def latency_columns(latency: Latency | None) -> dict:
    """Median, IQR and where the figure comes from, for a table row."""
    if latency is None:
        return {"Latency (ms)": float("nan"), "IQR (ms)": float("nan"), "Latency from": "-"}
    return {
        "Latency (ms)": rounded(latency.median_ms, 1),
        "IQR (ms)": rounded(latency.iqr_ms, 1) if latency.samples > 1 else float("nan"),
        "Latency from": latency_origin(latency),
    }


def card_miou(engine: Engine, set_name: str, run: ModelRun) -> float:
    """The model card's validation mIoU, at the run's pruning depth when it has one."""
    try:
        card = engine.card(set_name, run.arch)
    except ModelUnavailable:
        return float("nan")
    if run.depth is not None:
        for entry in card.get("pruning") or []:
            if entry.get("depth") == run.depth:
                return rounded(entry.get("val_miou"), 4)
    return rounded(card.get("val_miou"), 4)


def card_per_class(engine: Engine, set_name: str, arch: str, info: DatasetInfo) -> list[float]:
    """The model card's validation IoU of every class (NaN where the card has none)."""
    try:
        values = engine.card(set_name, arch).get("val_per_class_iou") or {}
    except ModelUnavailable:
        values = {}
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
    scores = " and ".join(f"{miou:.4f}" for miou in noise["val_miou"])
    return (f"Run-to-run noise: {ARCH_NAMES.get(arch, arch)} trained twice with the same recipe (seeds {seeds}) scored {scores} val mIoU. "
            f"A gap in *mIoU (card, val set)* of **{noise['spread']:.4f}** or less says nothing about the architectures.")


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


__all__ = ["LATENCY_NOTE", "NOISY", "card_miou", "card_per_class", "gaps_to_best", "latency_columns", "latency_origin", "noise_note", "rounded"]
