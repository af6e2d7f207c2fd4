"""The launched app over HTTP: the queued ``compare`` endpoint through gradio_client, upload
limits, file serving, a full queue and a bounded load test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from conftest import REPO, FakeClock, build_fake_camvid, eventually
from demo import build_demo, launch_kwargs

ALL = ["unet", "unetpp", "unet3p", "deeplabv3p"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config):
    demo = build_demo(config)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    return demo, url.rstrip("/")


def compare_args(example: str = "shapes-1000", models=("unet", "deeplabv3p")) -> dict:
    return dict(example=example, image_file=None, mask_file=None, set_name="shapes", models=list(models), depth=4, opacity=0.5, api_name="/compare")


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def server(tiny_zoo):
    from demo import DemoConfig

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warmup=0, repeats=1, num_shapes_examples=4, shapes_size=64, rf_input_size=(64, 64), queue_max_size=64)
    demo, url = launch(config)
    yield url
    demo.close()


def test_compare_endpoint_through_gradio_client(server):
    client = Client(server, verbose=False, download_files=False)
    result = client.predict(**compare_args(models=ALL))
    status, legend, image, gt, *masks = result[:8]
    table = result[8]
    assert "4 of 4 models ran" in status
    assert [row[0] for row in table["data"]] == ["U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"]
    assert {"Model", "Latency (ms)", "mIoU (this image)", "mIoU (card, val set)"} <= set(table["headers"])
    assert all(mask is not None for mask in masks) and image is not None and gt is not None
    # Bad input through the API: a clear message, not a traceback.
    with pytest.raises(AppError, match="Choose at least one model"):
        client.predict(**compare_args(models=[]))


def test_compare_with_defaults_and_named_outputs(server):
    """The README's call: optional inputs have defaults (the page's initial choices), and the
    outputs have names, not value_26."""
    client = Client(server, verbose=False, download_files=False)
    result = client.predict(example="shapes-1001", api_name="/compare")
    assert "4 of 4 models ran" in result[0] and "Shapes #1001" in result[-1]
    returns = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]["returns"]
    assert [r["label"] for r in returns][:4] == ["Status", "Class colours", "Image", "Ground truth"]
    assert not [r["label"] for r in returns if r["label"].startswith("value_")]


def test_the_readme_client_example_runs(server, capsys):
    exec(compile(readme_client_code(server), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "4 of 4 models ran" in printed and "U-Net++ L4: mIoU" in printed and "/compare" in printed


def readme_client_code(url: str) -> str:
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Calling the dashboard from Python\n"):readme.index("## The library\n")]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code.replace("http://127.0.0.1:7860/", url)


@pytest.mark.parametrize("camvid", ["fake", "real"])
def test_the_readme_example_on_a_server_that_opens_on_camvid(camvid, request, tiny_zoo, tmp_path, capfd, caplog):
    """With CamVid configured the page opens on the CamVid set, yet the README's call, which
    names a Shapes example and no set, runs the Shapes models on it with its ground truth
    (fake: a tiny CamVid model and folder; real: the shipped zoo and $SEGMODELS_CAMVID). A bad
    value is refused with its reason, one line in the log and no traceback."""
    from demo import DemoConfig

    if camvid == "fake":
        root, weights = build_fake_camvid(tmp_path / "camvid", tmp_path / "weights", tiny_zoo, tmp_path / "run")
        config = DemoConfig(weights_dir=weights, camvid_dir=root, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=2, shapes_size=64)
    else:
        config = DemoConfig(camvid_dir=request.getfixturevalue("camvid_root"), device="cpu", torch_threads=1, warm_up=False)
    demo, url = launch(config)
    try:
        assert demo.dashboard.choices.default_set() == "camvid"
        exec(compile(readme_client_code(url), "README.md", "exec"), {})
        printed = capfd.readouterr().out
        ran = "U-Net: mIoU" if camvid == "fake" else "U-Net++ L4: mIoU"  # the models the page starts with: the fake CamVid set has U-Net only
        assert "Shapes #1000" in printed and ran in printed and "mIoU nan" not in printed, printed
        client = Client(url, verbose=False, download_files=False)
        assert "Shapes #1000" in client.predict(example="shapes-1000", set_name="shapes", api_name="/compare")[0]
        capfd.readouterr()
        with caplog.at_level("WARNING", logger="demo"):
            for bad, reason in ((dict(example="shapes-99999"), "Unknown example"), (dict(example="shapes-1000", set_name="mars"), "Unknown model set"),
                                (dict(example="shapes-1000", models=["segformer"]), "Unknown model")):
                caplog.clear()
                with pytest.raises(AppError, match=reason):
                    client.predict(**bad, api_name="/compare")
                logged = [record.getMessage() for record in caplog.records]
                assert len(logged) == 1 and reason in logged[0], logged
        assert "Traceback" not in capfd.readouterr().err
    finally:
        demo.close()


def test_only_compare_is_exposed_and_the_queue_cannot_be_skipped(server):
    client = Client(server, verbose=False, download_files=False)
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/compare"]
    direct = httpx.post(f"{server}/gradio_api/api/compare/", json={"data": ["shapes-1000", None, None, "shapes", ["unet"], 4, 0.5, None]}, timeout=10)
    assert direct.status_code != 200


def test_oversized_upload_is_refused(server):
    files = {"files": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * (11 * 2**20), "image/png")}
    response = httpx.post(f"{server}/gradio_api/upload", files=files, timeout=30)
    assert response.status_code == 413
    small = httpx.post(f"{server}/gradio_api/upload", files={"files": ("small.png", b"\x89PNG\r\n\x1a\n", "image/png")}, timeout=10)
    assert small.status_code == 200


@pytest.mark.parametrize("path", [
    "/file=/etc/passwd",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file=../app.py",
    "/gradio_api/file=..%2Fapp.py",
    "/gradio_api/file=%2e%2e%2fapp.py",
    "/gradio_api/file=%252e%252e%252fapp.py",
    "/gradio_api/file=" + os.path.abspath("app.py"),
    "/gradio_api/file=assets/../app.py",
    "/gradio_api/file=" + os.path.abspath("assets") + "/../app.py",
    "/gradio_api/file=" + os.path.abspath("demo/config.py"),
    "/static/../../app.py",
    "/assets/..%2f..%2fapp.py",
])
def test_no_file_outside_the_assets_is_served(server, path):
    response = httpx.get(server + path, timeout=10)
    leaked = "root:x:0:0" in response.text or "def main(" in response.text or "class DemoConfig" in response.text
    assert response.status_code != 200 or not leaked, (path, response.status_code)
    assert not leaked


def test_a_greedy_address_cannot_take_the_server(tiny_zoo):
    """A client at 127.0.0.2 floods /call/compare without reading a result while a student at
    127.0.0.1 presses Run: their Run is served after the job that was running and one more
    of the greedy address (the scheduler takes the addresses in turn), not after the flood; the flood beyond the
    per-address bound is refused with a message, and beyond the API burst with 429 before
    Gradio opens a session for it; oversized bodies are refused before Gradio."""
    from demo import DemoConfig

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=2, shapes_size=64, jobs_per_address=5)
    demo = build_demo(config)
    engine, scheduler = demo.dashboard.engine, demo.dashboard.scheduler
    original, order, student_waits = engine.run_models, [], threading.Event()

    def held_until_the_student_waits(set_name, archs, image, *args, **kwargs):
        order.append("student" if image.mean() == student_image_mean else "greedy")
        student_waits.wait(60)
        yield from original(set_name, archs, image, *args, **kwargs)

    engine.run_models = held_until_the_student_waits
    student_image_mean = demo.dashboard.images.current("shapes-1000", None, None, "shapes").image.mean()
    # a clock that stands still: no API call is refilled while the flood arrives, however slowly
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config, clock=FakeClock()))
    try:
        greedy = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
        client = Client(url, verbose=False, download_files=False)
        flood = [greedy.post("/gradio_api/call/compare", json={"data": ["shapes-1001", None, None, "shapes", ["unet"], 4, 0.5, None]}) for _ in range(12)]
        assert [r.status_code for r in flood] == [200] * config.api_burst + [429] * (12 - config.api_burst)
        assert "too many API calls from your address" in flood[-1].text and flood[-1].headers["retry-after"] == "1"
        flood = flood[:config.api_burst]
        eventually(lambda: order == ["greedy"] and scheduler.waiting("127.0.0.2") == config.jobs_per_address, what="one greedy job running and five waiting")
        with ThreadPoolExecutor(max_workers=1) as pool:
            result = pool.submit(client.predict, **compare_args(models=["unet"]))
            eventually(lambda: scheduler.waiting("127.0.0.1") == 1, what="the student's Run waiting")
            student_waits.set()
            assert "1 of 1 models ran" in result.result(timeout=60)[0]
        assert order[:3] == ["greedy", "greedy", "student"], order  # after the running job, one turn each address: not after the flood
        refused = [greedy.get(f"/gradio_api/call/compare/{r.json()['event_id']}", timeout=10).text for r in flood[-3:]]
        assert all("from your network address" in text for text in refused), refused
        big = httpx.post(f"{url}/gradio_api/call/compare", json={"data": ["shapes-1000", None, None, "shapes", ["unet"] * 500_000, 4, 0.5, None]}, timeout=10)
        assert big.status_code == 413 and len(big.text) < 200
    finally:
        student_waits.set()
        demo.close()


@pytest.mark.slow
def test_bounded_load_without_memory_growth(server):
    """20 concurrent clients, 5 rounds of compare each: every request succeeds or is told that
    the queue is full; after the first round (model loading, caches) the process grows by at
    most 80 MB over the next three rounds."""
    clients = [Client(server, verbose=False, download_files=False) for _ in range(20)]
    examples = ["shapes-1000", "shapes-1001", "shapes-1002", "shapes-1003"]

    def one(i: int) -> str:
        try:
            result = clients[i].predict(**compare_args(example=examples[i % len(examples)]))
            return "ok" if "2 of 2 models ran" in result[0] else f"bad result {result[0]!r}"
        except QueueError:
            return "full"
        except Exception as error:  # noqa: BLE001 - counted as a failure below
            return f"error {type(error).__name__}: {error}"

    memory = []
    with ThreadPoolExecutor(max_workers=20) as pool:
        for round_number in range(5):
            started = time.perf_counter()
            outcomes = list(pool.map(one, range(20)))
            assert all(o in ("ok", "full") for o in outcomes), [o for o in outcomes if o not in ("ok", "full")]
            assert outcomes.count("ok") >= 1
            memory.append(rss_mb())
            print(f"load round {round_number + 1}: {outcomes.count('ok')} ok, {outcomes.count('full')} queue full, "
                  f"{time.perf_counter() - started:.1f} s, server RSS {memory[-1]:.0f} MB")
    assert memory[-1] <= memory[1] + 80, memory


def test_api_jobs_nobody_reads_are_dropped(tiny_zoo):
    """/call jobs whose results are never read are dropped when their turn comes (after a
    grace period), so a client that went away costs the others nothing; a read one runs."""
    from demo import DemoConfig

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=2, shapes_size=64, result_grace_s=10)
    demo = build_demo(config)
    engine, scheduler, clock = demo.dashboard.engine, demo.dashboard.scheduler, FakeClock()
    original, ran, released = engine.run_models, [], threading.Event()

    def held_until_released(*args, **kwargs):
        ran.append(1)
        released.wait(60)
        yield from original(*args, **kwargs)

    engine.run_models = held_until_released
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config, clock=clock))
    try:
        data = {"data": ["shapes-1001", None, None, "shapes", ["unet"], 4, 0.5, None]}
        unread = [httpx.post(f"{url.rstrip('/')}/gradio_api/call/compare", json=data, timeout=10) for _ in range(8)]
        assert all(r.status_code == 200 for r in unread), [(r.status_code, r.text[:100]) for r in unread]
        eventually(lambda: len(ran) == 1 and scheduler.waiting() == 7, what="one unread job running and seven waiting")
        clock.now += config.result_grace_s
        released.set()
        client = Client(url, verbose=False, download_files=False)
        assert "1 of 1 models ran" in client.predict(**compare_args(models=["unet"]))[0]
        assert len(ran) == 2, len(ran)  # the job running when the grace period ended, and the read one
    finally:
        released.set()
        demo.close()


def test_uploads_never_outlive_a_restart(tmp_path, monkeypatch):
    """app.py gives each server its own upload folder and empties it at start-up, so files
    left by a killed server are gone after a restart; no other folder is touched."""
    import app

    monkeypatch.setenv("SEGMODELS_UPLOAD_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", os.environ.get("GRADIO_TEMP_DIR", ""))  # restored afterwards
    monkeypatch.setenv("SEGMODELS_OWN_UPLOAD_DIR", "")
    neighbour = tmp_path / "other-app" / "keep.png"
    neighbour.parent.mkdir()
    neighbour.write_bytes(b"x")
    root = app.fresh_upload_dir(7860)
    left_behind = root / "abc123" / "photo.png"
    left_behind.parent.mkdir()
    left_behind.write_bytes(b"\x89PNG")
    assert app.fresh_upload_dir(7860) == root and not any(root.iterdir())
    assert os.environ["GRADIO_TEMP_DIR"] == os.environ["SEGMODELS_OWN_UPLOAD_DIR"] == str(root) and neighbour.exists()


def test_a_closed_tab_deletes_its_uploads(tmp_path):
    from demo.serving import delete_uploads

    root = tmp_path / "uploads"
    mine = root / "h1" / "photo.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"x")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x")
    assert delete_uploads({str(mine), str(outside), str(root / "missing.png")}, root) == 1
    assert not mine.exists() and not mine.parent.exists() and outside.exists()


@pytest.mark.slow
def test_a_bad_setting_stops_the_app_with_a_message_not_a_traceback(tmp_path):
    env = {**os.environ, "SEGMODELS_BACKEND": "tensorrt", "SEGMODELS_UPLOAD_DIR": str(tmp_path / "uploads")}
    done = subprocess.run([sys.executable, "app.py", "--port", "7999"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "app.py: backend (SEGMODELS_BACKEND) must be one of auto, torch, torch-bf16, onnxruntime, got 'tensorrt'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_run_whose_images_gradio_cannot_cache_leaves_the_device_free(tiny_zoo, monkeypatch):
    """When Gradio fails to copy a Run's first images into its cache, the Run ends with an
    error and the device is free again within the hand-off time: the next Run works."""
    import errno

    from gradio import processing_utils

    from demo import DemoConfig

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=2, shapes_size=64, stream_handoff_s=1.0)
    demo, url = launch(config)
    scheduler, benchmarker = demo.dashboard.scheduler, demo.dashboard.engine.benchmarker
    copy, failures = processing_utils.save_file_to_cache, []

    def failing_copy(path, cache_dir):
        if not failures or len(failures) < 3:
            failures.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(path, cache_dir)

    try:
        client = Client(url, verbose=False, download_files=False)
        monkeypatch.setattr(processing_utils, "save_file_to_cache", failing_copy)
        with pytest.raises(AppError):
            client.predict(**compare_args(models=["unet"]))
        assert failures
        eventually(lambda: not scheduler.busy and benchmarker._active == 0, what="the device turn given back")
        monkeypatch.setattr(processing_utils, "save_file_to_cache", copy)
        assert "1 of 1 models ran" in client.predict(**compare_args(models=["unet"]))[0]
    finally:
        demo.close()


@pytest.mark.slow
def test_the_served_app_is_hardened(tiny_zoo):
    """``demo.serve`` (what app.py runs): security headers, no development reload stream, the
    server's header timeout and connection cap in place, and the page still loads."""
    import socket as sockets

    from demo import DemoConfig, serve
    from demo.hardening import HeaderTimeoutH11

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=2, shapes_size=64, header_timeout_s=1.0, max_connections=300)
    demo = build_demo(config)
    url = serve(demo, config, "127.0.0.1", free_port(), block=False, quiet=True).rstrip("/")
    try:
        server = demo.server.config
        assert issubclass(server.http_protocol_class, HeaderTimeoutH11) and server.limit_concurrency == 300
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and page.headers["x-content-type-options"] == "nosniff" and "x-frame-options" not in page.headers
        assert httpx.get(url + "/gradio_api/dev/reload", timeout=10).status_code == 404
        host, port = url.removeprefix("http://").split(":")
        slow = sockets.create_connection((host, int(port)))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(5)
        assert slow.recv(100) == b""
    finally:
        demo.close()
