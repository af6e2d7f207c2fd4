"""The Predictor's locks: loading one model never blocks another's forward pass, a model is
loaded once however many threads need it first, and the lanes, build and load locks cannot
deadlock, with one lane or two (the lock order is in :mod:`segmodels.runtime`). Every wait is on an Event, a
Barrier or a join with a timeout; nothing is timed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segmodels import zoo
from segmodels.runtime import Predictor, RuntimeSelector

JOIN_S = 60.0


class BlockedLoad:
    """Wraps ``zoo.read_model``: reading ``name`` signals :attr:`started` and waits for
    :attr:`release`; every read is counted per model."""

    def __init__(self, monkeypatch, name: str | None):
        self.name = name
        self.started, self.release = threading.Event(), threading.Event()
        self.reads: dict[str, int] = {}
        self._read = zoo.read_model
        monkeypatch.setattr(zoo, "read_model", self)

    def __call__(self, name, *args, **kwargs):
        self.reads[name] = self.reads.get(name, 0) + 1
        if name == self.name:
            self.started.set()
            assert self.release.wait(JOIN_S), "the test never released the load"
        return self._read(name, *args, **kwargs)


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    """``target(*args)`` in a started thread; the list receives its result or its exception."""
    outcome: list = []

    def run():
        try:
            outcome.append(target(*args))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def image_tensor():
    def make(predictor: Predictor, seed: int = 0):
        return predictor.to_tensor(np.random.default_rng(seed).integers(0, 255, (32, 40, 3), dtype=np.uint8))

    return make


def test_a_load_in_progress_does_not_block_a_prediction_of_a_loaded_model(own_zoo, monkeypatch, image_tensor):
    predictor = Predictor(own_zoo, device="cpu")
    x = image_tensor(predictor)
    predictor.model("shapes/unet")
    load = BlockedLoad(monkeypatch, "shapes/unet3p")
    loader, loaded = in_thread(predictor.model, "shapes/unet3p")
    try:
        assert load.started.wait(JOIN_S)
        runner, predicted = in_thread(predictor.predict, "shapes/unet", x)
        runner.join(JOIN_S)
        assert not runner.is_alive(), "predicting a loaded model waited for another model's load"
        assert predicted[0].labels.shape == (32, 40)
        flops, counted = in_thread(predictor.flops, "shapes/unet", (32, 40))
        flops.join(JOIN_S)
        assert not flops.is_alive() and counted[0] > 0
        assert loader.is_alive()  # still held by the test: nothing above waited for it
    finally:
        load.release.set()
    loader.join(JOIN_S)
    assert type(loaded[0]).__name__ == "UNet3Plus"


def test_a_request_for_a_model_being_loaded_waits_for_that_load_only(own_zoo, monkeypatch, image_tensor):
    predictor = Predictor(own_zoo, device="cpu")
    x = image_tensor(predictor)
    load = BlockedLoad(monkeypatch, "shapes/unetpp")
    loader, _ = in_thread(predictor.model, "shapes/unetpp")
    try:
        assert load.started.wait(JOIN_S)
        other, predicted = in_thread(predictor.predict, "shapes/deeplabv3p", x)  # not loaded yet: this thread loads it
        other.join(JOIN_S)
        assert not other.is_alive() and predicted[0].labels.shape == (32, 40)
        waiting, waited = in_thread(predictor.predict, "shapes/unetpp", x, 2)
        assert not waited and waiting.is_alive()
    finally:
        load.release.set()
    waiting.join(JOIN_S)
    loader.join(JOIN_S)
    assert waited[0].labels.shape == (32, 40) and load.reads["shapes/unetpp"] == 1


def test_concurrent_first_uses_load_a_model_once(own_zoo, monkeypatch, image_tensor):
    """Every thread has asked for the model (read its file stamp) before the first read
    returns, so each either waits for that load or finds it done: one read in all."""
    users = 4
    predictor = Predictor(own_zoo, device="cpu")
    x = image_tensor(predictor)
    arrived, arrival = [0], threading.Condition()
    stamp = zoo.file_stamp

    def counted_stamp(name, *args):
        with arrival:
            arrived[0] += 1
            arrival.notify_all()
        return stamp(name, *args)

    load = BlockedLoad(monkeypatch, None)
    read = load._read

    def read_after_every_arrival(name, *args, **kwargs):
        with arrival:
            assert arrival.wait_for(lambda: arrived[0] >= users, JOIN_S)
        return read(name, *args, **kwargs)

    load._read = read_after_every_arrival
    monkeypatch.setattr(zoo, "file_stamp", counted_stamp)
    start = threading.Barrier(users)
    threads = [in_thread(lambda: start.wait(JOIN_S) is not None and predictor.predict("shapes/unetpp", x, 1)) for _ in range(users)]
    for thread, _ in threads:
        thread.join(JOIN_S)
    assert all(not thread.is_alive() for thread, _ in threads)
    labels = [outcome[0].labels for _, outcome in threads]
    assert load.reads == {"shapes/unetpp": 1}
    assert all(np.array_equal(labels[0], other) for other in labels[1:])


@pytest.mark.parametrize("lanes", [1, 2])
def test_run_build_and_load_locks_under_contention_finish(own_zoo, image_tensor, lanes):
    """Predictions, loads, FLOP counts, benchmarks of every runtime (ONNX Runtime sessions
    built where installed), and a caller that holds the device alone while it loads (the order
    allows it), all at once, with one lane or two: every thread finishes."""
    predictor = Predictor(own_zoo, device="cpu", lanes=lanes)
    selector = RuntimeSelector(predictor)
    x = image_tensor(predictor)
    start = threading.Barrier(5)

    def predicting():
        start.wait(JOIN_S)
        return [predictor.predict(name, x).labels.shape for name in ("shapes/unet", "shapes/deeplabv3p", "shapes/unet", "shapes/unet3p")]

    def exclusive_load():
        start.wait(JOIN_S)
        with predictor.alone():
            return predictor.predict("shapes/unet3p", x).labels.shape

    def benchmarking():
        start.wait(JOIN_S)
        return sorted(selector.measure_together([("shapes/unet", None), ("shapes/unetpp", 2)], (32, 40), warmup=0, repeats=2))

    def counting():
        start.wait(JOIN_S)
        return [predictor.flops(name, (32, 40)) for name in ("shapes/unetpp", "shapes/deeplabv3p")]

    def loading():
        start.wait(JOIN_S)
        return [type(predictor.model(name)).__name__ for name in ("shapes/deeplabv3p", "shapes/unetpp", "shapes/unet")]

    threads = [in_thread(target) for target in (predicting, exclusive_load, benchmarking, counting, loading)]
    for thread, _ in threads:
        thread.join(JOIN_S)
    assert not any(thread.is_alive() for thread, _ in threads), "a lock was never released (deadlock)"
    outcomes = [outcome[0] for _, outcome in threads]
    assert not any(isinstance(outcome, BaseException) for outcome in outcomes), outcomes
    assert outcomes[0] == [(32, 40)] * 4 and outcomes[1] == (32, 40)
    assert outcomes[2] == [("shapes/unet", None), ("shapes/unetpp", 2)] and all(flops > 0 for flops in outcomes[3])


def test_warm_up_loads_the_first_sets_models_first_and_a_run_does_not_wait_for_the_rest(tiny_config, tmp_path, monkeypatch):
    """The warm-up loads the sets of ``sizes`` first; while it is stuck loading a model of the
    other set, a Run of the first set's models completes."""
    import shutil

    from demo.catalogue import Catalogue
    from demo.engine import Engine

    weights = tmp_path / "weights"
    shutil.copytree(tiny_config().weights_dir, weights)
    shutil.copytree(weights / "shapes", weights / "second")
    config = tiny_config(weights_dir=weights)
    engine = Engine(config, Catalogue(config.weights_dir))
    monkeypatch.setattr(engine.benchmarker, "start", lambda: None)
    load = BlockedLoad(monkeypatch, "shapes/unet")
    order: list[str] = []
    load._read = lambda name, *args, _read=load._read, **kwargs: order.append(name) or _read(name, *args, **kwargs)
    warming = engine.warm_up({"second": (32, 40)})
    try:
        assert load.started.wait(JOIN_S)
        assert order[:4] == [f"second/{arch}" for arch in engine.catalogue()["second"]]
        image = np.random.default_rng(3).integers(0, 255, (32, 40, 3), dtype=np.uint8)
        runner, runs = in_thread(lambda: list(engine.run_models("second", ["unet", "unetpp"], image, depth=2)))
        runner.join(JOIN_S)
        assert not runner.is_alive(), "a Run waited for the warm-up's load of another set's model"
        assert all(run.ok for run in runs[0])
    finally:
        load.release.set()
        warming.join(JOIN_S)
    assert not warming.is_alive() and len(order) == 8


