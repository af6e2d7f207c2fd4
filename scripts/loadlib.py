"""Client-side machinery of the load benchmark (``scripts/load_test.py``).

Starts and stops the dashboard as a subprocess, samples its resident memory, speaks Gradio 6's
two HTTP protocols and summarises timings:

* the browser's queue protocol (``protocol: sse_v3`` in ``/config``): ``POST /gradio_api/queue/join``
  with ``{data, fn_index, session_hash, trigger_id, event_data}`` answers ``{event_id}`` (503 when
  the queue is full); ``GET /gradio_api/queue/data?session_hash=H`` then streams Server-Sent Events
  whose ``data:`` is a JSON message ``{"msg": "estimation" | "process_starts" |
  "process_generating" | "process_completed" | "close_stream" | "heartbeat" | ..., "event_id"}``.
  A browser also holds ``GET /gradio_api/heartbeat/H`` open for as long as its page is open;
* the public API: ``POST /gradio_api/call/<api_name>`` with ``{"data": [...]}`` (inputs without the
  ``gr.State`` ones) answers ``{event_id}``; ``GET /gradio_api/call/<api_name>/<event_id>`` streams
  ``event: complete | error | generating | heartbeat`` with a JSON ``data:`` line.

Every request goes to the loopback interface only (:func:`require_loopback`)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
API = "/gradio_api"


# ----------------------------------------------------------------------------- statistics

def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) with linear interpolation between the closest
    ranks, as ``numpy.percentile``'s default: position ``(n - 1) * q / 100`` of the sorted values."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, max and mean of ``values`` (None for each figure of an empty list)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values), "mean": sum(values) / len(values)}


def linear_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of ``(x, y)`` points; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters with its full length noted."""
    text = str(text)
    if len(text) <= limit:
        return " ".join(text.split())
    return f"{' '.join(text[:limit].split())}... ({len(text):,} chars in all)"


def group_errors(messages: list[str], limit: int = 200) -> list[tuple[str, int]]:
    """Error messages grouped by their text with every number replaced by ``N`` (so "Max size
    is 64 and size is 64" and "... size is 65" count together), most frequent first; each group
    is shown by its first message, shortened to ``limit`` characters."""
    groups: dict[str, list] = {}
    for message in messages:
        key = re.sub(r"\d+(\.\d+)?", "N", shorten(message, limit))
        groups.setdefault(key, [shorten(message, limit), 0])[1] += 1
    return sorted(((first, count) for first, count in groups.values()), key=lambda item: -item[1])


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, numbers right-aligned (floats with 2 decimals), None shown as ``-``."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text_rows)])


# ----------------------------------------------------------------------------- Server-Sent Events

