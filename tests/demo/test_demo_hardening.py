"""The server around the app (demo/hardening.py, demo/serving.BodyLimit): header and body
timeouts, the open-file limit, rate-limited logs, security headers, the development reload
stream, and model loads tried again after a failure."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager

import anyio
import pytest
import uvicorn

from conftest import FakeClock
from demo import hardening, serving

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def hardened(**hardening_options):
    """A uvicorn server on 127.0.0.1 configured by harden_server; yields its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, log_level="warning"))
    server.config.load()
    hardening.harden_server(server.config, max_connections=64, **hardening_options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture()
def hardened_server():
    """Header timeout 0.5 s."""
    with hardened(header_timeout_s=0.5, keep_alive_s=5) as port:
        yield port


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_half_sent_headers_time_out_and_whole_requests_are_served(hardened_server):
    port = hardened_server
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    # Only the header timeout closes a connection whose head never ends (uvicorn's keep-alive
    # timer does not run while a request is arriving), so a bound far above 0.5 s still tells
    # it apart from no timeout, on a loaded machine too.
    assert closed_within(slow, 30)
    whole = socket.create_connection(("127.0.0.1", port))
    whole.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    whole.settimeout(3)
    response = b""
    while not response.endswith(b"\r\n\r\nok"):
        response += whole.recv(1024)
    assert response.startswith(b"HTTP/1.1 200")
    whole.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the next request on the same connection stalls too
    assert closed_within(whole, 30)


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 64, hard))
    try:
        raised, _ = hardening.raise_fd_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == hard or hard == resource.RLIM_INFINITY and raised >= 65536
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert hardening.connection_cap(1000, 1024) == 768 and hardening.connection_cap(1000, 100_000) == 1000


def test_repeated_log_lines_are_rate_limited_and_long_ones_cut():
    clock = FakeClock()
    limit = hardening.LogRateLimit(per_key=3, total=50, window_s=10, max_chars=100, clock=clock)
    records = [logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "accept failed: %s", ("too many open files",), None) for _ in range(1000)]
    assert sum(limit.filter(r) for r in records) == 3
    varied = [logging.LogRecord("x", logging.INFO, __file__, 1, f"message {i}", None, None) for i in range(200)]
    assert sum(limit.filter(r) for r in varied) == 50 - 3
    clock.now += 9.9
    assert not limit.filter(logging.LogRecord("x", logging.INFO, __file__, 1, "still the same window", None, None))
    clock.now += 0.1
    after = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("y" * 60_000,), None)
    assert limit.filter(after)
    message = after.getMessage()
    assert message.startswith("(1151 log lines left out in the last 10 s)") and "(60,000 characters)" in message and len(message) < 300
    assert sum(limit.filter(r) for r in records) == 3  # a new window counts afresh


async def call(app, method: str = "GET", path: str = "/", chunks=(), stall_s: float = 0.0):
    sent, messages = [], [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]

    async def receive():
        if messages:
            return messages.pop(0)
        await anyio.sleep(stall_s)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent


