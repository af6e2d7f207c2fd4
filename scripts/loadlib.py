"""The client side of the load benchmark (``scripts/load_test.py``): one event sent and followed
to its result, and a simulated browser tab, in Gradio 6's two HTTP protocols:

* the browser's queue protocol (``protocol: sse_v3`` in ``/config``): ``POST /gradio_api/queue/join``
  with ``{data, fn_index, session_hash, trigger_id, event_data}`` answers ``{event_id}`` (503 when
  the queue is full); ``GET /gradio_api/queue/data?session_hash=H`` then streams Server-Sent Events
  whose ``data:`` is a JSON message ``{"msg": "estimation" | "process_starts" |
  "process_generating" | "process_completed" | "close_stream" | "heartbeat" | ..., "event_id"}``.
  A browser also holds ``GET /gradio_api/heartbeat/H`` open for as long as its page is open;
* the public API: ``POST /gradio_api/call/<api_name>`` with ``{"data": [...]}`` (inputs without the
  ``gr.State`` ones) answers ``{event_id}``; ``GET /gradio_api/call/<api_name>/<event_id>`` streams
  ``event: complete | error | generating | heartbeat`` with a JSON ``data:`` line.

Every request goes to the loopback interface only (:func:`loadserver.require_loopback`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from loadapp import API, Endpoint
from loadstats import shorten
from sse import SSEParser


@dataclass
class EventResult:
    """The fate of one submitted event. Times are seconds since submission."""

    ok: bool
    seconds: float
    error: str | None = None
    refused: bool = False
    http_status: int | None = None
    event_id: str | None = None
    started_after: float | None = None
    first_output_after: float | None = None
    queue_sizes: list[int] = field(default_factory=list)
    output: Any = None
    error_length: int | None = None
    timed_out: bool = False


def json_loads(text: str) -> Any:
    """A message's JSON. Gradio writes the ``/call`` stream with ``json.dumps``, whose output may
    hold ``NaN`` and ``Infinity``: Python's own parser reads them back, stricter ones do not."""
    return json.loads(text)


def error_text(output: Any) -> str:
    if isinstance(output, dict):
        message = output.get("error")
        return "error with its details hidden by the server (show_error=False)" if message is None else str(message)
    return "error with no message" if output is None else str(output)


def response_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return response.text


async def _read_browser_stream(http: httpx.AsyncClient, base: str, session_hash: str, event_id: str, t0: float, result: EventResult) -> None:
    async with http.stream("GET", f"{base}{API}/queue/data", params={"session_hash": session_hash}) as response:
        if response.status_code != 200:
            await response.aread()
            result.error, result.http_status = f"queue/data answered HTTP {response.status_code}: {response_detail(response)}", response.status_code
            return
        parser = SSEParser()
        async for chunk in response.aiter_text():
            for event in parser.feed(chunk):
                try:
                    message = json_loads(event.data)
                except ValueError:
                    result.error = f"unreadable message: {shorten(event.data, 120)}"
                    return
                kind = message.get("msg")
                if kind == "close_stream":
                    result.error = result.error or "the stream closed before the result"
                    return
                if kind == "unexpected_error":
                    result.error = str(message.get("message"))
                    return
                if message.get("event_id") != event_id:
                    continue
                now = time.monotonic() - t0
                if kind == "estimation" and message.get("queue_size") is not None:
                    result.queue_sizes.append(message["queue_size"])
                elif kind == "process_starts":
                    result.started_after = now
                elif kind in ("process_generating", "process_streaming") and result.first_output_after is None:
                    result.first_output_after = now
                elif kind == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success") and "error" not in output:
                        result.ok, result.output = True, output.get("data")
                    else:
                        result.error = error_text(output)
                    return