def test_the_server_waits_for_the_first_sets_first_passes_and_flop_counts(tiny_config):
    """``first_set_warm`` (what build_demo waits for) is set only once every model of the
    first set has made a pass at the usual size and has its FLOPs counted there."""
    from demo.catalogue import Catalogue
    from demo.engine import Engine

    config = tiny_config()
    engine = Engine(config, Catalogue(config.weights_dir))
    engine.benchmarker.start = lambda: None
    passes = []
    predict = engine.selector.predict
    engine.selector.predict = lambda name, x, depth=None: passes.append((name, tuple(x.shape[-2:]), depth)) or predict(name, x, depth)
    warming = engine.warm_up({"shapes": (32, 40)})
    assert engine.first_set_warm.wait(JOIN_S)
    archs = engine.catalogue()["shapes"]
    assert sorted(name for name, _, _ in passes) == sorted(f"shapes/{arch}" for arch in archs) and all(size == (32, 40) for _, size, _ in passes)
    unetpp_depth = max(engine.pruning_depths("shapes", "unetpp"))
    assert ("shapes/unetpp", (32, 40), unetpp_depth) in passes
    assert all(any(key[0] == f"shapes/{arch}" and key[3] == (32, 40) for key in engine.predictor._flops) for arch in archs)
    warming.join(JOIN_S)
