"""Tests of the Loss lab tab (demo/tabs/losslab.py): curve data, the server-wide gate and the
per-session budget, refusals answered with the precomputed curves without training, short live
runs that share the FairScheduler chunk by chunk and stop at their time budget on a fake clock,
and the tab built inside a small Blocks with stand-ins for the shared components. Its texts and
figures are tested in tests/demo/test_losslab_texts.py."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from demo import losslab_charts
from demo.config import DemoConfig
from demo.scheduler import FairScheduler
from demo.tabs import losslab as losslab_tab
from demo.tabs.losslab import (
    LiveRunGate,
    LossLab,
    build,
    check_lab_request,
    load_precomputed,
    present,
)
from segmodels.data.info import SHAPES
from segmodels.teach.losslab import LAB_LOSSES, MAX_GAMMA, RARE_CLASS, LabSettings, lab_class_weights

# Tiny data (rendering 80 images takes milliseconds); the tests run its 2.5 s budget on fake clocks.
QUICK = LabSettings(train_images=64, eval_images=16, eval_every=5, max_steps=None, time_budget_s=2.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JumpingClock(FakeClock):
    """Every reading is ``jump_s`` later than the one before."""

    def __init__(self, jump_s: float) -> None:
        super().__init__()
        self.jump_s = jump_s

    def __call__(self) -> float:
        reading, self.now = self.now, self.now + self.jump_s
        return reading


class ChunkClockScheduler(FairScheduler):
    """A FairScheduler on whose ``clock`` every turn takes ``turn_s`` seconds: a live run's chunk
    of ``eval_every`` steps (one turn) lasts that long, however fast this machine is."""

    def __init__(self, clock: FakeClock, turn_s: float = 1.0) -> None:
        super().__init__()
        self.clock, self.turn_s = clock, turn_s

    @contextlib.asynccontextmanager
    async def turn(self, address, session, still_wanted=None):
        async with super().turn(address, session, still_wanted):
            self.clock.now += self.turn_s
            yield


def never_trains(*args, **kwargs):
    raise AssertionError("a live run was started")


class BusyCounter:
    """Stands in for the engine's ``benchmarker.busy``: counts the holds open now and ever."""

    def __init__(self) -> None:
        self.open = 0
        self.entered = 0

    @contextlib.contextmanager
    def __call__(self):
        self.open += 1
        self.entered += 1
        try:
            yield
        finally:
            self.open -= 1


def collect(lab: LossLab, loss, gamma, previous=None, address="10.0.0.1", client="tab-1") -> list:
    async def run():
        return [view async for view in lab.views(loss, gamma, previous, address, client)]

    return asyncio.run(run())


@pytest.fixture(scope="module")
def precomputed():
    return load_precomputed()


# ---------------------------------------------------------------------------- curve data


def test_precomputed_curves_match_the_code(precomputed) -> None:
    """The shipped curves hold every loss, were made with the live run's settings (only the time
    budget differs) and weights equal to what lab_class_weights computes now."""
    assert tuple(precomputed.runs) == LAB_LOSSES
    assert precomputed.class_names == SHAPES.class_names and precomputed.rare_class == RARE_CLASS
    assert precomputed.max_steps == LabSettings().max_steps
    for info in lab_class_weights():
        assert np.allclose(precomputed.class_weights[info["loss"]], info["weights"], atol=1e-3)
        assert np.allclose(precomputed.loss_share[info["loss"]], info["loss_share"], atol=1e-3)
    for curves in precomputed.runs.values():
        assert curves.step[0] == 0 and curves.step[-1] == precomputed.max_steps
        assert len(curves.per_class_iou) == len(curves.step) == len(curves.train_loss)
        assert math.isnan(curves.train_loss[0]) and all(v > 0 for v in curves.train_loss[1:])


def test_precomputed_file_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match="precompute_losslab"):
        load_precomputed(tmp_path / "missing.json")
    broken = tmp_path / "curves.json"
    broken.write_text('{"runs": [], "class_names": [], "rare_class": 2, "settings": {}}')
    with pytest.raises(ValueError, match="one run of each"):
        load_precomputed(broken)


@pytest.mark.parametrize("loss, gamma", [("focal", 0), ("wfocal", MAX_GAMMA), ("ce", 2)])
def test_valid_requests(loss, gamma) -> None:
    assert check_lab_request(loss, gamma) == (loss, float(gamma))


