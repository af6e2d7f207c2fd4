"""Uploads on disk (demo/uploads.py) through Gradio's own upload route: nothing left by a
refused, aborted or slow upload, at most two files a request, a cap on what is kept, and a
message when the disk or the folder cannot take a file."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import anyio
import gradio as gr
import pytest
from gradio.routes import App as GradioApp
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from conftest import REPO
from demo import serving, uploads

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
PART = b'--b\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\nContent-Type: image/png\r\n\r\n'
MULTIPART = {"content-type": "multipart/form-data; boundary=b"}


def multipart(*names: str, size: int = 100) -> bytes:
    return b"".join(PART % name.encode() + b"0" * size + b"\r\n" for name in names) + b"--b--\r\n"


def left_in(folder: Path) -> list[str]:
    """What the uploads left: files anywhere in the folder (Gradio's own bookkeeping aside)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "vibe_edit_history" not in p.parts)


@pytest.fixture()
def upload_app(tmp_path, monkeypatch):
    """Gradio's app with the dashboard's upload middlewares; returns (client, folder, guard maker)."""
    folder = tmp_path / "uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    kept = uploads.UploadFolder(lambda: folder, cap_bytes=2**20, max_upload_s=60)

    def make(**options):
        with gr.Blocks() as blocks:
            gr.File()
        blocks.max_file_size = None
        guard = {"folder": kept, "max_files": 2, "max_bytes": 3000, "reserve_bytes": 0, **options}
        app = GradioApp.create_app(blocks, app_kwargs={"middleware": [Middleware(uploads.UploadGuard, **guard), Middleware(serving.BodyLimit, max_body=1000, max_upload=3000)]})
        return TestClient(app)

    return make, folder


def test_a_chunked_upload_refused_for_its_size_leaves_nothing(upload_app):
    make, folder = upload_app
    client = make()

    def chunked():
        yield PART % b"big.png"
        for _ in range(10):
            yield b"0" * 1000

    for _ in range(20):
        response = client.post("/gradio_api/upload", content=chunked(), headers=MULTIPART)
        assert response.status_code == 413 and "at most 3000 bytes" in response.json()["error"]
    assert left_in(folder) == []
    accepted = client.post("/gradio_api/upload", content=multipart("ok.png"), headers=MULTIPART)
    assert accepted.status_code == 200 and left_in(folder) == [str(Path(accepted.json()[0]).relative_to(folder))]


def test_a_chunked_body_above_the_limit_is_413_not_400(upload_app):
    make, _ = upload_app
    client = make()
    response = client.post("/gradio_api/queue/join", content=iter([b"{" + b" " * 600, b" " * 600]), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "at most 1000 bytes" in response.json()["error"]


def test_at_most_two_files_a_request(upload_app):
    make, folder = upload_app
    client = make()
    response = client.post("/gradio_api/upload", content=multipart("a.png", "b.png", "c.png"), headers=MULTIPART)
    assert response.status_code == 413 and "at most 2 a request" in response.json()["error"]
    assert left_in(folder) == []
    two = client.post("/gradio_api/upload", content=multipart("a.png", "b.png"), headers=MULTIPART)
    assert two.status_code == 200 and len(two.json()) == 2


def test_an_aborted_or_slow_upload_leaves_nothing(upload_app):
    make, folder = upload_app
    app = make(idle_timeout_s=0.2).app
    body = PART % b"half.png" + b"0" * 500

    async def post(then: str) -> list[dict]:
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": True}]

        async def receive():
            if messages:
                return messages.pop()
            if then == "disconnect":
                return {"type": "http.disconnect"}
            await anyio.sleep(60)  # a client that stops sending: only the idle timeout ends its request with 408
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "raw_path": b"/gradio_api/upload", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"host", b"test")], "client": ("127.0.0.1", 5000), "server": ("test", 80), "scheme": "http", "http_version": "1.1"}
        await app(scope, receive, send)
        return sent

    for then in ("disconnect", "stall"):
        sent = anyio.run(post, then)
        assert left_in(folder) == [], then
        if then == "stall":
            assert sent[0]["status"] == 408


def test_a_full_disk_or_an_unwritable_folder_gets_a_message_and_other_requests_go_on(upload_app):
    make, folder = upload_app
    client = make(reserve_bytes=10 * 2**40)  # more than any disk has free
    response = client.post("/gradio_api/upload", content=multipart("a.png"), headers=MULTIPART)
    assert response.status_code == 507 and "disk is almost full" in response.json()["error"] and "examples still work" in response.json()["error"]
    assert client.get("/gradio_api/info").status_code != 507

    folder.parent.joinpath("not-a-folder").write_text("x")
    unwritable = make(folder=uploads.UploadFolder(lambda: folder.parent / "not-a-folder", cap_bytes=2**20, max_upload_s=60))
    response = unwritable.post("/gradio_api/upload", content=multipart("a.png"), headers=MULTIPART)
    assert response.status_code == 507 and "cannot write its upload folder" in response.json()["error"]


