"""What a public classroom server needs around the callbacks: fair turns on the device for
model jobs (:func:`on_device`), request bodies and uploads bounded before Gradio reads them
(:class:`BodyLimit`), bursts of API jobs from one address refused (:class:`ApiRateLimit`), and a
closed tab's uploads deleted (:func:`delete_uploads`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import math
import time
import typing
from collections import OrderedDict
from pathlib import Path

import anyio
import gradio as gr

from .scheduler import FairScheduler, Refused, Superseded

log = logging.getLogger(__name__)

_DONE = object()
CALL_PREFIX = "/gradio_api/call/"  # the plain HTTP API: POST <prefix><name>, then GET <prefix><name>/<event id>


async def refuse(send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer an ASGI request with ``status`` and ``{"error": message}``, before the app sees it."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def address_of(peer: str | None, forwarded_for: str | None, trust_forwarded: bool) -> str:
    """A client's address. Behind a trusted proxy (Hugging Face Spaces) it is the last one the
    proxy appended to ``X-Forwarded-For``; elsewhere that header is the client's own word and
    is ignored."""
    if trust_forwarded and (forwarded := (forwarded_for or "").split(",")[-1].strip()):
        return forwarded
    return peer or "unknown"


def client_of(request: gr.Request | None, trust_forwarded: bool) -> tuple[str, str | None]:
    """(address, browser session) of a request."""
    if request is None:
        return "local", None
    peer = getattr(getattr(request, "client", None), "host", None)
    return address_of(peer, request.headers.get("x-forwarded-for"), trust_forwarded), getattr(request, "session_hash", None)


class ApiRateLimit:
    """ASGI middleware: ``POST /gradio_api/call/<name>`` (the plain HTTP API, which opens a new
    Gradio session per job) at most ``burst`` at once per client address, then ``per_second``.
    Gradio builds every new session's configuration on its event loop, so a burst of sixty
    unread API jobs from one address held up everyone's light events for seconds; beyond the limit a job is refused with 429 before Gradio sees it.
    Browsers (``queue/join``, one session per tab) are not limited here: a class behind one
    address clicks Run together. ``clock`` refills the buckets (tests pass a fake one)."""

    def __init__(self, app, burst: int = 10, per_second: float = 1.0, trust_forwarded: bool = False, remembered: int = 10_000, clock: typing.Callable[[], float] = time.monotonic):
        if burst < 1 or per_second <= 0:
            raise ValueError(f"need burst >= 1 and per_second > 0, got {burst}, {per_second}")
        self.app = app
        self.burst = burst
        self.per_second = per_second
        self.trust_forwarded = trust_forwarded
        self.remembered = remembered
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, when)

    def allow(self, address: str) -> bool:
        now = self.clock()
        tokens, then = self.buckets.pop(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        allowed = tokens >= 1.0
        self.buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        while len(self.buckets) > self.remembered:
            self.buckets.popitem(last=False)
        return allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").startswith(CALL_PREFIX):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        if self.allow(address_of((scope.get("client") or (None,))[0], forwarded, self.trust_forwarded)):
            return await self.app(scope, receive, send)
        retry = str(max(1, math.ceil(1 / self.per_second))).encode()
        await refuse(send, 429, f"too many API calls from your address: at most {self.burst} at once, then {self.per_second:g} a second", ((b"retry-after", retry),))


class Readers:
    """Who reads what: how many readers each key (a browser tab's result stream, a ``/call``
    job's result) has open, and when it was last seen: its last reader left, or
    :meth:`seen` said so. The ``remembered`` most recent keys are kept; ``clock`` tells the
    time (tests pass a fake one)."""

    def __init__(self, remembered: int = 10_000, clock: typing.Callable[[], float] = time.monotonic):
        self.remembered = remembered
        self.clock = clock
        self._open: dict[str, int] = {}
        self._last_seen: OrderedDict[str, float] = OrderedDict()

    @contextlib.contextmanager
    def reading(self, key: str) -> typing.Iterator[None]:
        """Count one more reader of ``key`` while the block runs."""
        self._open[key] = self._open.get(key, 0) + 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]
                self.seen(key)

    def seen(self, key: str) -> None:
        self._last_seen[key] = self.clock()
        self._last_seen.move_to_end(key)
        while len(self._last_seen) > self.remembered:
            self._last_seen.popitem(last=False)

    def is_open(self, key: str) -> bool:
        return key in self._open

    def last_seen(self, key: str) -> float | None:
        return self._last_seen.get(key)


class ResultReaders:
    """ASGI middleware that notes which ``/call`` results someone is reading. An API client
    posts ``/gradio_api/call/<name>`` (or ``call/v2/<name>``; its job's session is the returned
    event id) and then reads ``GET /gradio_api/call/[v2/]<name>/<event id>``; a job whose result nobody started to read
    within ``grace_s``, or whose reader went away, is no longer wanted. The middleware puts
    itself in the app's state, where :func:`on_device` finds it through the request."""

    def __init__(self, app, grace_s: float = 10.0, remembered: int = 10_000, clock: typing.Callable[[], float] = time.monotonic):
        self.app = app
        self.grace_s = grace_s
        self.readers = Readers(remembered, clock)

    async def __call__(self, scope, receive, send):
        if "app" in scope:
            scope["app"].state.result_readers = self
        path = scope.get("path", "")
        parts = path[len(CALL_PREFIX):].split("/") if scope["type"] == "http" and path.startswith(CALL_PREFIX) else []
        if parts[:1] == ["v2"]:  # GET <prefix>v2/<name>/<event id>: the same reader, newer route
            parts = parts[1:]
        if scope.get("method") != "GET" or len(parts) != 2:
            return await self.app(scope, receive, send)
        with self.readers.reading(parts[1]):
            await self.app(scope, receive, send)

    def now(self) -> float:
        return self.readers.clock()

    def still_wanted(self, event_id: str, submitted: float) -> bool:
        """Someone reads the result, or nobody has yet and ``grace_s`` has not passed since ``submitted`` (:meth:`now`)."""
        if self.readers.is_open(event_id):
            return True
        return self.readers.last_seen(event_id) is None and self.now() - submitted < self.grace_s


def _still_wanted(request: gr.Request | None, session: str | None):
    """Whether a job's result is still awaited: for a ``/call`` job, whether someone reads it
    (:class:`ResultReaders`); for a browser job, whether its tab listens
    (:class:`demo.admission.Admission`); None when neither is known."""
    http_request = getattr(request, "request", None)
    path = getattr(getattr(http_request, "url", None), "path", "")
    state = getattr(getattr(http_request, "app", None), "state", None)
    if session is None or state is None:
        return None
    if str(path).startswith(CALL_PREFIX):
        readers = getattr(state, "result_readers", None)
        if readers is None:
            return None
        submitted = readers.now()
        return lambda: readers.still_wanted(session, submitted)
    admission = getattr(state, "admission", None)
    return None if admission is None else (lambda: admission.listening(session))


class _DeviceStream:
    """A streaming job's items, computed one at a time on request by a task of its own that
    holds the device turn: the consumer (Gradio) asks for the next item, the task computes it
    in a worker thread and hands it over. When the consumer stops asking (Gradio failed while
    it handled an item, e.g. copying an image into its cache, and dropped the stream without
    closing it), the task closes the job and gives the turn back after ``handoff_s``, instead
    of whenever the garbage collector finalises the dropped stream."""

    def __init__(self, scheduler: FairScheduler, client: tuple, start, handoff_s: float):
        self.asks: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.replies: asyncio.Queue = asyncio.Queue(maxsize=1)
        self.task = asyncio.get_running_loop().create_task(self._produce(scheduler, client, start, handoff_s))

    async def _produce(self, scheduler, client, start, handoff_s) -> None:
        try:
            async with scheduler.turn(*client):
                iterator = start()
                try:
                    first = True
                    while True:
                        try:
                            await (self.asks.get() if first else asyncio.wait_for(self.asks.get(), handoff_s))
                        except TimeoutError:
                            log.warning("a streaming job was abandoned by its consumer for %.0f s: its device turn is released", handoff_s)
                            self.replies.put_nowait((False, Superseded("its consumer went away")))
                            return
                        first = False
                        item = await anyio.to_thread.run_sync(next, iterator, _DONE)
                        self.replies.put_nowait((True, item))
                        if item is _DONE:
                            return
                finally:
                    iterator.close()
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            self.replies.put_nowait((False, error))

    async def next(self):
        """The next item, or ``_DONE``; raises what the job raised."""
        self.asks.put_nowait(None)
        ok, value = await self.replies.get()
        if not ok:
            raise value
        return value

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def on_device(fn, scheduler: FairScheduler, trust_forwarded: bool = False, handoff_s: float = 30.0):
    """``fn`` (a callback, plain or streaming) as an async Gradio callback that waits for its
    client's turn from ``scheduler`` (holding no thread while it waits), then runs ``fn`` in a
    worker thread (a streaming one through :class:`_DeviceStream`, so its turn ends even when
    Gradio drops the stream). A job superseded by a newer click of the same tab ends without
    output; a refused one shows why. Gradio passes the request as the extra last parameter."""
    signature = inspect.signature(fn)
    request_parameter = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)
    wrapped_signature = signature.replace(parameters=[*signature.parameters.values(), request_parameter])

    def split(args, kwargs):
        bound = wrapped_signature.bind(*args, **kwargs)
        request = bound.arguments.pop("request", None)
        address, session = client_of(request, trust_forwarded)
        return (address, session, _still_wanted(request, session)), bound.args, bound.kwargs

    if inspect.isgeneratorfunction(fn):

        async def wrapper(*args, **kwargs):
            client, args, kwargs = split(args, kwargs)
            stream = _DeviceStream(scheduler, client, functools.partial(fn, *args, **kwargs), handoff_s)
            try:
                while (item := await stream.next()) is not _DONE:
                    yield item
            except Superseded:
                return
            except Refused as error:
                raise gr.Error(str(error), print_exception=False) from None
            finally:
                await stream.close()

    else:

        async def wrapper(*args, **kwargs):
            client, args, kwargs = split(args, kwargs)
            try:
                async with scheduler.turn(*client):
                    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
            except Superseded:
                return gr.skip()
            except Refused as error:
                raise gr.Error(str(error), print_exception=False) from None

    wrapper.__name__ = getattr(fn, "__name__", "callback")
    wrapper.__doc__ = fn.__doc__
    wrapper.__signature__ = wrapped_signature
    wrapper.__annotations__ = {**typing.get_type_hints(fn), "request": gr.Request}
    return wrapper