@dataclass
class SSEEvent:
    event: str
    data: str


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG HTML, "event stream interpretation"): feed it
    text as it arrives; lines end with LF, CRLF or CR; ``data:`` lines of one event are joined with
    LF; a blank line dispatches the event (type ``message`` unless an ``event:`` line named it);
    lines starting with ``:`` are comments; one space after the colon is dropped."""

    _LINE_END = re.compile(r"\r\n|\n|\r")

    def __init__(self) -> None:
        self._pieces: list[str] = []  # the unfinished line, kept in pieces so a long line is copied once
        self._skip_lf = False  # the last text ended with CR: an LF opening the next one ends no line
        self._event = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[SSEEvent]:
        if not text:
            return []
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        events: list[SSEEvent] = []
        position = 0
        for match in self._LINE_END.finditer(text):
            self._pieces.append(text[position: match.start()])
            line, self._pieces = "".join(self._pieces), []
            position = match.end()
            self._take_line(line, events)
        if position < len(text):
            self._pieces.append(text[position:])
        return events

    def _take_line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)


# ----------------------------------------------------------------------------- the server process

def require_loopback(url: str) -> str:
    """``url`` without a trailing slash, or ValueError unless it is http(s) on the loopback interface."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load test only talks to this machine: the URL must be http://127.0.0.1:PORT (or localhost, [::1]), got {url!r}")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _proc_children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def process_tree_rss_mb(pid: int) -> float | None:
    """Resident memory (MiB) of process ``pid`` plus all its descendants, via psutil when it is
    installed, else ``/proc/PID/status``; None when the process is gone or unreadable."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            return total / 2**20
        except psutil.Error:
            return None
    try:
        total_kib, pending = 0, [pid]
        while pending:
            current = pending.pop()
            try:
                total_kib += _proc_rss_kib(current)
            except OSError:
                if current == pid:
                    return None
                continue
            pending.extend(_proc_children(current))
        return total_kib / 1024
    except OSError:
        return None


class RssSampler:
    """Samples :func:`process_tree_rss_mb` of ``pid`` every ``interval`` seconds in an asyncio task."""

    def __init__(self, pid: int | None, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task | None = None
        self._t0 = time.monotonic()

    def sample(self) -> float | None:
        if self.pid is None:
            return None
        value = process_tree_rss_mb(self.pid)
        if value is not None:
            self.samples.append((time.monotonic() - self._t0, value))
        return value

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> RssSampler:
        if self.pid is not None:
            self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample()

    def report(self) -> dict[str, float | None]:
        """RSS (MiB) at the first sample, the peak and the last sample."""
        values = [mb for _, mb in self.samples]
        return {"before": values[0] if values else None, "peak": max(values) if values else None, "after": values[-1] if values else None}


class ServerLog:
    """The app's log file, read from a remembered offset: tracebacks and the longest line
    written since :meth:`mark`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path and self.path.exists() else 0

    def since_mark(self) -> dict[str, int] | None:
        if self.path is None or not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            text = handle.read().decode("utf-8", "replace")
        return {"bytes": len(text.encode()), "tracebacks": text.count("Traceback (most recent call last)"), "longest_line": max((len(line) for line in text.splitlines()), default=0)}


class AppServer:
    """``python app.py --port N [--camvid DIR]`` in its own process group, logging to a file.

    Use as a context manager: it is always stopped (SIGTERM to its group, SIGKILL after
    ``stop_timeout`` seconds) on the way out."""

    def __init__(self, python: str = sys.executable, camvid: Path | None = None, env: dict[str, str] | None = None, log_path: Path | None = None,
                 stop_timeout: float = 15.0, nofile: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [python, str(REPO_ROOT / "app.py"), "--port", str(self.port), "--host", "127.0.0.1"]
        if camvid is not None:
            self.command += ["--camvid", str(camvid)]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or Path(f"/tmp/load_test_app_{self.port}.log")
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self.nofile = nofile

    def _limit_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 180.0) -> None:
        """Start the app and wait until ``GET /config`` answers 200 (RuntimeError with the log's
        tail when the process exits first or ``timeout`` seconds pass)."""
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=self._limit_files if self.nofile else None)
        with httpx.Client(timeout=5) as client:
            while time.monotonic() - t0 < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the app exited with code {self.process.returncode} before answering:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/config").status_code == 200:
                        self.startup_seconds = time.monotonic() - t0
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the app's own pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=self.stop_timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the app's events

@dataclass
class InputSlot:
    """One input of an event: its component, the name the public API gives it (if any), its
    label, whether the API skips it (``gr.State``) and the value a fresh page holds."""

    component_id: int
    name: str | None
    label: str | None
    component_type: str
    skip_api: bool
    value: Any
    choices: list[Any] | None


@dataclass
class Endpoint:
    """One event (dependency) of the app, as ``/config`` describes it."""

    fn_index: int
    api_name: str | None
    trigger_id: int | None
    inputs: list[InputSlot]

    def slot(self, key: str) -> int:
        """The position of input ``key``: its API parameter name, else the one input whose label
        contains every word of ``key`` (``set_name`` -> ``set`` and ``name``); ValueError otherwise."""
        for index, slot in enumerate(self.inputs):
            if slot.name == key:
                return index
        words = [w for w in re.split(r"[_\W]+", key.lower()) if w]
        by_label = [i for i, slot in enumerate(self.inputs) if slot.label and all(w in slot.label.lower() for w in words)]
        if len(by_label) == 1:
            return by_label[0]
        known = [slot.name or slot.label for slot in self.inputs if not slot.skip_api]
        raise ValueError(f"event {self.api_name or self.fn_index} has no input {key!r}; its inputs are {known}")

    def browser_data(self, overrides: dict[str, Any] | None = None) -> list[Any]:
        """What a browser sends: every input's current value (None for ``gr.State``, which the
        server keeps), with ``overrides`` (by input name or label words) applied."""
        data = [None if slot.skip_api else slot.value for slot in self.inputs]
        for key, value in (overrides or {}).items():
            data[self.slot(key)] = value
        return data

    def api_data(self, overrides: dict[str, Any] | None = None) -> list[Any]:
        """What ``/call/<api_name>`` takes: :meth:`browser_data` without the ``gr.State`` inputs."""
        return [value for value, slot in zip(self.browser_data(overrides), self.inputs) if not slot.skip_api]


