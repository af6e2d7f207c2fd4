"""demo.scheduler.FairScheduler: round robin over addresses, one waiting job per tab, bounds;
and the API rate limit per address (demo.serving.ApiRateLimit)."""

from __future__ import annotations

import asyncio

import pytest

from demo.scheduler import FairScheduler, Refused, Superseded
from demo.serving import ApiRateLimit, address_of


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def job(scheduler: FairScheduler, address: str, session: str | None, log: list, name: str, hold: asyncio.Event | None = None):
    """A model job: holds the device until ``hold`` is set (or for one pass of the event loop)."""
    try:
        async with scheduler.turn(address, session):
            log.append(name)
            await (hold.wait() if hold is not None else asyncio.sleep(0))
        return "ran"
    except Superseded:
        return "superseded"
    except Refused as error:
        return f"refused: {error}"


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_greedy_address_delays_another_by_at_most_one_job():
    async def scenario():
        scheduler, log, running = FairScheduler(per_address=50, total=100), [], asyncio.Event()
        greedy = [asyncio.create_task(job(scheduler, "10.0.0.1", None, log, f"greedy{i}", hold=running if i == 0 else None)) for i in range(20)]
        await asyncio.sleep(0)
        normal = asyncio.create_task(job(scheduler, "10.0.0.2", "tab", log, "normal"))
        await asyncio.sleep(0)
        running.set()
        await asyncio.gather(*greedy, normal)
        return log

    log = run(scenario())
    assert log.index("normal") <= 2 and len(log) == 21  # one greedy job running, at most one more before


@pytest.mark.parametrize("lanes", [1, 2])
def test_as_many_jobs_at_a_time_as_lanes(lanes):
    async def scenario():
        scheduler, active, peak = FairScheduler(lanes=lanes), [0], [0]

        async def counted(address):
            async with scheduler.turn(address, None):
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                for _ in range(3):
                    await asyncio.sleep(0)  # the others get the event loop meanwhile
                active[0] -= 1

        await asyncio.gather(*(counted(f"a{i % 3}") for i in range(12)))
        return peak[0], scheduler.served, scheduler.running

    assert run(scenario()) == (lanes, 12, 0)


def test_jobs_ahead_count_the_running_ones_only_when_every_lane_is_taken():
    async def scenario():
        scheduler, log, hold = FairScheduler(lanes=2), [], asyncio.Event()
        counts = [scheduler.ahead()]
        first = asyncio.create_task(job(scheduler, "a", None, log, "first", hold=hold))
        await asyncio.sleep(0)
        counts.append(scheduler.ahead())  # one lane free: a new job starts at once
        second = asyncio.create_task(job(scheduler, "b", None, log, "second", hold=hold))
        await asyncio.sleep(0)
        counts.append(scheduler.ahead())
        third = asyncio.create_task(job(scheduler, "c", None, log, "third", hold=hold))
        await asyncio.sleep(0)
        counts.append(scheduler.ahead())
        hold.set()
        await asyncio.gather(first, second, third)
        return counts, log

    counts, log = run(scenario())
    assert counts == [0, 0, 2, 3] and log == ["first", "second", "third"]
    with pytest.raises(ValueError, match="lanes"):
        FairScheduler(lanes=0)


