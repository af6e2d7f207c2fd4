"""PassLanes: up to ``count`` passes at once, work alone waits for them and is not starved, a
thread in a lane cannot deadlock itself, and the Predictor runs its passes in lanes on
``threads // lanes`` threads. Every wait is on an Event or a join with a timeout; nothing is
timed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from segmodels.runtime import PassLanes, Predictor, default_lanes

JOIN_S = 30.0


def started(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


class Holder:
    """A thread that enters ``context`` (signalling :attr:`inside`) and leaves it when
    :attr:`leave` is set."""

    def __init__(self, context):
        self.inside, self.leave = threading.Event(), threading.Event()

        def hold():
            with context():
                self.inside.set()
                assert self.leave.wait(JOIN_S)

        self.thread = started(hold)

    def finish(self) -> None:
        self.leave.set()
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive()


def test_up_to_count_passes_run_at_once_and_the_next_waits():
    lanes = PassLanes(2)
    first, second = Holder(lanes.lane), Holder(lanes.lane)
    assert first.inside.wait(JOIN_S) and second.inside.wait(JOIN_S)
    assert lanes.in_lanes == 2
    third = Holder(lanes.lane)
    assert not third.inside.wait(0.2), "a third pass entered two lanes"
    first.finish()
    assert third.inside.wait(JOIN_S)
    second.finish()
    third.finish()
    assert lanes.in_lanes == 0


def test_alone_waits_for_the_lanes_to_empty_and_keeps_new_passes_out():
    lanes = PassLanes(2)
    running = Holder(lanes.lane)
    assert running.inside.wait(JOIN_S)
    alone = Holder(lanes.alone)
    assert not alone.inside.wait(0.2), "the device was held alone beside a running pass"
    later = Holder(lanes.lane)
    assert not later.inside.wait(0.2), "a pass overtook the thread waiting to be alone"
    running.finish()
    assert alone.inside.wait(JOIN_S)
    assert not later.inside.wait(0.2), "a pass ran beside the thread that holds the device alone"
    alone.finish()
    assert later.inside.wait(JOIN_S)
    later.finish()


def test_the_holder_alone_may_take_it_again_and_run_passes():
    lanes = PassLanes(2)
    with lanes.alone(), lanes.alone(), lanes.lane():
        assert lanes.in_lanes == 0
    other = Holder(lanes.lane)
    assert other.inside.wait(JOIN_S), "the device stayed held after the reentrant holder left"
    other.finish()


def test_a_thread_in_a_lane_cannot_wait_for_itself():
    lanes = PassLanes(1)
    with lanes.lane(), lanes.lane():  # a nested pass runs in the lane it holds
        with pytest.raises(RuntimeError, match="wait for itself"):
            with lanes.alone():
                pass
    assert lanes.in_lanes == 0


def test_lanes_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        PassLanes(0)
    assert default_lanes(1) == 1 and default_lanes(2) == 2 and default_lanes(16) == 2


def test_predictor_splits_its_threads_among_its_lanes(own_zoo):
    previous = torch.get_num_threads()
    try:
        predictor = Predictor(own_zoo, device="cpu", threads=4, lanes=2)
        assert predictor.lanes.count == 2 and predictor.pass_threads == 2
        seen = []

        def pass_in_a_worker():
            torch.set_num_threads(3)  # a worker thread left with another count
            predictor.predict("shapes/unet", predictor.to_tensor(np.zeros((32, 40, 3), dtype=np.uint8)))
            seen.append(torch.get_num_threads())

        def alone_in_a_worker():
            with predictor.alone():
                seen.append(torch.get_num_threads())
            with predictor.alone(as_a_pass=True):
                seen.append(torch.get_num_threads())

        for target in (pass_in_a_worker, alone_in_a_worker):
            worker = started(target)
            worker.join(JOIN_S)
        assert seen == [2, 4, 2]  # a pass on its lane's share; work alone on every thread, a timed pass as a pass runs
        assert Predictor(own_zoo, device="cpu", threads=1, lanes=2).pass_threads == 1
    finally:
        torch.set_num_threads(previous)
