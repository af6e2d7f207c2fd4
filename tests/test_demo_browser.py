"""A real browser (Debian's headless Chromium through Playwright; no browser is ever
downloaded) opens the dashboard, runs an example through Compare and sees the table and
the masks."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (/usr/bin/chromium); install it with scripts/install_chromium.sh"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(tiny_zoo):
    from demo import DemoConfig, build_demo, launch_kwargs

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warmup=0, repeats=1, num_shapes_examples=3, shapes_size=96, rf_input_size=(64, 64))
    demo = build_demo(config)
    _, local_url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield local_url
    demo.close()


def test_compare_in_a_real_browser(url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, wait_until="domcontentloaded")
            # The default example is shown as soon as the page loads.
            page.locator("#input-image img").first.wait_for(timeout=30_000)
            page.get_by_role("button", name="Run the models").click()
            page.get_by_text("4 of 4 models ran").wait_for(timeout=60_000)
            table = page.locator("#compare-table")
            for name in ("U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"):
                assert table.get_by_text(name, exact=True).count() >= 1, name
            assert table.get_by_text("Latency (ms)").count() >= 1
            for arch in ("unet", "unetpp", "unet3p", "deeplabv3p"):
                mask = page.locator(f"#mask-{arch} img").first
                mask.wait_for(timeout=10_000)
                assert mask.get_attribute("src")
            assert page.get_by_text("Traceback").count() == 0
            shot = tmp_path / "compare.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            # Opening a tab fills it for the current image, without pressing its button.
            page.get_by_role("tab", name="Losses and IoU").click()
            page.get_by_text(re.compile(r"N = \d+ labelled pixels")).wait_for(timeout=30_000)
            page.get_by_text(re.compile(r"Green TP = \d+, red FP = \d+, blue FN = \d+")).wait_for(timeout=30_000)

            # Receptive field: a click on the (enlarged) image picks that pixel of the 96 px image.
            page.get_by_role("tab", name="Receptive field").click()
            target = page.locator("#rf-click-image img").first
            target.scroll_into_view_if_needed()
            box = target.bounding_box()
            natural_w, natural_h = target.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            shown = min(box["width"] / natural_w, box["height"] / natural_h, 1.0)  # object-fit: scale-down, centred
            left = (box["width"] - natural_w * shown) / 2
            top = (box["height"] - natural_h * shown) / 2
            target.click(position={"x": left + natural_w * shown * 0.25, "y": top + natural_h * shown * 0.75})
            note = page.get_by_text(re.compile(r"Effective receptive field of output pixel \(row \d+, column \d+\)"))
            note.wait_for(timeout=60_000)
            row, col = map(int, re.search(r"row (\d+), column (\d+)", note.inner_text()).groups())
            assert abs(row - 72) <= 2 and abs(col - 24) <= 2, (row, col)
            page.screenshot(path=str(tmp_path / "receptive_field.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