def test_an_error_while_gradio_writes_is_507_with_a_message(tmp_path):
    async def full_disk(scope, receive, send):
        await receive()
        raise OSError(errno.ENOSPC, "No space left on device")

    folder = uploads.UploadFolder(lambda: tmp_path, cap_bytes=2**20, max_upload_s=60)  # its sweeper deletes files there: never a shared folder
    client = TestClient(uploads.UploadGuard(full_disk, folder, reserve_bytes=0))
    response = client.post("/gradio_api/upload", content=multipart("a.png"), headers=MULTIPART)
    assert response.status_code == 507 and "could not store the file" in response.json()["error"]


def test_kept_files_stay_under_the_cap_oldest_first(tmp_path):
    folder = uploads.UploadFolder(lambda: tmp_path, cap_bytes=2500, max_upload_s=60)
    now = time.time()
    for age, name in ((300, "oldest"), (200, "older"), (100, "recent"), (0, "newest")):
        path = tmp_path / name / f"{name}.png"
        path.parent.mkdir()
        path.write_bytes(b"0" * 1000)
        os.utime(path, (now - age, now - age))
    assert folder.enforce_cap() == 2000
    assert left_in(tmp_path) == ["newest/newest.png", "recent/recent.png"]
    assert not (tmp_path / "oldest").exists()
    assert not folder.accepted(400) and folder.accepted(600)


def test_orphaned_temp_files_are_swept_only_when_no_upload_can_own_them(tmp_path):
    folder = uploads.UploadFolder(lambda: tmp_path, cap_bytes=2**20, max_upload_s=60)
    (tmp_path / "tmpfresh").write_bytes(b"")
    (tmp_path / "tmpstale").write_bytes(b"")
    os.utime(tmp_path / "tmpstale", (time.time() - 61, time.time() - 61))
    (tmp_path / "keep.txt").write_bytes(b"")
    folder.sweep()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "tmpfresh"]
    assert folder.remove_orphans() == 1


def test_shown_image_folders_of_stopped_servers_are_removed_at_start(tmp_path, monkeypatch):
    import subprocess
    import sys

    from demo import files

    monkeypatch.setattr(files.tempfile, "gettempdir", lambda: str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f"segmodels-shown-{gone.stdout.strip()}"
    (stale / "sub").mkdir(parents=True)
    alive = tmp_path / f"segmodels-shown-{os.getppid()}"
    alive.mkdir()
    shown = files.ImageFiles()
    assert not stale.exists() and alive.exists()
    assert shown.folder == tmp_path / f"segmodels-shown-{os.getpid()}"


@pytest.mark.slow
def test_a_stopped_server_leaves_no_folder(tiny_zoo, tmp_path):
    """``kill`` (SIGTERM) stops app.py as Ctrl-C does: its upload folder and its shown-images
    folder are removed."""
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SEGMODELS_UPLOAD_DIR": str(tmp_path / "uploads"), "TMPDIR": str(tmp_path), "SEGMODELS_THREADS": "1", "SEGMODELS_WARMUP": "0", "SEGMODELS_REPEATS": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--weights", str(tiny_zoo)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        upload = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}, timeout=10)
        assert upload.status_code == 200
        assert (tmp_path / "uploads").is_dir() and list(tmp_path.glob("segmodels-shown-*"))
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) is not None
    finally:
        server.kill()
    assert not (tmp_path / "uploads").exists()
    assert not list(tmp_path.glob("segmodels-shown-*")), list(tmp_path.iterdir())


def test_a_closed_tab_keeps_a_file_another_open_tab_uploaded_too(tiny_config, tmp_path, monkeypatch):
    """Two students uploading the same photo get the same path (Gradio names it by content):
    the first to close its tab must not delete the other's image."""
    import asyncio
    from types import SimpleNamespace

    from demo.core import App

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    photo = tmp_path / "0123abcd" / "photo.png"
    photo.parent.mkdir()
    photo.write_bytes(b"\x89PNG")
    app = App(tiny_config())
    app.uploads.remember("tab-a", str(photo))
    app.uploads.remember("tab-b", str(photo))
    asyncio.run(app.session_ended(SimpleNamespace(session_hash="tab-a")))
    assert photo.exists()
    asyncio.run(app.session_ended(SimpleNamespace(session_hash="tab-b")))
    assert not photo.exists()


def test_a_folder_shared_with_other_apps_is_never_swept(tmp_path, monkeypatch):
    stale = tmp_path / "tmpother"
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SEGMODELS_OWN_UPLOAD_DIR", raising=False)
    folder = uploads.UploadFolder(uploads.own_upload_folder, cap_bytes=1, max_upload_s=60)
    folder.sweep()
    assert stale.exists()
    monkeypatch.setenv("SEGMODELS_OWN_UPLOAD_DIR", str(tmp_path))
    folder.sweep()
    assert not stale.exists()
