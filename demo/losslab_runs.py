"""The Loss lab's data: requests, the curves of a run (live or precomputed), the
server-wide gate and per-session budget for live runs (see :mod:`demo.tabs.losslab`)."""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segmodels.data.info import SHAPES
from segmodels.teach.losslab import LAB_LOSSES, LOSS_LABELS, MAX_GAMMA, RARE_CLASS, LabRecord

CURVES_PATH = Path(__file__).resolve().parents[1] / "assets" / "losslab" / "curves.json"
RUNS_PER_WINDOW = 3
WINDOW_S = 600.0
GAMMA_SLIDER_MAX = 5.0  # the range Lin et al. explored (Sec. 5.1); the API accepts up to MAX_GAMMA
FOCAL_LOSSES = ("focal", "wfocal")
SHORT_LABELS = {"ce": "CE", "wce": "weighted CE", "mfb": "median-frequency CE", "focal": "focal", "wfocal": "weighted focal"}
LOSS_COLOURS = {"ce": "#1f77b4", "wce": "#ff7f0e", "mfb": "#2ca02c", "focal": "#d62728", "wfocal": "#9467bd"}
CLASS_COLOURS = [f"rgb{tuple(colour)}" for colour in SHAPES.colors]
STOP_REASONS = {
    "max steps": "all {max_steps} steps done",
    "time budget": "the {budget:g} s budget ran out first: the server is shared, so this run reached fewer steps",
    "stopped": "stopped",
    "server busy": "the server was busy with model jobs until the {budget:g} s budget ran out",
}
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
FONT = dict(size=14)
LOSS_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)

FORMULAS = r"""
### Five losses for one rare class

Pixel $i$ has true class $t_i$, the model gives it probability $p_{t_i}$; $N_c$ is the number
of training pixels of class $c$, $N = \sum_c N_c$, and $M$ the pixels of a batch.

**Cross-entropy** (every pixel counts the same):
$$\mathcal{L}_{\mathrm{CE}} = -\frac{1}{M}\sum_{i=1}^{M} \log p_{t_i}$$

**Weighted cross-entropy**, normalised by the weights as PyTorch does:
$$\mathcal{L}_{\mathrm{wCE}} = -\frac{\sum_i w_{t_i} \log p_{t_i}}{\sum_i w_{t_i}}, \qquad w_c = \frac{N - N_c}{N}$$

**Median-frequency weighted cross-entropy** (Eigen & Fergus, 2015): the same loss with
$$w_c = \frac{\operatorname{median}_k \mathrm{freq}_k}{\mathrm{freq}_c}, \qquad \mathrm{freq}_c = \frac{N_c}{P_c}$$
where $P_c$ counts the pixels of the training images that contain class $c$.

**Focal loss** (Lin et al., 2017): pixels the model already gets right ($p_t \to 1$) fade out:
$$\mathcal{L}_{\mathrm{focal}} = -\frac{1}{M}\sum_i (1 - p_{t_i})^{\gamma} \log p_{t_i}$$

**Weighted focal loss**: both at once, with $w_c = (N - N_c)/N$ in the role of the paper's $\alpha_t$:
$$\mathcal{L}_{\mathrm{wfocal}} = -\frac{\sum_i w_{t_i} (1 - p_{t_i})^{\gamma} \log p_{t_i}}{\sum_i w_{t_i}}$$

While every pixel is equally wrong (as at the start of training), class $c$ holds
$\dfrac{N_c w_c}{\sum_j N_j w_j}$ of the loss.
"""


def run_label(loss: str, gamma: float | None) -> str:
    """The loss's name, with gamma for the focal losses."""
    return LOSS_LABELS[loss] + (f", γ = {gamma:g}" if loss in FOCAL_LOSSES and gamma is not None else "")


def check_lab_request(loss: Any, gamma: Any) -> tuple[str, float]:
    """(loss, gamma) of a request, or ValueError saying what is allowed."""
    if loss not in LAB_LOSSES:
        raise ValueError(f"Unknown loss {loss!r}: choose one of {', '.join(LAB_LOSSES)}.")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or not 0.0 <= gamma <= MAX_GAMMA:
        raise ValueError(f"gamma must be a number from 0 to {MAX_GAMMA:g} (2 is the focal-loss paper's choice), got {gamma!r}.")
    return loss, float(gamma)


# ---------------------------------------------------------------------------- curve data


