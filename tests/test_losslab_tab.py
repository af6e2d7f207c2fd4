"""Tests of the Loss lab tab (demo/tabs/losslab.py): curve data, the server-wide gate and the
per-session budget, refusals that answer at once with the precomputed curves, short live runs
that share the FairScheduler chunk by chunk, the texts rendered from the numbers, and the tab
built inside a small Blocks with stand-ins for the shared components."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from demo import losslab_charts, losslab_runs
from demo.config import DemoConfig
from demo.scheduler import FairScheduler
from demo.tabs.losslab import (
    LiveRunGate,
    LossLab,
    build,
    camvid_section,
    check_lab_request,
    false_positives_per_hit,
    final_table,
    iou_figure,
    lab_weights_note,
    lab_weights_table,
    load_precomputed,
    loss_figure,
    precomputed_figure,
    present,
    rare_class_verdict,
)
from segmodels.data.info import SHAPES
from segmodels.teach.losslab import LAB_LOSSES, MAX_GAMMA, RARE_CLASS, LabSettings, lab_class_weights
from segmodels.teach.numbers import class_weight_schemes

# A live run of a few seconds on tiny data: rendering 80 images takes milliseconds.
QUICK = LabSettings(train_images=64, eval_images=16, eval_every=5, max_steps=None, time_budget_s=2.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_busy_server_answers_at_once_with_the_precomputed_curves(precomputed) -> None:
    lab = LossLab(precomputed, FairScheduler(), settings=QUICK)
    holder = lab.gate.try_start("another tab")
    start = time.perf_counter()
    [view] = collect(lab, "focal", 3.0)
    assert time.perf_counter() - start < 0.5
    assert view.current is precomputed.runs["focal"] and view.remember is None
    assert "Another student's live run" in view.status and "γ = 2, not 3" in view.status
    status, loss_plot, iou_plot, remembered = present(view, precomputed, 600)
    assert [trace.name for trace in loss_plot.data] == ["precomputed: focal γ=2"]
    assert list(iou_plot.data[RARE_CLASS].y) == list(precomputed.runs["focal"].class_series("iou", RARE_CLASS))
    assert isinstance(remembered, type(gr.skip()))
    lab.gate.finish(holder.token)


def test_spent_budget_answers_with_the_precomputed_curves(precomputed) -> None:
    lab = LossLab(precomputed, FairScheduler(), gate=LiveRunGate(runs_per_window=1), settings=QUICK)
    lab.gate.finish(lab.gate.try_start("tab-1").token)
    [view] = collect(lab, "mfb", 2.0)
    assert view.current is precomputed.runs["mfb"]
    assert "used your 1 live runs of the last 10 minutes" in view.status and "10 min 0 s" in view.status


# ---------------------------------------------------------------------------- live runs


def test_live_run_streams_and_ends_within_its_budget(precomputed) -> None:
    busy = BusyCounter()
    previous = precomputed.runs["ce"]
    lab = LossLab(precomputed, FairScheduler(), settings=QUICK, mark_busy=busy)
    start = time.perf_counter()
    views = collect(lab, "wfocal", 1.5, previous=previous)
    elapsed = time.perf_counter() - start
    print(f"live run of {QUICK.time_budget_s} s budget: {elapsed:.2f} s wall, {views[-1].current.step[-1]} steps")
    assert elapsed < QUICK.time_budget_s + 2.0
    steps = [view.current.step[-1] for view in views]
    assert len(views) >= 3 and steps == sorted(steps) and steps[0] == 0
    assert all("Training live" in view.status and view.remember is None for view in views[:-1])
    last = views[-1]
    assert last.remember is last.current and last.current.source == "live" and last.current.stop_reason == "time budget"
    assert last.current.gamma == 1.5 and last.previous is previous
    assert "Finished weighted focal" in last.status and "2 of 3 live runs left" in last.status
    window = min(5, len(last.current.step) - 1)  # a busy machine may allow fewer evaluations
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
    lab = LossLab(precomputed, FairScheduler(), settings=replace(QUICK, max_steps=10, time_budget_s=30.0))
    last = collect(lab, "ce", 2.0)[-1]
    assert last.current.step[-1] == 10 and "all 10 steps done" in last.status


def test_live_run_gives_the_device_back_between_chunks(precomputed) -> None:
    """A model job that asks for the device during a live run gets it after one chunk, long
    before the run ends."""
    scheduler = FairScheduler()
    lab = LossLab(precomputed, scheduler, settings=QUICK)

    async def scenario():
        views = []

        async def live():
            async for view in lab.views("mfb", 2.0, None, "10.0.0.1", "tab-1"):
                views.append(view)

        lab_task = asyncio.create_task(live())
        while not views:
            await asyncio.sleep(0.01)
        asked = time.perf_counter()
        async with scheduler.turn("10.0.0.2", "tab-2"):
            waited = time.perf_counter() - asked
            running = not lab_task.done()
        await lab_task
        return waited, running, views

    waited, running, views = asyncio.run(scenario())
    assert running and waited < 1.5, f"the model job waited {waited:.2f} s"
    assert views[-1].current.stop_reason == "time budget"


def test_live_run_stops_when_no_turn_comes_within_the_budget(precomputed) -> None:
    scheduler = FairScheduler()
    lab = LossLab(precomputed, scheduler, settings=replace(QUICK, time_budget_s=0.5))

    async def scenario():
        async with scheduler.turn("10.0.0.2", "tab-2"):
            start = time.perf_counter()
            views = [view async for view in lab.views("ce", 2.0, None, "10.0.0.1", "tab-1")]
            return time.perf_counter() - start, views

    elapsed, views = asyncio.run(scenario())
    assert elapsed < 1.5
    [view] = views
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


# ---------------------------------------------------------------------------- texts and figures


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
