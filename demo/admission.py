"""One admission policy for every way a job enters the server, enforced before Gradio sees
it (:class:`Admission`, an ASGI middleware): the browser protocol (``POST queue/join``), the
plain HTTP API (``POST call/<name>``) and its newer route (``POST call/v2/<name>``).

* **Per client**: a browser tab (its ``session_hash``) has at most ``per_client`` jobs waiting
  or running, light events (previews, redraws) included, an API client (its address) at most
  ``per_api_client``; beyond that a job is refused at once with 429. An API job never waits
  here: when its address has no room in Gradio it is refused with 429 (retry later).
* **Per address, in Gradio**: at most ``model_jobs`` model jobs and ``light_jobs`` light events
  of one address are in Gradio's hands at a time; the address's next jobs wait here, taken in
  turn from each of its clients (round robin), at most ``waiting_per_address`` of them. So a
  greedy address puts a few jobs ahead of anyone else's (the fair scheduler then interleaves
  the model jobs), and a classmate behind the same address waits behind a few, not behind all.
* **A class behind one NAT** shares one address but each tab is its own client: forty tabs fit
  under ``waiting_per_address``, each can have its own jobs waiting, and they are taken in
  turn; only the number of their jobs in Gradio at once is shared (Gradio runs model jobs one
  at a time anyway, and light events ``light_concurrency`` at a time).
* **Clients that never listen**: :meth:`Admission.listening` says whether a tab's result
  stream (``GET queue/data``) is open or was lately; the fair scheduler drops a waiting model
  job whose tab stopped listening.
* **Long strings** in a job's inputs (above ``max_string``) are refused with 413 and never
  echoed or logged.

A job counts until it leaves Gradio's queue: its event id is looked up in Gradio's queue
(``Blocks._queue.event_ids_to_events``, what Gradio's own routes use); a job not found there
any more is done. Where that is not available a job counts for ``job_ttl_s``. ``job_ttl_s`` and
``grace_s`` are measured on ``clock`` (tests pass a fake one)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .serving import CALL_PREFIX, Readers, address_of, refuse

log = logging.getLogger(__name__)

JOIN_PATH = "/gradio_api/queue/join"
DATA_PATH = "/gradio_api/queue/data"
MODEL_GROUP = "models"


@dataclass(eq=False)
class _Waiter:
    client: str
    kind: str
    granted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def longest_string(value, limit: int) -> int:
    """The length of the first string in ``value`` (nested lists and dicts) above ``limit``, else 0."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > limit:
                return len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return 0