class BodyLimit:
    """ASGI middleware: refuses, with 413 and a one-line message, any request body above
    ``max_body`` bytes, and upload bodies above ``max_upload`` (many files in one request
    included), from ``Content-Length`` or, for a chunked body, as the bytes arrive: the 413 is
    sent at the first byte too many and the app then sees the client gone (so its own parser
    cannot turn the refusal into a 400). A body that stops arriving for ``idle_timeout_s`` is
    answered 408 the same way."""

    def __init__(self, app, max_body: int = 64 * 1024, max_upload: int = 24 * 2**20, upload_path: str = "/gradio_api/upload", idle_timeout_s: float = 30.0):
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_path = upload_path
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope.get("path", "").endswith(self.upload_path) else self.max_body
        too_large = f"request body too large: at most {limit} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await refuse(send, 413, too_large)
        received = 0
        responded = refused = complete = False

        async def end(status: int, message: str):
            nonlocal refused
            refused = True
            if not responded:
                await refuse(send, status, message)
            return {"type": "http.disconnect"}

        async def counting_receive():
            nonlocal received, complete
            if refused:
                return {"type": "http.disconnect"}
            if complete:
                return await receive()
            with anyio.move_on_after(self.idle_timeout_s) as waited:
                message = await receive()
            if waited.cancelled_caught:
                return await end(408, f"request body too slow: nothing received for {self.idle_timeout_s:g} s")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    return await end(413, too_large)
            return message

        async def tracking_send(message):
            nonlocal responded
            if refused:
                return
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:
                raise


def delete_uploads(paths: set[str], upload_dir: Path) -> int:
    """Delete a finished session's uploads (only files inside ``upload_dir``)."""
    deleted = 0
    root = upload_dir.resolve()
    for path in paths:
        target = Path(path).resolve()
        if root in target.parents and target.is_file():
            target.unlink(missing_ok=True)
            deleted += 1
            if target.parent != root and not any(target.parent.iterdir()):
                target.parent.rmdir()
    return deleted


__all__ = ["ApiRateLimit", "BodyLimit", "Readers", "ResultReaders", "address_of", "client_of", "delete_uploads", "on_device"]
