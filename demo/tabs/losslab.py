"""The "Loss lab" tab (issue 13): train a tiny U-Net on Imbalanced Shapes for about 30 s with
one of five losses and watch, live, what the loss does to the rare class (the triangles, about
0.5 % of the pixels), next to the previous run of the same browser tab and the precomputed
runs of all five losses.

The losses (:mod:`segmodels.losslab`), with ``p_t`` the predicted probability of pixel i's
true class ``t_i``, ``N_c`` the training pixels of class c and ``N = sum_c N_c``:
cross-entropy ``-log p_t``; weighted CE ``-w_t log p_t`` normalised by ``sum_i w_{t_i}`` with
``w_c = (N - N_c) / N``; the same with median-frequency weights ``w_c = median(freq) / freq_c``,
``freq_c = N_c / P_c`` (Eigen & Fergus, ICCV 2015); focal ``-(1 - p_t)^gamma log p_t`` (Lin et
al., ICCV 2017, Eq. 4) and weighted focal (Eq. 5 with ``w_c`` as ``alpha_t``). A class's share
of the loss while every pixel is equally wrong is ``N_c w_c / sum_j N_j w_j``.

Sharing a 2-core classroom server
---------------------------------
* **One live run on the whole server** (:class:`LiveRunGate`): a second student is answered at
  once with the precomputed run of the loss they chose and a message, never queued. A run that
  was never closed (a vanished client) loses the gate after ``max_hold_s``.
* **A per-session budget**: at most :data:`RUNS_PER_WINDOW` live runs per browser session in
  any :data:`WINDOW_S` seconds, said on screen.
* **Fair to the model jobs**: the lab trains on one thread and takes a
  :meth:`demo.scheduler.FairScheduler.turn` for every chunk of ``eval_every`` (25) steps, about
  1 s, instead of one turn for the whole run (``shared.on_device`` would hold the device for
  30 s). Between chunks the turn goes round robin to other addresses, so a student's model job
  waits for at most one chunk. Its tickets carry no browser session, so the student's own model
  clicks neither supersede the lab nor are superseded by it. Time spent waiting for turns
  counts against the run's 30 s budget: on a busy server the run reaches fewer steps and says
  so, and the wait for a turn stops at the budget's end. While a run is live it marks the
  engine's benchmarker busy, so no latency is measured with a core taken. One thread, not
  the whole turn's cores, because the precomputed runs used one: on a quiet machine a live run
  repeats its loss's precomputed run step for step (600 steps took 26 s of wall time on the
  2-core machine), and the other core stays free for the light events.

The rare-class verdict and the final table are rendered from ``assets/losslab/curves.json``
(written by ``scripts/precompute_losslab.py``), the weight table from
:func:`segmodels.losslab.lab_class_weights`, and CamVid's weight spreads from
:func:`segmodels.teaching.camvid_class_weight_schemes` when a CamVid folder is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmodels import zoo
from segmodels.data.info import CAMVID, SHAPES
from segmodels.losslab import LAB_LOSSES, LOSS_LABELS, MAX_GAMMA, RARE_CLASS, LabRecord, LabSettings, lab_class_weights, run_loss_lab
from segmodels.teaching import camvid_class_weight_schemes

from ..scheduler import FairScheduler, Refused
from ..serving import client_of

log = logging.getLogger(__name__)

CURVES_PATH = Path(__file__).resolve().parents[2] / "assets" / "losslab" / "curves.json"
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
    """The shipped runs of all five losses (``scripts/precompute_losslab.py``)."""

    runs: dict[str, LabCurves]
    class_names: tuple[str, ...]
    rare_class: int
    max_steps: int
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


def _minutes(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _class_values(names: tuple[str, ...], values: tuple[float, ...]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in zip(names, values))


class LossLab:
    """The tab's server-wide state: the precomputed runs, the gate and the scheduler whose turns
    the live runs take, chunk by chunk. ``mark_busy`` is a context manager held for a whole live
    run (the engine's ``benchmarker.busy``)."""

    def __init__(
        self,
        precomputed: Precomputed,
        scheduler: FairScheduler,
        gate: LiveRunGate | None = None,
        settings: LabSettings | None = None,
        mark_busy: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.precomputed = precomputed
        self.scheduler = scheduler
        self.settings = settings or LabSettings()
        self.settings.validate()
        self.gate = gate or LiveRunGate(run_s=self.settings.time_budget_s + 10.0, max_hold_s=3 * self.settings.time_budget_s + 30.0)
        self.mark_busy = mark_busy

    def fallback_view(self, loss: str, gamma: float, previous: LabCurves | None, reason: str, retry_in_s: float = 0.0) -> LabView:
        """The precomputed run of ``loss`` with the reason no live run started."""
        run = self.precomputed.runs[loss]
        if reason == "busy":
            why = f"**Another student's live run is training on the server right now** (one at a time, so that everyone's models stay fast); it ends in about {_minutes(retry_in_s)}."
        else:
            why = f"**You have used your {self.gate.runs_per_window} live runs of the last {self.gate.window_s / 60:.0f} minutes**; your next one is available in {_minutes(retry_in_s)}."
        gamma_note = f" (precomputed with γ = {run.gamma:g}, not {gamma:g})" if loss in FOCAL_LOSSES and run.gamma is not None and not math.isclose(run.gamma, gamma) else ""
        return LabView(
            status=f"{why} Meanwhile, here is the precomputed run of {run.label}{gamma_note}: the same model and settings, {run.step[-1]} steps.",
            current=run,
            previous=previous,
        )

    async def views(self, loss: Any, gamma: Any, previous: LabCurves | None, address: str, client: str) -> AsyncIterator[LabView]:
        """The views of one click: a message for bad input; the precomputed run when the server
        is busy or the session's budget is spent; else the live run, record by record."""
        try:
            loss, gamma = check_lab_request(loss, gamma)
        except ValueError as error:
            yield LabView(status=f"**Nothing was trained:** {error}")
            return
        admission = self.gate.try_start(client)
        if not admission.granted:
            yield self.fallback_view(loss, gamma, previous, admission.reason, admission.retry_in_s)
            return
        try:
            with self.mark_busy():
                records: list[LabRecord] = []
                async with contextlib.aclosing(self._records_in_turns(loss, gamma, address)) as stream:
                    async for record in stream:
                        if isinstance(record, str):
                            yield self._finished_view(LabCurves.from_records(loss, gamma, records, record), previous, admission.runs_left)
                            return
                        records.append(record)
                        curves = LabCurves.from_records(loss, gamma, records, record.stop_reason)
                        if record.done:
                            yield self._finished_view(curves, previous, admission.runs_left)
                            return
                        yield LabView(status=self._progress(curves), current=curves, previous=previous)
        finally:
            self.gate.finish(admission.token)

    async def _records_in_turns(self, loss: str, gamma: float, address: str) -> AsyncIterator[LabRecord | str]:
        """The run's records, each chunk computed in a worker thread during a scheduler turn,
        until the record marked done; or, when a turn did not come within the time budget or
        the scheduler refused it, a string: the stop reason or the refusal."""
        records = run_loss_lab(loss, gamma, self.settings, threads=1)
        deadline = time.monotonic() + self.settings.time_budget_s
        started = False
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        async with asyncio.timeout(remaining):
                            await stack.enter_async_context(self.scheduler.turn(address, None))
                        record = await anyio.to_thread.run_sync(next, records, None)
                except TimeoutError:
                    yield "server busy"
                    return
                except Refused as error:
                    yield str(error)
                    return
                if record is None:
                    return
                if not started:
                    started, deadline = True, time.monotonic() + self.settings.time_budget_s
                yield record
                if record.done:
                    return
        finally:
            records.close()

    def _progress(self, curves: LabCurves) -> str:
        rare = self.precomputed.rare_class
        name = self.precomputed.class_names[rare]
        total = f" of {self.settings.max_steps}" if self.settings.max_steps else ""
        return (
            f"**Training live with {curves.label}:** step {curves.step[-1]}{total}, {curves.seconds[-1]:.0f} s of {self.settings.time_budget_s:g} s. "
            f"Rare class ({name}): IoU {curves.final_iou[rare]:.2f}, recall {curves.final_recall[rare]:.2f}."
        )

    def _finished_view(self, curves: LabCurves, previous: LabCurves | None, runs_left: int) -> LabView:
        """The closing view; ``curves.stop_reason`` is a key of :data:`STOP_REASONS` or the
        scheduler's refusal."""
        names, rare = self.precomputed.class_names, self.precomputed.rare_class
        reason = STOP_REASONS.get(curves.stop_reason, curves.stop_reason).format(max_steps=self.settings.max_steps, budget=self.settings.time_budget_s)
        if not curves.step:
            return LabView(status=f"**The live run could not start:** {reason}. " + budget_line(runs_left, self.gate.runs_per_window, self.gate.window_s), previous=previous)
        reference = self.precomputed.runs[curves.loss]
        iou = curves.final_iou
        miou = curves.miou[-1]
        return LabView(
            status=(
                f"**Finished {curves.label}** after {curves.step[-1]} steps in {curves.seconds[-1]:.0f} s ({reason}).\n\n"
                f"Per-class IoU reached: {_class_values(names, iou)} (mIoU {miou:.2f}); {names[rare]} recall {curves.final_recall[rare]:.2f}. "
                f"The precomputed run of the same loss reached {names[rare]} IoU {reference.final_iou[rare]:.2f} after {reference.step[-1]} steps.\n\n"
                + budget_line(runs_left, self.gate.runs_per_window, self.gate.window_s)
            ),
            current=curves,
            previous=previous,
            remember=curves,
        )


# ---------------------------------------------------------------------------- figures


def _layout(fig: go.Figure, title: str, subtitle: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=17), subtitle=dict(text=subtitle, font=dict(size=12, color="#555"))),
        font=FONT,
        height=height,
        margin=dict(l=55, r=15, t=90, b=40),
        template="plotly_white",
        legend=dict(orientation="h", y=-0.18),
    )
    return fig