@asynccontextmanager
async def _bounded(result: EventResult, timeout: float) -> AsyncIterator[float]:
    """Run the block (given its start time) for at most ``timeout`` seconds; a timeout or an
    HTTP failure becomes ``result``'s error, and ``result`` gets its duration."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            yield t0
    except TimeoutError:
        result.error, result.timed_out = f"no result after {timeout:.0f} s", True
    except httpx.HTTPError as error:
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.monotonic() - t0
    if result.error is not None:
        result.error_length, result.ok = len(result.error), False


async def browser_event(http: httpx.AsyncClient, base: str, endpoint: Endpoint, data: list[Any], session_hash: str, timeout: float) -> EventResult:
    """Submit ``endpoint`` as a browser does and read its messages until it completes, fails, is
    refused or ``timeout`` seconds pass (then the stream is closed, which tells the server that
    the page went away). One event at a time per ``session_hash``: a second reader of the same
    session's stream would take the first one's messages."""
    result = EventResult(ok=False, seconds=0.0)
    async with _bounded(result, timeout) as t0:
        body = {"data": data, "fn_index": endpoint.fn_index, "session_hash": session_hash, "trigger_id": endpoint.trigger_id, "event_data": None}
        joined = await http.post(f"{base}{API}/queue/join", json=body)
        result.http_status = joined.status_code
        if joined.status_code != 200:
            result.refused = joined.status_code in (429, 503)
            result.error = response_detail(joined) if result.refused else f"queue/join answered HTTP {joined.status_code}: {response_detail(joined)}"
        else:
            result.event_id = joined.json()["event_id"]
            await _read_browser_stream(http, base, session_hash, result.event_id, t0, result)
    return result


async def call_submit(http: httpx.AsyncClient, base: str, api_name: str, data: list[Any]) -> EventResult:
    """``POST /call/<api_name>`` only: the result holds the event id, or the refusal."""
    t0 = time.monotonic()
    result = EventResult(ok=False, seconds=0.0)
    try:
        response = await http.post(f"{base}{API}/call/{api_name}", json={"data": data})
        result.http_status = response.status_code
        if response.status_code == 200:
            result.ok, result.event_id = True, response.json()["event_id"]
        else:
            result.refused = response.status_code == 503
            result.error = response_detail(response) if result.refused else f"HTTP {response.status_code}: {response_detail(response)}"
    except httpx.HTTPError as error:
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.monotonic() - t0
    if result.error is not None:
        result.error_length = len(result.error)
    return result


async def call_event(http: httpx.AsyncClient, base: str, api_name: str, data: list[Any], timeout: float) -> EventResult:
    """``POST /call/<api_name>`` then read ``GET /call/<api_name>/<event_id>`` until the result,
    an error or ``timeout`` seconds (the public API, as ``gradio_client`` or ``curl`` use it)."""
    result = EventResult(ok=False, seconds=0.0)
    async with _bounded(result, timeout) as t0:
        submitted = await call_submit(http, base, api_name, data)
        result.http_status, result.event_id, result.refused, result.error = submitted.http_status, submitted.event_id, submitted.refused, submitted.error
        if submitted.ok:
            async with http.stream("GET", f"{base}{API}/call/{api_name}/{submitted.event_id}") as response:
                parser = SSEParser()
                async for chunk in response.aiter_text():
                    for event in parser.feed(chunk):
                        if event.event == "generating" and result.first_output_after is None:
                            result.first_output_after = time.monotonic() - t0
                        elif event.event in ("complete", "error"):
                            try:
                                payload = json_loads(event.data)
                            except ValueError:
                                result.error = f"unreadable {event.event} message: {shorten(event.data, 120)}"
                                break
                            if event.event == "complete":
                                result.ok, result.output = True, payload
                            else:
                                result.error = error_text(payload)
                            break
                    if result.ok or result.error:
                        break
                else:
                    result.error = result.error or "the stream closed before the result"
    return result


def file_urls(value: Any) -> list[str]:
    """The ``url`` of every Gradio ``FileData`` (``{"meta": {"_type": "gradio.FileData"}, "url": ...}``) inside an output."""
    found: list[str] = []
    if isinstance(value, dict):
        if isinstance(value.get("url"), str) and (value.get("meta") or {}).get("_type") == "gradio.FileData":
            found.append(value["url"])
        for item in value.values():
            found += file_urls(item)
    elif isinstance(value, list):
        for item in value:
            found += file_urls(item)
    return found


async def fetch_files(http: httpx.AsyncClient, base: str, output: Any) -> list[str]:
    """Download the output's files from ``base`` as a browser renders them; the errors (files
    on another host are not fetched)."""
    origin = urlsplit(base)
    errors = []
    for url in file_urls(output):
        parts = urlsplit(url)
        if (parts.hostname, parts.port) != (origin.hostname, origin.port):
            continue
        try:
            response = await http.get(url)
            if response.status_code != 200:
                errors.append(f"file download answered HTTP {response.status_code}")
        except httpx.HTTPError as error:
            errors.append(f"file download: {type(error).__name__}: {error}")
    return errors


class BrowserSession:
    """One simulated browser tab: ``GET /config`` when opened, a heartbeat stream held open,
    events sent one at a time with its session hash; closing it drops the heartbeat."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http = http
        self.base = base
        self.session_hash = uuid.uuid4().hex[:11]
        self.config_seconds: float | None = None
        self._heartbeat: asyncio.Task | None = None

    async def _hold_heartbeat(self) -> None:
        try:
            async with self.http.stream("GET", f"{self.base}{API}/heartbeat/{self.session_hash}") as response:
                async for _ in response.aiter_bytes():
                    pass
        except httpx.HTTPError:
            pass

    async def open(self) -> None:
        t0 = time.monotonic()
        response = await self.http.get(f"{self.base}/config")
        response.raise_for_status()
        self.config_seconds = time.monotonic() - t0
        self._heartbeat = asyncio.create_task(self._hold_heartbeat())

    async def run(self, endpoint: Endpoint, overrides: dict[str, Any] | None, timeout: float) -> EventResult:
        return await browser_event(self.http, self.base, endpoint, endpoint.browser_data(overrides), self.session_hash, timeout)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self._heartbeat
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> BrowserSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def http_client(local_address: str | None = None) -> httpx.AsyncClient:
    """An async client for many simultaneous connections; streams have no read timeout (each
    caller bounds its own wait with ``asyncio.timeout``). ``local_address`` (a loopback
    address such as 127.0.0.2) makes it another client address, as a second machine would be."""
    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=15.0), limits=httpx.Limits(max_connections=None, max_keepalive_connections=64), trust_env=False, transport=transport)