@pytest.mark.parametrize(
    "loss, gamma, message",
    [("dice", 2.0, "choose one of ce, wce, mfb, focal, wfocal"), (None, 2.0, "Unknown loss"), ("focal", math.nan, "from 0 to 10"),
     ("focal", -0.5, "from 0 to 10"), ("focal", 1e9, "from 0 to 10"), ("focal", math.inf, "from 0 to 10"), ("focal", "2", "from 0 to 10"), ("focal", True, "from 0 to 10")],
)
def test_bad_requests_say_what_is_allowed(loss, gamma, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_lab_request(loss, gamma)


def test_bad_input_shows_a_message_and_keeps_the_plots(precomputed) -> None:
    lab = LossLab(precomputed, FairScheduler(), settings=QUICK)
    for loss, gamma in (("dice", 2.0), ("focal", math.nan), ("focal", -1.0), ("focal", 1e6)):
        [view] = collect(lab, loss, gamma)
        assert view.status.startswith("**Nothing was trained:**") and view.current is None
        status, *rest = present(view, precomputed, 600)
        assert status == view.status and all(isinstance(update, type(gr.skip())) for update in rest)
    assert lab.gate.runs_left("tab-1") == lab.gate.runs_per_window


# ---------------------------------------------------------------------------- gate and budget


def test_gate_one_live_run_on_the_server() -> None:
    clock = FakeClock()
    gate = LiveRunGate(runs_per_window=3, window_s=600, run_s=40, max_hold_s=100, clock=clock)
    first = gate.try_start("a")
    assert first.granted and first.runs_left == 2
    clock.now += 10
    second = gate.try_start("b")
    assert not second.granted and second.reason == "busy" and second.retry_in_s == pytest.approx(30)
    assert gate.runs_left("b") == 3, "a refused start costs no budget"
    gate.finish(first.token)
    assert gate.try_start("b").granted


def test_gate_per_session_budget_slides_with_the_window() -> None:
    clock = FakeClock()
    gate = LiveRunGate(runs_per_window=3, window_s=600, clock=clock)
    for _ in range(3):
        admission = gate.try_start("a")
        assert admission.granted
        gate.finish(admission.token)
        clock.now += 100
    refused = gate.try_start("a")
    assert not refused.granted and refused.reason == "budget" and refused.runs_left == 0
    assert refused.retry_in_s == pytest.approx(300)
    assert gate.try_start("b").granted, "another session has its own budget"
    clock.now += 300
    assert gate.runs_left("a") == 1


def test_gate_abandoned_hold_is_taken_over() -> None:
    clock = FakeClock()
    gate = LiveRunGate(max_hold_s=100, clock=clock)
    stale = gate.try_start("a")
    clock.now += 99
    assert not gate.try_start("b").granted
    clock.now += 2
    fresh = gate.try_start("b")
    assert fresh.granted
    gate.finish(stale.token)
    assert gate.try_start("c").reason == "busy", "the stale run's finish must not free the new run"


@pytest.mark.parametrize("options", [dict(runs_per_window=0), dict(window_s=0), dict(run_s=200, max_hold_s=100)])
def test_gate_rejects_bad_limits(options) -> None:
    with pytest.raises(ValueError, match="runs_per_window"):
        LiveRunGate(**options)


def test_busy_server_answers_at_once_with_the_precomputed_curves(precomputed, monkeypatch) -> None:
    """Answered from the precomputed curves without training, asking for a turn or marking the
    benchmarker busy."""
    monkeypatch.setattr(losslab_tab, "run_loss_lab", never_trains)
    busy, scheduler = BusyCounter(), FairScheduler()
    lab = LossLab(precomputed, scheduler, settings=QUICK, mark_busy=busy)
    holder = lab.gate.try_start("another tab")
    [view] = collect(lab, "focal", 3.0)
    assert busy.entered == 0 and scheduler.waiting() == 0 and not scheduler.busy
    assert view.current is precomputed.runs["focal"] and view.remember is None
    assert "Another student's live run" in view.status and "γ = 2, not 3" in view.status
    status, loss_plot, iou_plot, remembered = present(view, precomputed, 600)
    assert [trace.name for trace in loss_plot.data] == ["precomputed: focal γ=2"]
    assert list(iou_plot.data[RARE_CLASS].y) == list(precomputed.runs["focal"].class_series("iou", RARE_CLASS))
    assert isinstance(remembered, type(gr.skip()))
    lab.gate.finish(holder.token)


def test_spent_budget_answers_with_the_precomputed_curves(precomputed, monkeypatch) -> None:
    monkeypatch.setattr(losslab_tab, "run_loss_lab", never_trains)
    lab = LossLab(precomputed, FairScheduler(), gate=LiveRunGate(runs_per_window=1), settings=QUICK)
    lab.gate.finish(lab.gate.try_start("tab-1").token)
    [view] = collect(lab, "mfb", 2.0)
    assert view.current is precomputed.runs["mfb"]
    assert "used your 1 live runs of the last 10 minutes" in view.status and "10 min 0 s" in view.status


# ---------------------------------------------------------------------------- live runs


def test_live_run_streams_and_stops_at_its_time_budget(precomputed) -> None:
    """Every turn (a chunk of 5 steps) takes 1 s of the lab's clock, the first one the set-up and
    step 0: the 2.5 s budget, counted from step 0, stops the run at the first step that finds 3 s
    gone, step 11."""
    busy, clock = BusyCounter(), FakeClock()
    previous = precomputed.runs["ce"]
    lab = LossLab(precomputed, ChunkClockScheduler(clock), settings=QUICK, mark_busy=busy, clock=clock)
    views = collect(lab, "wfocal", 1.5, previous=previous)
    assert [view.current.step[-1] for view in views] == [0, 5, 10, 11]
    assert list(views[-1].current.seconds) == [0.0, 1.0, 2.0, 3.0]
    assert all("Training live" in view.status and view.remember is None for view in views[:-1])
    last = views[-1]
    assert last.remember is last.current and last.current.source == "live" and last.current.stop_reason == "time budget"
    assert last.current.gamma == 1.5 and last.previous is previous
    assert "**Finished weighted focal, (N - N_c)/N, γ = 1.5** after 11 steps in 3 s" in last.status and "2 of 3 live runs left" in last.status
    window = 3
    averaged = np.nanmean(np.array(last.current.per_class_iou[-window:], dtype=float), axis=0)
    reference = np.nanmean(np.array(precomputed.runs["wfocal"].per_class_iou[-window:], dtype=float), axis=0)
    named = ", ".join(f"{name} {iou:.2f}" for name, iou in zip(SHAPES.class_names, averaged))
    assert f"Per-class IoU averaged over the last {window} evaluation{'s' if window > 1 else ''}: {named};" in last.status
    assert f"triangle IoU {reference[RARE_CLASS]:.2f}" in last.status
    assert f"the {QUICK.time_budget_s:g} s budget ran out first" in last.status
    assert busy.entered == 1 and busy.open == 0
    assert lab.gate.try_start("another tab").granted, "the gate is free after the run"
    status, loss_plot, iou_plot, remembered = present(last, precomputed, QUICK.max_steps or 600)
    assert remembered is last.current
    assert [trace.name for trace in loss_plot.data] == ["this run: weighted focal γ=1.5", "previous run: CE"]
    assert len(iou_plot.data) == 2 * len(SHAPES.class_names)


def test_live_run_reaching_max_steps_says_so(precomputed) -> None:
    lab = LossLab(precomputed, FairScheduler(), settings=replace(QUICK, max_steps=10, time_budget_s=30.0), clock=FakeClock())
    last = collect(lab, "ce", 2.0)[-1]
    assert last.current.step[-1] == 10 and "all 10 steps done" in last.status


def test_live_run_gives_the_device_back_between_chunks(precomputed) -> None:
    """A model job that asks for the device during a live run gets it after one chunk, long
    before the run ends: at most one more of the run's records comes out while it waits."""
    clock = FakeClock()
    scheduler = ChunkClockScheduler(clock)
    lab = LossLab(precomputed, scheduler, settings=replace(QUICK, max_steps=40), clock=clock)  # 40 steps end a run that never gives a turn back

    async def scenario():
        views = []

        async def live():
            async for view in lab.views("mfb", 2.0, None, "10.0.0.1", "tab-1"):
                views.append(view)

        lab_task = asyncio.create_task(live())
        while not views:
            await asyncio.sleep(0.01)
        records_when_asked = len(views)
        async with scheduler.turn("10.0.0.2", "tab-2"):
            records_while_waiting = len(views) - records_when_asked
            running = not lab_task.done()
        await lab_task
        return records_while_waiting, running, views

    records_while_waiting, running, views = asyncio.run(scenario())
    assert running, "the model job got the device only after the live run ended"
    assert records_while_waiting <= 1, f"the model job waited for {records_while_waiting} of the run's records"
    assert views[-1].current.stop_reason == "time budget"


@pytest.mark.timeout(60)  # without its clock the lab would wait the real 600 s for a turn
def test_live_run_stops_when_no_turn_comes_within_the_budget(precomputed) -> None:
    """The lab's clock says the whole budget has gone by the time it asks for its first turn,
    which another job holds: the lab stops waiting and trains nothing."""
    scheduler = FairScheduler()
    lab = LossLab(precomputed, scheduler, settings=replace(QUICK, time_budget_s=600.0), clock=JumpingClock(600.0))

    async def scenario():
        async with scheduler.turn("10.0.0.2", "tab-2"):
            return [view async for view in lab.views("ce", 2.0, None, "10.0.0.1", "tab-1")]

    [view] = asyncio.run(scenario())
    assert "could not start" in view.status and "busy with model jobs" in view.status and view.current is None
    assert scheduler.waiting() == 0 and not scheduler.busy
    assert lab.gate.try_start("another tab").granted


def test_refused_turn_ends_the_run_with_the_schedulers_message(precomputed) -> None:
    scheduler = FairScheduler(per_address=1, total=1)
    lab = LossLab(precomputed, scheduler, settings=QUICK)

    async def scenario():
        async with scheduler.turn("10.0.0.3", None):
            waiting = asyncio.create_task(scheduler.turn("10.0.0.3", None).__aenter__())
            await asyncio.sleep(0)
            views = [view async for view in lab.views("ce", 2.0, None, "10.0.0.1", "tab-1")]
            waiting.cancel()
            return views

    [view] = asyncio.run(scenario())
    assert "could not start" in view.status and "The server is busy" in view.status


# ---------------------------------------------------------------------------- the tab in Blocks


def stand_in_shared(config: DemoConfig) -> SimpleNamespace:
    """What the tab reads of demo.context.Shared."""
    app = SimpleNamespace(config=config, scheduler=FairScheduler(), engine=SimpleNamespace(benchmarker=SimpleNamespace(busy=contextlib.nullcontext)))
    return SimpleNamespace(
        app=app,
        light=dict(api_visibility="private", concurrency_limit=4, concurrency_id="light"),
        heavy=dict(concurrency_limit=None, concurrency_id="models"),
    )


def test_tab_builds_with_its_events(tmp_path) -> None:
    shared = stand_in_shared(DemoConfig(camvid_dir=None, warm_up=False))
    with gr.Blocks() as demo, gr.Tabs():
        tab = build(shared)
    assert isinstance(tab, gr.Tab) and tab.id == "losslab"
    events = {fn.api_name: fn for fn in demo.fns.values()}
    assert {"losslab_train", "losslab_weights"} <= set(events)
    train = events["losslab_train"]
    assert train.concurrency_id == "models" and train.concurrency_limit is None
    assert [type(block).__name__ for block in train.outputs] == ["Markdown", "Plot", "Plot", "State"]
    request = SimpleNamespace(client=SimpleNamespace(host="10.0.0.9"), headers={}, session_hash="tab-9")

    async def click(loss, gamma):
        return [outputs async for outputs in train.fn(loss, gamma, None, request)]

    [(status, *rest)] = asyncio.run(click("dice", 2.0))
    assert "Unknown loss 'dice'" in status and all(isinstance(update, type(gr.skip())) for update in rest)
    weights_df, weights_md, camvid_md = events["losslab_weights"].fn()
    assert "triangle (rare)" in list(weights_df["class"]) and "Spread" in weights_md and "CamVid folder" in camvid_md


def test_losses_tab_chart_shows_both_schemes_on_a_log_axis() -> None:
    """The Losses tab's chart: share and both weights of the classes present, their spreads."""
    from demo.tabs.losses import class_weight_table

    mask = np.array([[0] * 7 + [1] * 2 + [2]])
    table = class_weight_table(mask, SHAPES)
    figure = losslab_charts.class_weights_figure(table)
    assert figure.layout.yaxis.type == "log"
    assert [trace.name for trace in figure.data] == ["share of pixels N_c / N", "w_c, (N − N_c)/N", "w_c, median frequency"]
    assert list(figure.data[0].x) == ["background", "circle", "triangle"]
    assert list(figure.data[1].y) == pytest.approx([0.3, 0.8, 0.9], abs=1e-4) and list(figure.data[2].y) == pytest.approx([2 / 7, 1.0, 2.0], abs=1e-4)
    subtitle = figure.layout.title.subtitle.text
    assert "(N − N_c)/N 0.3 (background) to 0.9 (triangle), 3.0x" in subtitle and "median frequency 0.286 (background) to 2 (triangle), 7.0x" in subtitle
    assert "1 class absent from this mask" in subtitle