def _run_name(curves: LabCurves, is_current: bool) -> str:
    role = "previous run" if not is_current else "this run" if curves.source == "live" else "precomputed"
    return f"{role}: {SHORT_LABELS[curves.loss]}" + (f" γ={curves.gamma:g}" if curves.gamma is not None else "")


def loss_figure(current: LabCurves | None, previous: LabCurves | None, max_steps: int) -> go.Figure:
    """Training loss per step (log scale) of the current run (solid) and the previous one (dashed)."""
    fig = go.Figure()
    for curves, is_current, dash in ((current, True, "solid"), (previous, False, "dash")):
        if curves is not None:
            fig.add_trace(go.Scatter(x=curves.step[1:], y=curves.train_loss[1:], name=_run_name(curves, is_current), mode="lines+markers", line=dict(width=3, dash=dash, color=LOSS_COLOURS[curves.loss]), marker=dict(size=5)))
    fig.update_xaxes(title="training step", range=[0, max_steps])
    fig.update_yaxes(title="training loss", type="log", tickvals=LOSS_TICKS, ticktext=[f"{v:g}" for v in LOSS_TICKS])
    return _layout(fig, "Training loss", "losses differ in scale:<br>compare how each falls, not its height", 380)


def iou_figure(current: LabCurves | None, previous: LabCurves | None, class_names: tuple[str, ...], rare_class: int, max_steps: int) -> go.Figure:
    """Per-class IoU on the held-out batch per step: one colour per class, the current run solid,
    the previous run dashed; the rare class drawn thickest."""
    fig = go.Figure()
    roles = []
    for curves, is_current in ((current, True), (previous, False)):
        if curves is None:
            continue
        dash, width = ("solid", 3) if is_current else ("dash", 1.5)
        roles.append(f"{'solid' if is_current else 'dashed'}: {_run_name(curves, is_current)}")
        for index, name in enumerate(class_names):
            fig.add_trace(go.Scatter(
                x=curves.step, y=curves.class_series("iou", index), name=name + (" (rare)" if index == rare_class else ""), legendgroup=name,
                showlegend=is_current or current is None, mode="lines", line=dict(width=width + (2 if index == rare_class else 0), dash=dash, color=CLASS_COLOURS[index]),
            ))
    fig.update_xaxes(title="training step", range=[0, max_steps])
    fig.update_yaxes(title="IoU (held-out batch)", range=[0, 1.02])
    return _layout(fig, "Per-class IoU", "<br>".join(roles) or "press Train to watch a run", 420)


