"""A real browser (Debian's headless Chromium through Playwright; no browser is ever
downloaded) on a desktop (1440x900) and a phone (390x844): the dashboard runs, fits the
screen, keeps every tab reachable and readable, never shows one image's results beside
another, and keeps its error messages on screen."""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from segmodels.data import render_shapes

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
DESKTOP = dict(viewport={"width": 1440, "height": 900})
PHONE = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
SIZE = 96  # the examples' side
TABS = ["Compare", "U-Net++ pruning", "Receptive field", "Losses and IoU", "Semantic vs instance"]
TAB_DONE = {"U-Net++ pruning": r"pruned to depths", "Receptive field": r"largest theoretical receptive field", "Losses and IoU": r"labelled pixels",
            "Semantic vs instance": r"ndimage\.label\) of"}

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (/usr/bin/chromium); install it with scripts/install_chromium.sh"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_zoo):
    from demo import DemoConfig, build_demo, launch_kwargs

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warmup=0, repeats=1, num_shapes_examples=3, shapes_size=SIZE, rf_input_size=(64, 64))
    demo = build_demo(config)
    _, local_url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo
    demo.close()


@pytest.fixture
def url(server):
    return server.local_url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url, device: dict):
    page = browser.new_page(**device)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#current-image").get_by_text("Current image:").wait_for(timeout=30_000)
    return page, errors


def horizontal_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def image_mean(page, selector: str) -> float:
    """The mean pixel value of a shown image, read back through a canvas."""
    return page.locator(selector).first.evaluate("""img => {
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let sum = 0;
        for (let i = 0; i < data.length; i += 4) sum += data[i] + data[i + 1] + data[i + 2];
        return sum / (canvas.width * canvas.height * 3);
    }""")


def test_compare_on_a_desktop(browser, url):
    page, errors = open_page(browser, url, DESKTOP)
    try:
        page.get_by_role("button", name="Run the models").click()
        page.get_by_text("4 of 4 models ran").wait_for(timeout=60_000)
        table = page.locator("#compare-table")
        for name in ("U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"):
            assert table.get_by_text(name, exact=True).count() >= 1, name
        assert table.get_by_text("Latency (ms)").count() >= 1 and table.get_by_text("mIoU (card, val set)").count() >= 1
        for arch in ("unet", "unetpp", "unet3p", "deeplabv3p"):
            mask = page.locator(f"#mask-{arch} img").first
            mask.wait_for(timeout=10_000)
            assert mask.get_attribute("src")
        # The comparison table fits at 1440 px: every column visible without scrolling.
        scroller = table.locator("table").first.evaluate("t => { let e = t; while (e && e.scrollWidth <= e.clientWidth + 1 && e.parentElement) e = e.parentElement; return e === document.documentElement ? 0 : (e ? e.scrollWidth - e.clientWidth : 0); }")
        assert scroller <= 1, f"the table scrolls sideways by {scroller} px"
        # The scatter's legend names every model, inside the chart's box.
        scatter = page.locator("#compare-scatter")
        legend = scatter.locator(".legend .traces")
        legend.nth(3).wait_for(state="attached", timeout=10_000)  # Plotly draws after the value arrives
        assert legend.count() == 4 and {legend.nth(i).text_content().strip() for i in range(4)} == {"U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"}
        box, legend_box = scatter.bounding_box(), scatter.locator(".legend").bounding_box()
        assert box["y"] <= legend_box["y"] and legend_box["y"] + legend_box["height"] <= box["y"] + box["height"] + 1
        assert horizontal_overflow(page) <= 0 and page.get_by_text("Traceback").count() == 0

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
        assert not errors, errors
    finally:
        page.close()


def test_every_tab_is_reachable_and_readable_on_a_phone(browser, url):
    page, errors = open_page(browser, url, PHONE)
    try:
        assert page.locator(".overflow-menu:visible").count() == 0  # no tab hidden behind a "..." button
        for title in TABS:
            tab = page.get_by_role("tab", name=title, exact=True)
            assert tab.is_visible(), title
            box = tab.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (title, box)
            tab.click()
            if title in TAB_DONE:
                page.get_by_text(re.compile(TAB_DONE[title])).first.wait_for(timeout=60_000)
            else:
                page.get_by_role("button", name="Run the models").click()
                page.get_by_text("models ran on").wait_for(timeout=60_000)
            time.sleep(0.5)
            assert horizontal_overflow(page) <= 0, title
            widths = page.locator("[role='tabpanel']:visible .prose").evaluate_all(
                "nodes => nodes.filter(n => n.innerText.trim().length > 60 && n.offsetParent !== null).map(n => [Math.round(n.getBoundingClientRect().width), n.innerText.trim().slice(0, 40)])")
            assert widths, title
            narrow = [(width, text) for width, text in widths if width < 300]
            assert not narrow, (title, narrow)
        assert not errors, errors
    finally:
        page.close()


