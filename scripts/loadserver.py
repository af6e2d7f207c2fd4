"""The app under the load benchmark as a process (``scripts/load_test.py``): started and stopped
in its own process group on the loopback interface, its resident memory (children included)
sampled, its log read for tracebacks and long lines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


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