def precomputed_figure(precomputed: Precomputed) -> go.Figure:
    """The rare class's IoU and recall per step for each of the five precomputed runs."""
    rare = precomputed.rare_class
    name = precomputed.class_names[rare]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(f"{name} IoU", f"{name} recall (share of its pixels found)"))
    for loss, curves in precomputed.runs.items():
        for row, values in ((1, "iou"), (2, "recall")):
            fig.add_trace(go.Scatter(x=curves.step, y=curves.class_series(values, rare), name=SHORT_LABELS[loss] + (f" γ={curves.gamma:g}" if curves.gamma is not None else ""), legendgroup=loss, showlegend=row == 1, mode="lines", line=dict(width=3, color=LOSS_COLOURS[loss])), row=row, col=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title="training step", row=2, col=1)
    fig = _layout(fig, f"The {name}s under all five losses", f"precomputed: the live run's model and settings,<br>{precomputed.max_steps} steps each", 600)
    fig.update_layout(margin=dict(t=110))
    return fig


# ---------------------------------------------------------------------------- text


def final_table(precomputed: Precomputed) -> pd.DataFrame:
    """The per-class IoU, the rare class's recall and the mIoU each precomputed run reached."""
    names, rare = precomputed.class_names, precomputed.rare_class
    rows = []
    for loss, curves in precomputed.runs.items():
        row = {"loss": SHORT_LABELS[loss] + (f" (γ = {curves.gamma:g})" if curves.gamma is not None else "")}
        row.update({f"{name} IoU": round(value, 2) for name, value in zip(names, curves.final_iou)})
        row[f"{names[rare]} recall"] = round(curves.final_recall[rare], 2)
        row["mIoU"] = round(curves.miou[-1], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def false_positives_per_hit(iou: float, recall: float) -> float:
    """Pixels wrongly given a class per pixel of it found: with IoU = TP / (TP + FP + FN) and
    recall = TP / (TP + FN), FP / TP = 1 / IoU - 1 / recall."""
    return 1.0 / iou - 1.0 / recall


def rare_class_verdict(precomputed: Precomputed, min_gain: float = 0.01) -> str:
    """What each loss did to the rare class in the precomputed runs, and which losses raised its
    IoU above plain cross-entropy's (by at least ``min_gain``), at what cost."""
    names, rare = precomputed.class_names, precomputed.rare_class
    rare_name = names[rare]
    runs = precomputed.runs
    baseline = runs["ce"]
    share = precomputed.loss_share
    dominant = max(range(len(names)), key=precomputed.pixel_share.__getitem__)
    reached = "; ".join(f"{SHORT_LABELS[loss]} {curves.final_iou[rare]:.2f}" for loss, curves in runs.items())
    lines = [
        f"### What each loss did to the {rare_name}s (precomputed, {precomputed.max_steps} steps)",
        f"{rare_name.capitalize()} IoU reached: {reached}.",
        "",
        f"- **Cross-entropy** weighs every pixel alike: the {rare_name}s hold {precomputed.pixel_share[rare]:.2%} of the pixels and so {share['ce'][rare]:.2%} of the loss. "
        f"Ignoring them costs almost nothing, and the model learns to: {rare_name} IoU {baseline.final_iou[rare]:.2f}, recall {baseline.final_recall[rare]:.2f}.",
        f"- **(N − N_c)/N weights** are close to 1 for every class but the dominant one ({names[dominant]}: {precomputed.class_weights['wce'][dominant]:.3f}, "
        f"the {rare_name}: {precomputed.class_weights['wce'][rare]:.3f}; a {precomputed.weight_spread['wce']:.1f}x spread): "
        f"they shrink the {names[dominant]}'s part, so the {rare_name}s' share of the loss only grows to {share['wce'][rare]:.2%}.",
        f"- **Median-frequency weights** give the {rare_name} {precomputed.class_weights['mfb'][rare]:.2f} (a {precomputed.weight_spread['mfb']:.1f}x spread): its share of the loss grows to {share['mfb'][rare]:.2%}.",
        f"- **Focal loss** does not know which class is rare: it scales every pixel by (1 − p_t)^γ, moving the loss to whichever pixels are still wrong. "
        f"While all pixels are equally wrong the {rare_name}s hold {share['focal'][rare]:.2%} of it, as with cross-entropy.",
        f"- **Weighted focal** adds the (N − N_c)/N weights ({share['wfocal'][rare]:.2%} of the loss at the start) to that.",
        "",
    ]
    raisers = [loss for loss, curves in runs.items() if loss != "ce" and curves.final_iou[rare] >= baseline.final_iou[rare] + min_gain]
    if not raisers:
        lines.append(f"**On this set no loss raises the {rare_name}'s IoU above cross-entropy's {baseline.final_iou[rare]:.2f}.**")
        return "\n".join(lines)
    which = " and ".join(LOSS_LABELS[loss] for loss in raisers)
    lines.append(f"**On this set {'only ' if len(raisers) == 1 else ''}{which} raise{'s' if len(raisers) == 1 else ''} the {rare_name}'s IoU above cross-entropy's {baseline.final_iou[rare]:.2f}.**")
    for loss in raisers:
        curves = runs[loss]
        iou, recall = curves.final_iou[rare], curves.final_recall[rare]
        others = [c for c in range(len(names)) if c != rare]
        worse = ", ".join(f"{names[c]} {baseline.final_iou[c]:.2f} → {curves.final_iou[c]:.2f}" for c in others if curves.final_iou[c] < baseline.final_iou[c])
        lines.append(
            f"{_sentence_start(LOSS_LABELS[loss])} finds {recall:.0%} of the {rare_name} pixels (recall {recall:.2f}), yet its IoU is only {iou:.2f}: "
            f"for every {rare_name} pixel it finds, it marks {false_positives_per_hit(iou, recall):.1f} pixels of other classes as {rare_name}. "
            f"Recall (a class's accuracy) counts only the pixels it misses; IoU counts the false alarms too. "
            + (f"The other classes pay for it: {worse} (mIoU {baseline.miou[-1]:.2f} → {curves.miou[-1]:.2f})." if worse else "")
        )
    return "\n".join(lines)


def lab_weights_table(weights: list[dict[str, Any]], rare_class: int) -> pd.DataFrame:
    """Per class of the lab's training masks: its share of the pixels, its weight and share of
    the loss under (N − N_c)/N and under median-frequency weights (from :func:`lab_class_weights`)."""
    by_loss = {info["loss"]: info for info in weights}
    ce, wce, mfb = by_loss["ce"], by_loss["wce"], by_loss["mfb"]
    return pd.DataFrame([
        {
            "class": name + (" (rare)" if index == rare_class else ""),
            "share of pixels": f"{ce['pixel_share'][index]:.2%}",
            "w (N − N_c)/N": round(wce["weights"][index], 3),
            "loss share, (N − N_c)/N": f"{wce['loss_share'][index]:.2%}",
            "w median-freq.": round(mfb["weights"][index], 3),
            "loss share, median-freq.": f"{mfb['loss_share'][index]:.2%}",
        }
        for index, name in enumerate(ce["class_names"])
    ])


def lab_weights_note(weights: list[dict[str, Any]]) -> str:
    by_loss = {info["loss"]: info for info in weights}
    return (
        f"Spread (largest / smallest weight): (N − N_c)/N {by_loss['wce']['spread']:.1f}x, median-frequency {by_loss['mfb']['spread']:.1f}x. "
        "The focal losses use no weights (focal) or the (N − N_c)/N ones (weighted focal)."
    )


def camvid_markdown(schemes: dict[str, Any], card_losses: list[str]) -> str:
    """Both schemes on CamVid's training masks (:func:`segmodels.teaching.class_weight_schemes`)."""
    names, share = schemes["class_names"], schemes["pixel_share"]
    inverse, median = schemes["inverse_share"], schemes["median_frequency"]
    low, high = min(range(len(names)), key=inverse.__getitem__), max(range(len(names)), key=inverse.__getitem__)
    rows = ["| class | share of pixels | (N − N_c)/N | median-frequency |", "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {share[c]:.2%} | {inverse[c]:.3f} | {median[c]:.2f} |" for c, name in enumerate(names)]
    trained = f" The shipped CamVid models were trained with {' and '.join(LOSS_LABELS.get(l, l) for l in card_losses)}." if card_losses else ""
    return (
        "### The same weights on CamVid's training masks\n\n"
        f"With {len(names)} classes, (N − N_c)/N hardly rebalances: it runs from {inverse[low]:.3f} ({names[low]}, {share[low]:.0%} of the pixels) to {inverse[high]:.3f} ({names[high]}), "
        f"a {schemes['inverse_share_spread']:.2f}x spread. Median-frequency weights spread {schemes['median_frequency_spread']:.0f}x.{trained}\n\n"
        "Weighting the rare classes up raises their accuracy (recall): the model predicts them more often. Their IoU rises less or even falls, "
        "because those extra predictions include false positives that IoU counts and accuracy does not.\n\n" + "\n".join(rows)
    )


@functools.lru_cache(maxsize=2)
def _camvid_schemes(root: str) -> dict[str, Any]:
    return camvid_class_weight_schemes(root)


def camvid_section(camvid_dir: Path | None, weights_dir: Path) -> str:
    """CamVid's weights when a CamVid folder is configured, else a line saying how to get them."""
    if camvid_dir is None:
        return f"*CamVid's weights appear here when the server is started with a CamVid folder (it has {CAMVID.num_classes} classes).*"
    try:
        schemes = _camvid_schemes(str(camvid_dir))
    except (OSError, ValueError) as error:
        return f"*CamVid's weights are unavailable: {error}*"
    card_losses = set()
    for name in zoo.list_models(weights_dir):
        if name.startswith("camvid/"):
            try:
                card_losses.add(zoo.load_card(name, weights_dir)["training"]["loss"])
            except (zoo.WeightsError, KeyError, TypeError, ValueError):
                continue
    return camvid_markdown(schemes, sorted(card_losses))


# ---------------------------------------------------------------------------- presenters


def present(view: LabView, precomputed: Precomputed, max_steps: int) -> tuple:
    """(status, loss plot, IoU plot, stored previous run) for Gradio; unchanged parts are skipped."""
    if view.current is None:
        return view.status, gr.skip(), gr.skip(), gr.skip()
    return (
        view.status,
        loss_figure(view.current, view.previous, max_steps),
        iou_figure(view.current, view.previous, precomputed.class_names, precomputed.rare_class, max_steps),
        view.remember if view.remember is not None else gr.skip(),
    )


def build(shared) -> gr.Tab:
    """The Loss lab tab: formulas and weights, the live run, the precomputed runs and the verdict."""
    app = shared.app
    precomputed = load_precomputed()
    lab = LossLab(precomputed, app.scheduler, mark_busy=app.engine.benchmarker.busy)
    max_steps = lab.settings.max_steps or precomputed.max_steps
    choices = [(LOSS_LABELS[loss], loss) for loss in LAB_LOSSES]

    with gr.Tab("Loss lab", id="losslab") as tab:
        gr.Markdown(
            f"Train a tiny U-Net for about {lab.settings.time_budget_s:.0f} s on a Shapes set where **{precomputed.class_names[precomputed.rare_class]}s are rare and small** "
            f"({precomputed.pixel_share[precomputed.rare_class]:.2%} of the pixels), and watch what each loss does to them.",
            latex_delimiters=LATEX,
        )
        with gr.Row(equal_height=True):
            loss_radio = gr.Radio(choices, value="ce", label="Loss", min_width=280)
            gamma_slider = gr.Slider(0.0, GAMMA_SLIDER_MAX, value=2.0, step=0.1, label="γ (focal and weighted focal)", min_width=200)
        train_button = gr.Button(f"Train for ~{lab.settings.time_budget_s:.0f} s", variant="primary")
        status = gr.Markdown(budget_line(RUNS_PER_WINDOW, lab.gate.runs_per_window, lab.gate.window_s))
        with gr.Row():
            loss_plot = gr.Plot(loss_figure(None, None, max_steps), show_label=False, min_width=320)
            iou_plot = gr.Plot(iou_figure(None, None, precomputed.class_names, precomputed.rare_class, max_steps), show_label=False, min_width=320)
        previous_run = gr.State(None, time_to_live=app.config.state_ttl_s)
        with gr.Row():
            gr.Plot(precomputed_figure(precomputed), show_label=False, min_width=320)
            with gr.Column(min_width=320):
                gr.DataFrame(final_table(precomputed), label=f"What each loss reached after {precomputed.max_steps} steps (precomputed)", interactive=False)
                gr.Markdown(rare_class_verdict(precomputed))
        with gr.Accordion("The formulas and the weights", open=True):
            gr.Markdown(FORMULAS, latex_delimiters=LATEX)
            gr.Markdown("### The weights on this lab's training set")
            weights_df = gr.DataFrame(label="Weights and each class's share of the loss (as at the start of training)", interactive=False)
            weights_md = gr.Markdown()
            camvid_md = gr.Markdown()

    async def train(loss, gamma, previous, request: gr.Request):
        address, session = client_of(request, app.config.trust_forwarded)
        try:
            async for view in lab.views(loss, gamma, previous, address, session or address):
                yield present(view, precomputed, max_steps)
        except Exception as error:  # noqa: BLE001 - the student sees a message, the log the details
            log.exception("loss lab run failed")
            raise gr.Error(f"The live run failed ({type(error).__name__}); the precomputed curves below still show every loss.") from None

    def weights() -> tuple[pd.DataFrame, str, str]:
        schemes = lab_class_weights(settings=lab.settings)
        return lab_weights_table(schemes, precomputed.rare_class), lab_weights_note(schemes), camvid_section(app.config.camvid_dir, app.config.weights_dir)

    train_button.click(train, [loss_radio, gamma_slider, previous_run], [status, loss_plot, iou_plot, previous_run], api_name="losslab_train", show_progress="hidden", **{**shared.heavy, "api_visibility": "private"})
    tab.select(weights, None, [weights_df, weights_md, camvid_md], api_name="losslab_weights", show_progress="hidden", **{**shared.light, "api_visibility": "private"})
    return tab


__all__ = [
    "Admission",
    "LabCurves",
    "LabView",
    "LiveRunGate",
    "LossLab",
    "Precomputed",
    "build",
    "camvid_section",
    "check_lab_request",
    "false_positives_per_hit",
    "final_table",
    "iou_figure",
    "lab_weights_note",
    "lab_weights_table",
    "load_precomputed",
    "loss_figure",
    "precomputed_figure",
    "present",
    "rare_class_verdict",
]