def test_a_stalled_body_is_answered_408():
    async def echo(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await hello(scope, receive, send)

    limit = serving.BodyLimit(echo, idle_timeout_s=0.2)
    sent = anyio.run(call, limit, "POST", "/gradio_api/queue/join", [b"{"], 5.0)
    assert sent[0]["status"] == 408 and b"too slow" in sent[1]["body"]
    assert anyio.run(call, limit, "POST", "/gradio_api/queue/join", [b"{}"], 0.0)[0]["status"] == 200


def test_security_headers_and_no_development_reload_stream(monkeypatch):
    monkeypatch.delenv("GRADIO_WATCH_DIRS", raising=False)
    app = hardening.SecurityHeaders(hello)
    headers = dict(anyio.run(call, app)[0]["headers"])
    assert headers[b"x-content-type-options"] == b"nosniff" and headers[b"referrer-policy"] == b"strict-origin-when-cross-origin"
    assert b"content-security-policy" not in headers and b"x-frame-options" not in headers  # Spaces frames the app
    assert anyio.run(call, app, "GET", "/gradio_api/dev/reload")[0]["status"] == 404
    framed = hardening.SecurityHeaders(hello, frame_ancestors="'self' https://huggingface.co")
    assert dict(anyio.run(call, framed)[0]["headers"])[b"content-security-policy"] == b"frame-ancestors 'self' https://huggingface.co"
    monkeypatch.setenv("GRADIO_WATCH_DIRS", "demo")
    assert anyio.run(call, app, "GET", "/gradio_api/dev/reload")[0]["status"] == 200


def test_a_model_that_failed_to_load_is_tried_again_later(tiny_config):
    from demo.catalogue import Catalogue
    from demo.engine import Engine
    from demo.failures import ModelUnavailable

    config, clock = tiny_config(model_retry_s=60), FakeClock()
    engine = Engine(config, Catalogue(config.weights_dir), clock=clock)
    load, attempts = engine.predictor.model, []

    def out_of_descriptors(name):
        attempts.append(name)
        if len(attempts) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return load(name)

    engine.predictor.model = out_of_descriptors
    with pytest.raises(ModelUnavailable, match="Too many open files"):
        engine.model("shapes", "unet")
    clock.now += 59.9
    with pytest.raises(ModelUnavailable):
        engine.model("shapes", "unet")  # remembered for a while: not tried again at once
    assert len(attempts) == 1
    clock.now += 0.1
    assert engine.model("shapes", "unet") is not None and len(attempts) == 2


def test_one_address_cannot_hold_every_connection():
    with hardened(header_timeout_s=30, per_address=5) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        for sock in held:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert all(closed_within(sock, 30) for sock in held[5:])
        # the server accepts in order and has now accepted all eight; only the 30 s header
        # timeout would close the first five
        assert not any(closed_within(sock, 0.5) for sock in held[:5])
        other = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
        other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        other.settimeout(3)
        assert other.recv(1024).startswith(b"HTTP/1.1 200")


class FakeTransport:
    def __init__(self, address: str):
        self.address, self.closed = address, False

    def get_extra_info(self, name, default=None):
        return {"peername": (self.address, 40000), "sockname": ("127.0.0.1", 7860)}.get(name, default)

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed


def test_a_connection_beyond_the_per_address_cap_never_counts_towards_the_server_cap():
    """uvicorn answers 503 once len(connections) reaches limit_concurrency: a refused
    connection must not enter that set, or one address reconnecting in a loop fills it."""
    config = uvicorn.Config(hello, log_level="warning")
    config.load()
    hardening.harden_server(config, max_connections=64, header_timeout_s=30, per_address=1)
    state, loop = uvicorn.server.ServerState(), asyncio.new_event_loop()
    try:
        kept, refused = (config.http_protocol_class(config=config, server_state=state, app_state={}, _loop=loop) for _ in range(2))
        kept_transport, refused_transport = FakeTransport("127.0.0.2"), FakeTransport("127.0.0.2")
        kept.connection_made(kept_transport)
        refused.connection_made(refused_transport)
        assert state.connections == {kept} and refused_transport.closed and not kept_transport.closed
        refused.connection_lost(None)
        assert kept.open_per_address == {"127.0.0.2": 1}
        kept.connection_lost(None)
        assert kept.open_per_address == {} and not state.connections
    finally:
        loop.close()


@pytest.mark.skipif(not hasattr(os, "setpriority") or not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_background_threads_give_way_to_requests():
    from demo.benchmarker import BACKGROUND_NICENESS, lower_thread_priority

    seen = []

    def background():
        lower_thread_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=background)
    thread.start()
    thread.join(10)
    assert seen == [BACKGROUND_NICENESS] and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != BACKGROUND_NICENESS