def test_a_new_click_supersedes_the_waiting_one_of_the_same_tab():
    async def scenario():
        scheduler, log, running = FairScheduler(), [], asyncio.Event()
        blocker = asyncio.create_task(job(scheduler, "x", "other", log, "blocker", hold=running))
        await asyncio.sleep(0)
        first = asyncio.create_task(job(scheduler, "y", "tab", log, "first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(job(scheduler, "y", "tab", log, "second"))
        await asyncio.sleep(0)
        running.set()
        return await asyncio.gather(blocker, first, second), log

    results, log = run(scenario())
    assert results == ["ran", "superseded", "ran"] and log == ["blocker", "second"]


def test_per_address_and_total_bounds_refuse_at_once():
    async def scenario():
        scheduler, log = FairScheduler(per_address=3, total=5), []
        tasks = [asyncio.create_task(job(scheduler, "greedy", None, log, f"g{i}")) for i in range(6)]
        tasks += [asyncio.create_task(job(scheduler, f"n{i}", None, log, f"n{i}")) for i in range(4)]
        return await asyncio.gather(*tasks)

    results = run(scenario())
    greedy, others = results[:6], results[6:]
    # One greedy job runs at once, three wait; the other two are refused with the reason.
    assert greedy.count("ran") == 4 and all("from your network address" in r for r in greedy if r != "ran")
    assert others.count("ran") == 2 and all("server is busy" in r for r in others if r != "ran")


def test_a_closed_tab_and_a_stale_job_are_dropped():
    """A job that waited more than ``max_wait_s`` by the scheduler's clock is dropped when the
    device is next free; one that came later and waited less runs."""

    async def scenario():
        clock, log, running = FakeClock(), [], asyncio.Event()
        scheduler = FairScheduler(max_wait_s=60, clock=clock)
        blocker = asyncio.create_task(job(scheduler, "x", None, log, "blocker", hold=running))
        await asyncio.sleep(0)
        closed = asyncio.create_task(job(scheduler, "y", "closed-tab", log, "closed"))
        stale = asyncio.create_task(job(scheduler, "z", None, log, "stale"))
        await asyncio.sleep(0)
        assert scheduler.cancel_session("closed-tab") == 1
        clock.now += 45
        fresh = asyncio.create_task(job(scheduler, "w", None, log, "fresh"))
        await asyncio.sleep(0)
        clock.now += 30  # stale has waited 75 s, fresh 30 s
        running.set()
        return await asyncio.gather(blocker, closed, stale, fresh), log

    results, log = run(scenario())
    assert results[:2] == ["ran", "superseded"] and "waited more than 60 s" in results[2] and results[3] == "ran"
    assert log == ["blocker", "fresh"]


def test_a_cancelled_waiter_frees_its_place():
    async def scenario():
        scheduler, log, running = FairScheduler(), [], asyncio.Event()
        blocker = asyncio.create_task(job(scheduler, "x", None, log, "blocker", hold=running))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(job(scheduler, "y", None, log, "waiter"))
        await asyncio.sleep(0)
        waiter.cancel()
        after = asyncio.create_task(job(scheduler, "z", None, log, "after"))
        await asyncio.sleep(0)
        running.set()
        await asyncio.gather(blocker, after, return_exceptions=True)
        return scheduler.waiting(), scheduler.busy, log

    assert run(scenario()) == (0, False, ["blocker", "after"])


def test_bounds_must_make_sense():
    with pytest.raises(ValueError):
        FairScheduler(per_address=0)
    with pytest.raises(ValueError):
        FairScheduler(per_address=10, total=5)


def test_a_job_nobody_waits_for_is_dropped_when_its_turn_comes():
    async def scenario():
        scheduler, log, running = FairScheduler(), [], asyncio.Event()
        blocker = asyncio.create_task(job(scheduler, "x", None, log, "blocker", hold=running))
        await asyncio.sleep(0)

        async def api_job(name, wanted):
            try:
                async with scheduler.turn("y", name, still_wanted=lambda: wanted):
                    log.append(name)
                return "ran"
            except Superseded:
                return "dropped"

        jobs = [asyncio.create_task(api_job("unread", False)), asyncio.create_task(api_job("read", True))]
        await asyncio.sleep(0)
        running.set()
        return await asyncio.gather(blocker, *jobs), log

    results, log = run(scenario())
    assert results == ["ran", "dropped", "ran"] and log == ["blocker", "read"]


def test_api_rate_limit_allows_a_burst_per_address_then_refills():
    clock = FakeClock()
    limit = ApiRateLimit(app=None, burst=3, per_second=20.0, clock=clock)
    assert [limit.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("10.0.0.2")  # another address has its own burst
    clock.now += 0.04  # 20 a second: not yet one more
    assert not limit.allow("10.0.0.1")
    clock.now += 0.02
    assert limit.allow("10.0.0.1") and not limit.allow("10.0.0.1")
    with pytest.raises(ValueError, match="burst >= 1"):
        ApiRateLimit(app=None, burst=0)


def test_the_forwarded_address_counts_only_behind_a_trusted_proxy():
    assert address_of("10.0.0.9", "1.2.3.4, 5.6.7.8", trust_forwarded=True) == "5.6.7.8"  # the proxy's own entry, last
    assert address_of("10.0.0.9", "5.6.7.8", trust_forwarded=False) == "10.0.0.9"
    assert address_of(None, None, trust_forwarded=True) == "unknown"


def test_a_stream_its_consumer_dropped_gives_the_device_back():
    """Gradio can fail while it handles a streamed result (copying an image into its cache) and
    drop the stream without closing it; the job is closed and the device given back after the
    hand-off time, not whenever the garbage collector gets to it (the dropped stream stays
    referenced here, so only the hand-off can give the device back)."""
    from demo.serving import on_device

    scheduler = FairScheduler()
    closed = []

    def stream():
        try:
            yield "first mask"
            yield "second mask"
        finally:
            closed.append("closed")

    def other_job():
        return "ran"

    async def scenario():
        dropped = on_device(stream, scheduler, handoff_s=0.2)()
        assert await dropped.__anext__() == "first mask" and scheduler.busy
        # Nobody asks for the next item, nobody closes the stream; the bound is only there so
        # that a broken hand-off fails the test instead of hanging it.
        await asyncio.wait_for(released(scheduler), 60)
        other = await on_device(other_job, scheduler)()
        return other, dropped

    other, _ = run(scenario())
    assert closed == ["closed"] and other == "ran"


async def released(scheduler: FairScheduler) -> None:
    while scheduler.busy:
        await asyncio.sleep(0.01)


def test_a_stream_read_to_the_end_or_cancelled_holds_the_device_only_meanwhile():
    from demo.serving import on_device

    scheduler = FairScheduler()

    def stream(count: int):
        yield from range(count)

    async def scenario():
        items = [item async for item in on_device(stream, scheduler, handoff_s=0.2)(3)]
        after_full_read = scheduler.busy
        cancelled = on_device(stream, scheduler)(5)
        await cancelled.__anext__()
        await cancelled.aclose()
        return items, after_full_read, scheduler.busy

    items, after_full_read, busy = run(scenario())
    assert items == [0, 1, 2] and not after_full_read and not busy


@pytest.mark.parametrize("route", ["/gradio_api/call/compare/ev1", "/gradio_api/call/v2/compare/ev1"])
def test_a_call_result_being_read_is_wanted_on_both_routes(route):
    """A ``/call`` or ``/call/v2`` reader keeps its job wanted past the grace time; once it
    has gone, the job is no longer wanted; a job nobody has read yet is wanted for the grace time."""
    from demo.serving import ResultReaders

    clock, seen = FakeClock(), []

    async def reading(scope, receive, send):
        seen.append(readers.still_wanted("ev1", submitted))
        clock.now += 60
        seen.append(readers.still_wanted("ev1", submitted))

    readers = ResultReaders(reading, grace_s=10, clock=clock)
    submitted = readers.now()
    assert readers.still_wanted("ev1", submitted)
    run(readers({"type": "http", "method": "GET", "path": route}, None, None))
    assert seen == [True, True] and not readers.still_wanted("ev1", readers.now())
    unread = readers.now()
    clock.now += 9
    assert readers.still_wanted("ev2", unread)
    clock.now += 2
    assert not readers.still_wanted("ev2", unread)


def test_readers_count_each_key_and_remember_the_latest():
    from demo.serving import Readers

    clock = FakeClock()
    readers = Readers(remembered=2, clock=clock)
    with readers.reading("a"):
        with readers.reading("a"):
            pass
        assert readers.is_open("a") and readers.last_seen("a") is None  # one reader is still there
        clock.now += 5
    assert not readers.is_open("a") and readers.last_seen("a") == 1005.0
    readers.seen("b")
    readers.seen("c")
    assert readers.last_seen("a") is None and readers.last_seen("c") == 1005.0  # only the two latest are remembered