@dataclass(frozen=True)
class LabCurves:
    """One run's curves: per record, the step, the seconds since training began, the mean
    training loss since the previous record (NaN at step 0), mIoU and per-class IoU and recall
    on the held-out batch (NaN for a class absent from truth and prediction). ``source`` is
    'live' or 'precomputed'; ``stop_reason`` is None while a live run goes on."""

    loss: str
    gamma: float | None
    source: str
    step: tuple[int, ...]
    seconds: tuple[float, ...]
    train_loss: tuple[float, ...]
    miou: tuple[float, ...]
    per_class_iou: tuple[tuple[float, ...], ...]
    per_class_recall: tuple[tuple[float, ...], ...]
    stop_reason: str | None = None

    @property
    def label(self) -> str:
        return run_label(self.loss, self.gamma)

    @property
    def final_iou(self) -> tuple[float, ...]:
        return self.per_class_iou[-1]

    @property
    def final_recall(self) -> tuple[float, ...]:
        return self.per_class_recall[-1]

    def window(self, last: int) -> slice:
        """The last ``last`` evaluations after step 0 (fewer when the run has fewer)."""
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise ValueError(f"last must be a positive number of evaluations, got {last!r}")
        return slice(max(1, len(self.step) - last), len(self.step))

    def mean_of_last(self, values: str, last: int) -> tuple[float, ...]:
        """Each class's IoU (``values='iou'``) or recall (``'recall'``) averaged over the last
        ``last`` evaluations (NaN where a class is absent from all of them)."""
        table = np.array(self.per_class_iou if values == "iou" else self.per_class_recall, dtype=float)[self.window(last)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every evaluation stays NaN
            return tuple(float(v) for v in np.nanmean(table, axis=0))

    def miou_of_last(self, last: int) -> tuple[float, float]:
        """(mean, standard deviation) of the mIoU over the last ``last`` evaluations."""
        values = np.array(self.miou, dtype=float)[self.window(last)]
        return float(values.mean()), float(values.std())

    def class_series(self, values: str, class_index: int) -> list[float]:
        """One class's IoU (``values='iou'``) or recall (``'recall'``) over the steps."""
        table = self.per_class_iou if values == "iou" else self.per_class_recall
        return [row[class_index] for row in table]

    @classmethod
    def from_records(cls, loss: str, gamma: float, records: list[LabRecord], stop_reason: str | None = None) -> LabCurves:
        return cls(
            loss=loss,
            gamma=gamma if loss in FOCAL_LOSSES else None,
            source="live",
            step=tuple(r.step for r in records),
            seconds=tuple(r.seconds for r in records),
            train_loss=tuple(math.nan if r.train_loss is None else r.train_loss for r in records),
            miou=tuple(r.miou for r in records),
            per_class_iou=tuple(tuple(r.per_class_iou) for r in records),
            per_class_recall=tuple(tuple(r.per_class_accuracy) for r in records),
            stop_reason=stop_reason,
        )

    @classmethod
    def from_precomputed(cls, run: dict[str, Any]) -> LabCurves:
        curves = run["curves"]

        def floats(values: list) -> tuple[float, ...]:
            return tuple(math.nan if v is None else float(v) for v in values)

        return cls(
            loss=run["loss"],
            gamma=run.get("gamma"),
            source="precomputed",
            step=tuple(int(s) for s in curves["step"]),
            seconds=floats(curves["seconds"]),
            train_loss=floats(curves["train_loss"]),
            miou=floats(curves["miou"]),
            per_class_iou=tuple(floats(row) for row in curves["per_class_iou"]),
            per_class_recall=tuple(floats(row) for row in curves["per_class_accuracy"]),
            stop_reason=run["stop_reason"],
        )


@dataclass(frozen=True)
class Precomputed:
    """The shipped runs of all five losses (``scripts/precompute_losslab.py``): one run per
    loss, all with the training seeds ``seeds``, evaluated every ``eval_every`` steps."""

    runs: dict[str, LabCurves]
    class_names: tuple[str, ...]
    rare_class: int
    max_steps: int
    eval_every: int
    seeds: tuple[int, ...]
    pixel_share: tuple[float, ...]
    class_weights: dict[str, tuple[float, ...]]
    loss_share: dict[str, tuple[float, ...]]
    weight_spread: dict[str, float]


def load_precomputed(path: Path = CURVES_PATH) -> Precomputed:
    """Read and check the precomputed curves (one run per lab loss, Shapes classes)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the precomputed loss-lab curves {path}: {error}; run scripts/precompute_losslab.py") from None
    runs = {run["loss"]: run for run in data["runs"]}
    if set(runs) != set(LAB_LOSSES) or tuple(data["class_names"]) != SHAPES.class_names or data["rare_class"] != RARE_CLASS:
        raise ValueError(f"{path} must hold one run of each of {', '.join(LAB_LOSSES)} on the Shapes classes; rerun scripts/precompute_losslab.py")
    return Precomputed(
        runs={loss: LabCurves.from_precomputed(runs[loss]) for loss in LAB_LOSSES},
        class_names=tuple(data["class_names"]),
        rare_class=int(data["rare_class"]),
        max_steps=int(data["settings"]["max_steps"]),
        eval_every=int(data["settings"]["eval_every"]),
        seeds=(int(data["settings"]["seed"]),),
        pixel_share=tuple(data["train_pixel_share"]),
        class_weights={loss: tuple(runs[loss]["class_weights"]) for loss in LAB_LOSSES},
        loss_share={loss: tuple(runs[loss]["class_loss_share"]) for loss in LAB_LOSSES},
        weight_spread={loss: float(runs[loss]["weight_spread"]) for loss in LAB_LOSSES},
    )


# ---------------------------------------------------------------------------- server-wide gate


@dataclass(frozen=True)
class Admission:
    """Whether a live run may start; ``token`` ends it (:meth:`LiveRunGate.finish`). A refusal
    says why (``reason`` 'busy' or 'budget') and in how many seconds to try again."""

    granted: bool
    runs_left: int
    token: int | None = None
    reason: str | None = None
    retry_in_s: float = 0.0


@dataclass(eq=False)
class LiveRunGate:
    """One live run at a time on the whole server, and at most ``runs_per_window`` runs per
    client key (a browser session) in any ``window_s`` seconds. A run usually lasts ``run_s``
    (the estimate a refused student is given); a hold older than ``max_hold_s`` counts as
    abandoned and may be taken over."""

    runs_per_window: int = RUNS_PER_WINDOW
    window_s: float = WINDOW_S
    run_s: float = 40.0
    max_hold_s: float = 120.0
    clock: Callable[[], float] = time.monotonic
    _holder: tuple[int, float] | None = field(default=None, init=False)
    _started: dict[str, deque] = field(default_factory=dict, init=False)
    _tokens: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.runs_per_window < 1 or not self.window_s > 0 or not 0 < self.run_s <= self.max_hold_s:
            raise ValueError(f"need runs_per_window >= 1, window_s > 0 and 0 < run_s <= max_hold_s, got {self.runs_per_window}, {self.window_s}, {self.run_s}, {self.max_hold_s}")

    def _recent(self, client: str, now: float) -> deque:
        for key in [k for k, starts in self._started.items() if starts and now - starts[-1] >= self.window_s]:
            del self._started[key]
        starts = self._started.setdefault(client, deque())
        while starts and now - starts[0] >= self.window_s:
            starts.popleft()
        return starts

    def runs_left(self, client: str) -> int:
        with self._lock:
            return self.runs_per_window - len(self._recent(client, self.clock()))

    def try_start(self, client: str) -> Admission:
        with self._lock:
            now = self.clock()
            starts = self._recent(client, now)
            left = self.runs_per_window - len(starts)
            if left <= 0:
                return Admission(False, 0, reason="budget", retry_in_s=starts[0] + self.window_s - now)
            if self._holder is not None and now - self._holder[1] < self.max_hold_s:
                return Admission(False, left, reason="busy", retry_in_s=max(1.0, self._holder[1] + self.run_s - now))
            self._tokens += 1
            self._holder = (self._tokens, now)
            starts.append(now)
            return Admission(True, left - 1, token=self._tokens)

    def finish(self, token: int | None) -> None:
        """End the run holding ``token`` (a stale token, taken over since, changes nothing)."""
        with self._lock:
            if self._holder is not None and self._holder[0] == token:
                self._holder = None


# ---------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class LabView:
    """What the tab shows after an event: a status message, the curves to draw (``current``:
    the live run so far, or the precomputed run of the chosen loss when no live run was
    possible; None keeps the plots), the previous run of this browser tab, and ``remember``:
    the run to keep as this tab's previous run (None keeps the stored one)."""

    status: str
    current: LabCurves | None = None
    previous: LabCurves | None = None
    remember: LabCurves | None = None


def budget_line(runs_left: int, runs_per_window: int = RUNS_PER_WINDOW, window_s: float = WINDOW_S) -> str:
    return f"You have {runs_left} of {runs_per_window} live runs left in this {window_s / 60:.0f}-minute window; one live run at a time on the whole server."


def minutes_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def class_values_text(names: tuple[str, ...], values: tuple[float, ...]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in zip(names, values))
