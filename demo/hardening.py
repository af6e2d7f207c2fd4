"""The server around the app, made to survive slow and noisy clients:

* :class:`HeaderTimeoutH11` closes a connection whose request headers are not complete within
  ``header_timeout_s`` (uvicorn's h11 protocol has no such timeout: half-sent headers held a
  socket forever, and 1100 of them exhausted a 1024 file-descriptor limit);
* :func:`harden_server` sets the running uvicorn server's own settings: that protocol, the
  keep-alive timeout, the largest incomplete request head, and a connection cap;
* :func:`raise_fd_limit` raises the soft file-descriptor limit to the hard one;
* :class:`LogRateLimit` keeps the log readable and small when something repeats (the same
  message at most ``per_key`` times a window, everything at most ``total`` times; long messages
  and tracebacks cut);
* :class:`SecurityHeaders` adds ``X-Content-Type-Options``, ``Referrer-Policy`` and, when set,
  a ``frame-ancestors`` policy (framing is allowed by default: Hugging Face Spaces shows the app
  in an iframe), and answers 404 to Gradio's development reload stream outside development."""

from __future__ import annotations

import logging
import os
import resource
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from .serving import refuse

log = logging.getLogger(__name__)

DEV_RELOAD_PATH = "/gradio_api/dev/reload"


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within
    ``header_timeout_s`` of its first byte (or of the end of the previous response), and, when
    ``per_address`` is set, any connection beyond that many from one client address as soon as
    it is accepted (so one address cannot hold every file descriptor)."""

    header_timeout_s = 10.0
    per_address: int | None = None
    open_per_address: dict[str, int] = {}

    def _arm(self) -> None:
        """Start the clock for the next request head (a new request makes a new ``cycle``)."""
        self._armed_for = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
        self._header_timer = None

    def connection_made(self, transport) -> None:
        """A connection beyond ``per_address`` is closed before uvicorn registers it, so it never
        counts towards ``limit_concurrency``: one address reconnecting in a loop cannot make
        the server answer other clients 503."""
        client = get_remote_addr(transport)
        self._address = client[0] if client else None
        self._refused = False
        if self.per_address is not None and self._address is not None:
            held = self.open_per_address[self._address] = self.open_per_address.get(self._address, 0) + 1
            if held > self.per_address:
                self._header_timer, self._refused = None, True
                transport.close()
                return
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._armed_for:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._disarm()
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self.per_address is not None and self._address in self.open_per_address:
            self.open_per_address[self._address] -= 1
            if not self.open_per_address[self._address]:
                del self.open_per_address[self._address]
        if not self._refused:
            super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._armed_for and not self.transport.is_closing():
            self.transport.close()


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
    return soft, hard


def connection_cap(wanted: int, fd_soft_limit: int, reserve: int = 256) -> int:
    """At most ``wanted`` connections, and ``reserve`` descriptors left for files, models and
    worker threads under ``fd_soft_limit``."""
    return max(16, min(wanted, fd_soft_limit - reserve))


def harden_server(config, max_connections: int, header_timeout_s: float = 10.0, keep_alive_s: int = 5, max_head_bytes: int = 32 * 1024, per_address: int | None = None) -> int:
    """Apply uvicorn's own settings to the running server's ``config`` (Gradio's ``launch``
    does not take them; uvicorn reads them each time it accepts a connection): the h11
    protocol with a header timeout (and ``per_address`` connections at most: leave it None
    behind a proxy, where every connection comes from the proxy), ``timeout_keep_alive``,
    ``h11_max_incomplete_event_size`` and ``limit_concurrency`` (beyond it a request is
    answered 503). Returns the connection cap."""
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout_s": header_timeout_s, "per_address": per_address, "open_per_address": {}})
    config.http = protocol
    config.http_protocol_class = protocol
    config.timeout_keep_alive = keep_alive_s
    config.h11_max_incomplete_event_size = max_head_bytes
    config.limit_concurrency = max_connections
    return max_connections


class LogRateLimit(logging.Filter):
    """A filter for log handlers: the same message (logger and format string) at most
    ``per_key`` times and all messages at most ``total`` times every ``window_s``; what is left
    out is counted and said once the window ends. Messages are cut to ``max_chars`` and
    tracebacks to ``max_traceback_chars``, so a huge argument is never written in full.
    ``clock`` measures the window (tests pass a fake one)."""

    def __init__(self, per_key: int = 5, total: int = 100, window_s: float = 10.0, max_chars: int = 500, max_traceback_chars: int = 4000, remembered: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self.per_key, self.total, self.window_s = per_key, total, window_s
        self.max_chars, self.max_traceback_chars, self.remembered = max_chars, max_traceback_chars, remembered
        self._window_start = clock()
        self._counts: OrderedDict[tuple, int] = OrderedDict()
        self._emitted = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now, suppressed = self.clock(), 0
        if now - self._window_start >= self.window_s:
            suppressed, self._suppressed = self._suppressed, 0
            self._window_start, self._emitted = now, 0
            self._counts.clear()
        key = (record.name, str(record.msg)[:200])
        seen = self._counts.pop(key, 0) + 1
        self._counts[key] = seen
        while len(self._counts) > self.remembered:
            self._counts.popitem(last=False)
        if seen > self.per_key or self._emitted >= self.total:
            self._suppressed += 1
            return False
        self._emitted += 1
        self._cut(record)
        if suppressed:
            record.msg, record.args = f"({suppressed} log lines left out in the last {self.window_s:g} s) {record.getMessage()}", None
        return True

    def _cut(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if len(message) > self.max_chars:
            record.msg, record.args = f"{message[:self.max_chars]}… ({len(message):,} characters)", None
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = text if len(text) <= self.max_traceback_chars else text[:self.max_traceback_chars] + "… (traceback cut)"


def rate_limit_logs(limit: LogRateLimit | None = None) -> LogRateLimit:
    """Add ``limit`` to every handler now configured (the root's and each named logger's,
    uvicorn's included: call it after the server has configured its logging)."""
    limit = limit or LogRateLimit()
    loggers = [logging.getLogger()] + [logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if limit not in handler.filters:
                handler.addFilter(limit)
    return limit


class SecurityHeaders:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` and a ``Referrer-Policy`` on every
    response, ``Content-Security-Policy: frame-ancestors <frame_ancestors>`` when set (None:
    any page may frame the app, as Hugging Face Spaces and a school's learning platform do),
    and 404 for Gradio's development reload stream unless Gradio's development mode is on
    (``GRADIO_WATCH_DIRS``)."""

    def __init__(self, app, frame_ancestors: str | None = None, referrer_policy: str = "strict-origin-when-cross-origin"):
        self.app = app
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", referrer_policy.encode())]
        if frame_ancestors:
            self.headers.append((b"content-security-policy", f"frame-ancestors {frame_ancestors}".encode()))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("path", "").rstrip("/") == DEV_RELOAD_PATH and not os.environ.get("GRADIO_WATCH_DIRS"):
            return await refuse(send, 404, "not found")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *(h for h in self.headers if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["HeaderTimeoutH11", "LogRateLimit", "SecurityHeaders", "connection_cap", "harden_server", "raise_fd_limit", "rate_limit_logs"]