def _choice_values(props: dict) -> list[Any] | None:
    choices = props.get("choices")
    if choices is None:
        return None
    return [choice[1] if isinstance(choice, (list, tuple)) and len(choice) == 2 else choice for choice in choices]


class AppModel:
    """The app's events and components from ``GET /config`` and ``GET /gradio_api/info``."""

    def __init__(self, config: dict, api_info: dict) -> None:
        self.config = config
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = config["dependencies"]
        names: dict[int, str] = {}
        for api_path, info in api_info.get("named_endpoints", {}).items():
            dependency = next((d for d in self.dependencies if d.get("api_name") == api_path.lstrip("/")), None)
            if dependency is None:
                continue
            api_inputs = [cid for cid in dependency["inputs"] if not self.components[cid].get("skip_api")]
            for cid, parameter in zip(api_inputs, info.get("parameters", [])):
                if parameter.get("parameter_name"):
                    names.setdefault(cid, parameter["parameter_name"])
        self.input_names = names

    @classmethod
    async def fetch(cls, http: httpx.AsyncClient, base: str) -> AppModel:
        config = await http.get(f"{base}/config")
        config.raise_for_status()
        info = await http.get(f"{base}{API}/info")
        return cls(config.json(), info.json() if info.status_code == 200 else {})

    def endpoint_at(self, index: int) -> Endpoint:
        dependency = self.dependencies[index]
        slots = []
        for cid in dependency["inputs"]:
            component = self.components[cid]
            props = component.get("props", {})
            slots.append(InputSlot(cid, self.input_names.get(cid), props.get("label"), component.get("type", ""), bool(component.get("skip_api")), props.get("value"), _choice_values(props)))
        targets = dependency.get("targets") or [[None, None]]
        return Endpoint(dependency.get("id", index), dependency.get("api_name"), targets[0][0], slots)

    def endpoint(self, api_name: str, fallback: Callable[[AppModel, dict], bool] | None = None) -> Endpoint:
        """The event named ``api_name``; else the first whose name is ``api_name_<n>`` (Gradio's
        name for a second event with the same function); else the first ``fallback`` accepts;
        ValueError listing the names otherwise."""
        for predicate in (lambda d: d.get("api_name") == api_name,
                          lambda d: re.fullmatch(rf"{re.escape(api_name)}_\d+", str(d.get("api_name"))) is not None,
                          lambda d: fallback is not None and fallback(self, d)):
            for index, dependency in enumerate(self.dependencies):
                if dependency.get("backend_fn", True) and predicate(dependency):
                    return self.endpoint_at(index)
        raise ValueError(f"the app has no event {api_name!r}; its events are {[d.get('api_name') for d in self.dependencies]}")

    def load_endpoints(self) -> list[Endpoint]:
        """The events a browser fires when it opens the page (``demo.load``)."""
        return [self.endpoint_at(i) for i, d in enumerate(self.dependencies) if d.get("backend_fn", True) and any(t[1] == "load" for t in d.get("targets", []))]


def pick_example(choices: list[str], set_name: str) -> str:
    """The first example key of ``set_name`` (keys look like ``camvid-0016E5_07959``), else the first key."""
    if not choices:
        raise ValueError("the app offers no examples")
    return next((c for c in choices if str(c).startswith(f"{set_name}-")), choices[0])


# ----------------------------------------------------------------------------- one event over HTTP

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

