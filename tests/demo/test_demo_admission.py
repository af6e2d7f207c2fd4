"""demo.admission.Admission: one policy for queue/join, /call and /call/v2, before Gradio's
queue: per-client limits, a few jobs per address in Gradio at once taken in turn from its
tabs, API jobs refused rather than held, long strings refused, listening tracked."""

from __future__ import annotations

import asyncio
import json
from itertools import count
from types import SimpleNamespace

from demo.admission import Admission, longest_string

LIGHT_FN, MODEL_FN = 0, 1


class FakeGradio:
    """What the middleware reads of Gradio: its queue's event ids and each event's group;
    joins are queued here and finished by the test."""

    def __init__(self):
        self.streams_end = asyncio.Event()
        self.queued: dict[str, dict] = {}
        self.fns = {LIGHT_FN: SimpleNamespace(concurrency_id="light"), MODEL_FN: SimpleNamespace(concurrency_id="models")}
        self.state = SimpleNamespace()
        self.ids = count()
        self.order: list[str] = []

    def get_blocks(self):
        return SimpleNamespace(_queue=SimpleNamespace(event_ids_to_events=self.queued), fns=self.fns)

    async def __call__(self, scope, receive, send):
        if scope["path"].endswith("/queue/data"):
            await self.streams_end.wait()
            return
        body = json.loads((await receive())["body"])
        event_id = f"ev{next(self.ids)}"
        self.queued[event_id] = body
        self.order.append(body.get("session_hash") or "api")
        answer = json.dumps({"event_id": event_id}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    def finish(self, session: str) -> None:
        event_id = next(e for e, body in self.queued.items() if (body.get("session_hash") or "api") == session)
        del self.queued[event_id]


async def post(admission: Admission, gradio: FakeGradio, path: str, payload: dict, address: str = "10.0.0.1") -> tuple[int, dict]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": json.dumps(payload).encode(), "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "client": (address, 4000), "app": gradio}
    await admission(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def join(session: str, fn: int = LIGHT_FN, data=("x",)) -> dict:
    return {"session_hash": session, "fn_index": fn, "data": list(data)}


def test_a_tab_has_a_few_jobs_at_once_and_others_are_not_held_up():
    async def scenario():
        gradio = FakeGradio()
        admission = Admission(gradio, per_client=3, light_jobs=10)
        first = [await post(admission, gradio, "/gradio_api/queue/join", join("greedy")) for _ in range(4)]
        other = await post(admission, gradio, "/gradio_api/queue/join", join("classmate"))
        gradio.finish("greedy")
        admission.purge()
        again = await post(admission, gradio, "/gradio_api/queue/join", join("greedy"))
        return first, other, again

    first, other, again = asyncio.run(scenario())
    assert [status for status, _ in first] == [200, 200, 200, 429]
    assert "this browser tab already has 3 requests in progress" in first[-1][1]["error"]
    assert other[0] == 200 and again[0] == 200  # a finished job frees its place


def test_an_address_has_a_few_jobs_in_gradio_taken_in_turn_from_its_tabs():
    """Behind one address (a NAT), a greedy tab with many light events and a classmate: only two
    are in Gradio at a time, and the classmate's job is next after one of the greedy tab's, not
    after all of them; another address is not held up at all."""

    async def scenario():
        gradio = FakeGradio()
        admission = Admission(gradio, per_client=6, light_jobs=2)
        greedy = [asyncio.create_task(post(admission, gradio, "/gradio_api/queue/join", join(f"greedy-{i % 2}"))) for i in range(8)]
        await asyncio.sleep(0.05)
        classmate = asyncio.create_task(post(admission, gradio, "/gradio_api/queue/join", join("classmate")))
        # No job finishes meanwhile: a held-up job would wait max_wait_s (120 s); the bound fails it first.
        elsewhere = await asyncio.wait_for(post(admission, gradio, "/gradio_api/queue/join", join("elsewhere"), address="10.0.0.2"), 30)
        await asyncio.sleep(0.05)
        in_gradio_at_once = len(gradio.queued) - 1
        while len(gradio.order) < 10:
            if gradio.queued:
                del gradio.queued[next(iter(gradio.queued))]  # the oldest job in Gradio is done
            await asyncio.sleep(0.12)
        await asyncio.gather(*greedy, classmate)
        return in_gradio_at_once, elsewhere, gradio.order

    in_gradio_at_once, elsewhere, order = asyncio.run(scenario())
    assert in_gradio_at_once == 2 and elsewhere[0] == 200
    local = [tab for tab in order if tab != "elsewhere"]
    assert local.index("classmate") <= 4, local  # two running, then the tabs in turn


def test_model_jobs_and_light_events_have_their_own_places():
    async def scenario():
        gradio = FakeGradio()
        admission = Admission(gradio, per_client=6, model_jobs=1, light_jobs=1)
        run = await post(admission, gradio, "/gradio_api/queue/join", join("a", MODEL_FN))
        # The model job never finishes: a preview held up behind it would wait max_wait_s (120 s); the bound fails it first.
        preview = await asyncio.wait_for(post(admission, gradio, "/gradio_api/queue/join", join("b", LIGHT_FN)), 30)
        return run, preview

    run, preview = asyncio.run(scenario())
    assert run[0] == preview[0] == 200


def test_api_jobs_are_refused_not_held_and_long_strings_are_refused_unechoed():
    async def scenario():
        gradio = FakeGradio()
        admission = Admission(gradio, per_api_client=10, model_jobs=3)
        calls = [await post(admission, gradio, route, {"data": ["shapes-1000"]}) for route in ["/gradio_api/call/compare", "/gradio_api/call/v2/compare"] * 2]
        long = await post(admission, gradio, "/gradio_api/queue/join", join("tab", data=["x" * 60_000]))
        nested = await post(admission, gradio, "/gradio_api/call/compare", {"data": [{"path": "y" * 5000}]})
        return calls, long, nested

    calls, long, nested = asyncio.run(scenario())
    assert [status for status, _ in calls] == [200, 200, 200, 429] and "your address already has" in calls[-1][1]["error"]
    assert long[0] == 413 and long[1]["error"] == "an input is 60,000 characters long; at most 2,000 are accepted"
    assert nested[0] == 413 and "yyy" not in json.dumps(nested[1])
    assert longest_string({"a": [1, ["z" * 11]]}, 10) == 11 and longest_string(["short"], 10) == 0


def test_a_tab_listens_while_its_stream_is_open_and_shortly_after():
    async def scenario():
        gradio, clock = FakeGradio(), FakeClock()
        admission = Admission(gradio, grace_s=10, clock=clock)
        scope = {"type": "http", "method": "GET", "path": "/gradio_api/queue/data", "query_string": b"session_hash=tab1", "headers": [], "app": gradio}
        stream = asyncio.create_task(admission(scope, None, None))
        await asyncio.sleep(0)
        clock.now += 60
        during = admission.listening("tab1"), admission.listening("never")
        gradio.streams_end.set()
        await stream
        clock.now += 9
        just_after = admission.listening("tab1")
        clock.now += 2
        return during, just_after, admission.listening("tab1"), gradio.state.admission is admission

    during, just_after, later, in_state = asyncio.run(scenario())
    assert during == (True, False) and just_after and not later and in_state


def test_a_waiting_job_that_waits_too_long_is_refused_with_a_message():
    async def scenario():
        gradio = FakeGradio()
        admission = Admission(gradio, light_jobs=1, max_wait_s=0.2)
        await post(admission, gradio, "/gradio_api/queue/join", join("a"))
        # The 503 and its message come only from the max_wait_s timeout; the bound only turns a
        # job held for ever into a failure instead of a hang, and is far above max_wait_s so
        # that a loaded machine cannot reach it.
        waited = await asyncio.wait_for(post(admission, gradio, "/gradio_api/queue/join", join("b")), 60)
        return waited, admission.waiting

    (status, answer), waiting = asyncio.run(scenario())
    assert status == 503 and "waited 0.2 s" in answer["error"] and not waiting