class Admission:
    """ASGI middleware (inside :class:`demo.serving.BodyLimit`, which bounds the bodies it reads)."""

    def __init__(self, app, per_client: int = 6, per_api_client: int = 10, model_jobs: int = 10, light_jobs: int = 8, waiting_per_address: int = 200, max_string: int = 2000,
                 grace_s: float = 10.0, max_wait_s: float = 120.0, job_ttl_s: float = 600.0, trust_forwarded: bool = False, remembered: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.per_client, self.per_api_client = per_client, per_api_client
        self.limits, self.waiting_per_address = {"model": model_jobs, "light": light_jobs}, waiting_per_address
        self.max_string, self.grace_s, self.max_wait_s, self.job_ttl_s = max_string, grace_s, max_wait_s, job_ttl_s
        self.trust_forwarded, self.clock = trust_forwarded, clock
        self.jobs: dict[str, tuple[str, str, str, float]] = {}  # event id -> (address, client, kind, admitted)
        self.in_gradio: Counter = Counter()  # (address, kind) -> jobs in Gradio's hands, or granted and on their way
        self.held: Counter = Counter()  # client -> its jobs in Gradio's hands
        self.waiting: OrderedDict[str, OrderedDict[str, deque[_Waiter]]] = OrderedDict()  # address -> client -> waiters
        self.listeners = Readers(remembered, clock)  # session -> its open result streams, and when it was last heard
        self.gradio_app = None
        self._poller: asyncio.Task | None = None

    # ------------------------------------------------------------------ counting

    def _queued_ids(self):
        try:
            return self.gradio_app.get_blocks()._queue.event_ids_to_events
        except AttributeError:
            return None

    def purge(self) -> None:
        """Forget the jobs that left Gradio's queue, then let waiting jobs in."""
        queued, now = self._queued_ids(), self.clock()
        for event_id, (address, client, kind, admitted) in list(self.jobs.items()):
            if (queued is not None and event_id not in queued) or now - admitted > self.job_ttl_s:
                del self.jobs[event_id]
                self._release(address, client, kind)
        self._grant()

    def _release(self, address: str, client: str | None, kind: str) -> None:
        self.in_gradio[(address, kind)] -= 1
        if self.in_gradio[(address, kind)] <= 0:
            del self.in_gradio[(address, kind)]
        if client is not None:
            self.held[client] -= 1
            if self.held[client] <= 0:
                del self.held[client]

    def client_jobs(self, client: str, address: str) -> int:
        return self.held[client] + len(self.waiting.get(address, {}).get(client, ()))

    def waiting_at(self, address: str) -> int:
        return sum(len(q) for q in self.waiting.get(address, {}).values())

    def _grant(self) -> None:
        """Round robin over each address's clients: the next waiter whose kind has room."""
        for address, clients in list(self.waiting.items()):
            for client in list(clients):
                queue = clients[client]
                if queue and self.in_gradio[(address, queue[0].kind)] < self.limits[queue[0].kind]:
                    waiter = queue.popleft()
                    clients.move_to_end(client)  # to the back of this address's round
                    if not queue:
                        del clients[client]
                    if not waiter.granted.done():
                        self.in_gradio[(address, waiter.kind)] += 1
                        waiter.granted.set_result(True)
            if not clients:
                del self.waiting[address]

    def _drop_waiter(self, address: str, waiter: _Waiter) -> None:
        queue = self.waiting.get(address, {}).get(waiter.client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self.waiting[address][waiter.client]
            if not self.waiting[address]:
                del self.waiting[address]

    async def _poll(self) -> None:
        """Notice finished jobs (20 times a second) while any job is counted or waiting."""
        while self.jobs or self.waiting:
            self.purge()
            await asyncio.sleep(0.05)
        self._poller = None

    def _ensure_polling(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    # ------------------------------------------------------------------ listening

    def listening(self, session: str) -> bool:
        """Whether a browser tab reads its results: its stream is open, or was (or it sent a
        job) within ``grace_s``."""
        last_heard = self.listeners.last_seen(session)
        return self.listeners.is_open(session) or (last_heard is not None and self.clock() - last_heard < self.grace_s)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if "app" in scope:
            self.gradio_app = scope["app"]
            scope["app"].state.admission = self
        path, method = scope.get("path", "").rstrip("/"), scope.get("method")
        if method == "GET" and path == DATA_PATH:
            return await self._listen(scope, receive, send)
        is_call = method == "POST" and path.startswith(CALL_PREFIX) and len(path[len(CALL_PREFIX):].split("/")) in (1, 2)
        if not (method == "POST" and path == JOIN_PATH) and not is_call:
            return await self.app(scope, receive, send)
        return await self._admit(scope, receive, send, is_call)

    async def _listen(self, scope, receive, send):
        session = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash") or [""])[0]
        with self.listeners.reading(session):
            await self.app(scope, receive, send)

    async def _admit(self, scope, receive, send, is_call: bool):
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        headers = dict(scope.get("headers") or [])
        address = address_of((scope.get("client") or (None,))[0], headers.get(b"x-forwarded-for", b"").decode("latin-1"), self.trust_forwarded)
        if isinstance(payload, dict) and (length := longest_string(payload.get("data", payload), self.max_string)):
            return await refuse(send, 413, f"an input is {length:,} characters long; at most {self.max_string:,} are accepted")
        session = payload.get("session_hash") if isinstance(payload, dict) and not is_call else None
        client = f"tab:{session}" if isinstance(session, str) and session else f"api:{address}"
        kind = "model" if is_call else self._kind(payload)
        self.purge()
        limit, who = (self.per_client, "this browser tab") if client.startswith("tab:") else (self.per_api_client, "your address")
        if self.client_jobs(client, address) >= limit or (is_call and self.in_gradio[(address, kind)] >= self.limits[kind]):
            return await refuse(send, 429, f"{who} already has {limit} requests in progress: wait for them to finish", ((b"retry-after", b"2"),))
        if self.waiting_at(address) >= self.waiting_per_address:
            return await refuse(send, 429, f"{self.waiting_per_address} requests from your address are already waiting: try again in a minute", ((b"retry-after", b"10"),))
        if isinstance(session, str):
            self.listeners.seen(session)
        waiter = _Waiter(client, kind)
        self.waiting.setdefault(address, OrderedDict()).setdefault(client, deque()).append(waiter)
        self._grant()
        if not waiter.granted.done():
            self._ensure_polling()
            try:
                await asyncio.wait_for(asyncio.shield(waiter.granted), self.max_wait_s)
            except TimeoutError:
                self._drop_waiter(address, waiter)
                if not waiter.granted.done():
                    return await refuse(send, 503, f"the server is busy: your request waited {self.max_wait_s:g} s; try again", ((b"retry-after", b"10"),))
            except asyncio.CancelledError:
                self._drop_waiter(address, waiter)
                if waiter.granted.done():
                    self._release(address, None, kind)
                raise
        await self._forward(scope, receive, send, body, address, client, kind)

    def _kind(self, payload) -> str:
        try:
            group = self.gradio_app.get_blocks().fns[payload["fn_index"]].concurrency_id
        except (AttributeError, KeyError, TypeError):
            return "light"
        return "model" if group == MODEL_GROUP else "light"

    def _forwarded(self, address: str, client: str, kind: str, event_id: str | None) -> None:
        """A granted job reached Gradio's queue as ``event_id`` (counted until it leaves it), or
        did not (None: its place is free at once)."""
        if event_id is None:
            self._release(address, None, kind)
        else:
            self.jobs[event_id] = (address, client, kind, self.clock())
            self.held[client] += 1
            self._ensure_polling()
        self._grant()

    async def _forward(self, scope, receive, send, body: bytes, address: str, client: str, kind: str):
        sent_body = False
        answer = {"status": None, "chunks": []}

        async def replay():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def noting_send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body" and answer["status"] == 200 and sum(map(len, answer["chunks"])) < 4096:
                answer["chunks"].append(message.get("body", b""))
            await send(message)

        event_id = None
        try:
            await self.app(scope, replay, noting_send)
            if answer["status"] == 200:
                try:
                    event_id = json.loads(b"".join(answer["chunks"])).get("event_id")
                except (ValueError, AttributeError):
                    event_id = None
        finally:
            self._forwarded(address, client, kind, event_id if isinstance(event_id, str) else None)


__all__ = ["Admission", "longest_string"]