def test_a_thumbnail_tapped_right_after_the_menu_shows_the_image_the_models_ran_on(browser, server, monkeypatch):
    """Close the example menu with Escape, tap a thumbnail at once, press Run: the menu, the
    "Current image" line, the status and the image shown all name the image the models ran on,
    even when the first image's preview is slow (so it finishes after the others started)."""
    app = server.dashboard
    resolve = app.current_image

    def slow_for_the_first_example(example, *args, **kwargs):
        if example == "shapes-1000":
            time.sleep(0.8)
        return resolve(example, *args, **kwargs)

    page, errors = open_page(browser, server.local_url, PHONE)
    monkeypatch.setattr(app, "current_image", slow_for_the_first_example)
    try:
        page.locator("#example input").first.click()
        page.keyboard.press("Escape")
        page.locator("#examples button").nth(2).tap()
        page.wait_for_function("() => document.querySelector('#example input').value === 'Shapes #1002'", timeout=30_000)
        page.get_by_role("button", name="Run the models").tap()
        page.get_by_text("models ran on").wait_for(timeout=60_000)
        time.sleep(1.0)  # any late preview would land now
        label = "Shapes #1002"
        assert page.locator("#example input").first.input_value() == label
        assert label in page.locator("#current-image").inner_text()
        assert label in page.locator("#compare-status").inner_text()
        means = {seed: render_shapes(seed, 0, SIZE)[0].astype(np.float64).mean() for seed in (1000, 1001, 1002)}
        shown = image_mean(page, "#input-image img")
        assert min(means, key=lambda seed: abs(means[seed] - shown)) == 1002 and abs(shown - means[1002]) < 1.0, (shown, means)  # WebP shifts it a little
        page.get_by_role("tab", name="Receptive field", exact=True).click()
        assert page.get_by_text(f"Click a pixel of {label}").count() >= 1
        assert not errors, errors
    finally:
        page.close()


def test_an_error_message_stays_readable(browser, url):
    page, errors = open_page(browser, url, DESKTOP)
    try:
        for checkbox in page.get_by_role("checkbox").all():
            if checkbox.is_checked():
                checkbox.uncheck()
        page.get_by_role("button", name="Run the models").click()
        inline = page.locator("#compare-status .inline-error").get_by_text("Choose at least one model to run.")
        inline.wait_for(timeout=30_000)  # beside the button
        toast = page.get_by_text("Choose at least one model to run.").last
        toast.wait_for(timeout=30_000)
        time.sleep(11)  # longer than Gradio's default toast (10 s)
        assert toast.is_visible() and inline.is_visible()
        # A broken upload: the reason replaces the "Current image" line and stays there.
        page.get_by_text("…or upload your own image").click()
        page.locator("#image-upload input[type='file']").set_input_files(files=[{"name": "holiday.png", "mimeType": "image/png", "buffer": b"%PDF-1.7 not an image"}])
        page.locator("#current-image .inline-error").get_by_text(re.compile("not a supported image")).wait_for(timeout=30_000)
        assert not errors, errors
    finally:
        page.close()


def test_inside_the_network_and_the_loss_lab_on_a_phone(browser, url):
    """The two views of issue 13 in a real browser on a phone: "Look inside" runs and shows its
    summary of the graph (the figure itself is checked in tests/test_inside_tab.py); the Loss lab shows its formulas and precomputed verdict and runs a live
    training whose closing note (per-class IoU) arrives; nothing overflows sideways."""
    page, errors = open_page(browser, url, PHONE)
    try:
        page.get_by_role("tab", name="Inside the network", exact=True).click()
        page.get_by_role("button", name="Look inside").tap()
        summary = page.get_by_text(re.compile(r"nodes run at inference"))
        summary.wait_for(timeout=60_000)
        assert re.search(r"10 of 10 nodes run", summary.inner_text())  # U-Net, the first architecture
        assert horizontal_overflow(page) <= 1
        page.get_by_role("tab", name="Loss lab", exact=True).click()
        page.get_by_text("weighted focal", exact=False).first.wait_for(timeout=30_000)
        assert page.get_by_text(re.compile(r"median-frequency")).count() >= 1  # the precomputed verdict names the loss that helps
        page.get_by_role("button", name=re.compile(r"Train for ~")).tap()
        page.get_by_text(re.compile(r"Finished .* after \d+ steps")).wait_for(timeout=120_000)
        assert page.get_by_text(re.compile(r"Per-class IoU reached")).count() >= 1
        assert horizontal_overflow(page) <= 1
        assert not errors, errors
    finally:
        page.close()
