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

from conftest import eventually
from segmodels.data import render_shapes

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
DESKTOP = dict(viewport={"width": 1440, "height": 900})
NARROW_DESKTOP = dict(viewport={"width": 1280, "height": 800})
PHONE = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
SIZES = {"desktop-1280": NARROW_DESKTOP, "phone": PHONE}
SIZE = 96  # the examples' side
TABS = ["Compare", "U-Net++ pruning", "Receptive field", "Losses and IoU", "Semantic vs instance"]
TAB_DONE = {"U-Net++ pruning": r"pruned to depths", "Receptive field": r"largest theoretical receptive field", "Losses and IoU": r"labelled pixels",
            "Semantic vs instance": r"ndimage\.label\) of"}

pytestmark = [
    pytest.mark.slow,
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

    config = DemoConfig(weights_dir=tiny_zoo, camvid_dir=None, device="cpu", torch_threads=1, warmup=0, repeats=1, num_shapes_examples=8, shapes_size=SIZE, rf_input_size=(64, 64))
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
        assert table.get_by_text("Latency (ms)").count() >= 1 and table.get_by_text("mIoU (card, val set)").count() >= 1 and table.get_by_text("GFLOPs").count() >= 1
        for arch in ("unet", "unetpp", "unet3p", "deeplabv3p"):
            mask = page.locator(f"#mask-{arch} img").first
            mask.wait_for(timeout=10_000)
            assert mask.get_attribute("src")
        # The comparison table fits at 1440 px: every column visible without scrolling.
        scroller = table.locator("table").first.evaluate("t => { let e = t; while (e && e.scrollWidth <= e.clientWidth + 1 && e.parentElement) e = e.parentElement; "
            "return e === document.documentElement ? 0 : (e ? e.scrollWidth - e.clientWidth : 0); }")
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
            eventually(lambda: horizontal_overflow(page), lambda wide: wide <= 0, what=f"{title}: the page scrolls sideways by")
            widths = eventually(lambda: page.locator("[role='tabpanel']:visible .prose").evaluate_all(
                "nodes => nodes.filter(n => n.innerText.trim().length > 60 && n.offsetParent !== null).map(n => [Math.round(n.getBoundingClientRect().width), n.innerText.trim().slice(0, 40)])"),
                what=f"{title}: its text")
            narrow = [(width, text) for width, text in widths if width < 300]
            assert not narrow, (title, narrow)
            tables = page.locator("[role='tabpanel']:visible .prose table, [role='tabpanel']:visible .results-table table").evaluate_all(
                """tables => tables.filter(t => t.offsetParent !== null).map(t => [t.scrollWidth - t.clientWidth,
                    Array.from(t.querySelectorAll('th, td')).filter(c => { const s = getComputedStyle(c); return s.wordBreak !== 'normal' || s.overflowWrap !== 'normal'; }).length])""")
            assert all(wide <= 1 and breaking == 0 for wide, breaking in tables), (title, tables)  # whole words, and the table fits
        assert not errors, errors
    finally:
        page.close()


def test_a_thumbnail_tapped_right_after_the_menu_shows_the_image_the_models_ran_on(browser, server, monkeypatch):
    """Close the example menu with Escape, tap a thumbnail at once, press Run: the menu, the
    "Current image" line, the status and the image shown all name the image the models ran on,
    even when the first image's preview is slow (so it finishes after the others started)."""
    app = server.dashboard
    resolve = app.images.current

    def slow_for_the_first_example(example, *args, **kwargs):
        if example == "shapes-1000":
            time.sleep(0.8)
        return resolve(example, *args, **kwargs)

    page, errors = open_page(browser, server.local_url, PHONE)
    monkeypatch.setattr(app.images, "current", slow_for_the_first_example)
    try:
        page.locator("#example input").first.click()
        page.keyboard.press("Escape")
        page.locator("#examples button").nth(2).tap()
        page.wait_for_function("() => document.querySelector('#example input').value === 'Shapes #1002'", timeout=30_000)
        page.get_by_role("button", name="Run the models").tap()
        page.get_by_text("models ran on").wait_for(timeout=60_000)
        time.sleep(1.0)  # a late preview would land now; what follows waits until every part names the image, so a wrong one left there fails
        label = "Shapes #1002"
        page.wait_for_function("label => document.querySelector('#example input').value === label && document.querySelector('#current-image').innerText.includes(label) "
                               "&& document.querySelector('#compare-status').innerText.includes(label)", arg=label, timeout=30_000)
        means = {seed: render_shapes(seed, 0, SIZE)[0].astype(np.float64).mean() for seed in (1000, 1001, 1002)}
        eventually(lambda: image_mean(page, "#input-image img"), lambda shown: min(means, key=lambda seed: abs(means[seed] - shown)) == 1002 and abs(shown - means[1002]) < 1.0,
                   what=f"the shown image's mean (the examples': {means})")  # WebP shifts it a little
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
    summary of the graph (the figure itself is checked in tests/demo/test_inside_tab.py); the Loss lab shows its formulas and precomputed verdict and runs a live
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
        assert page.get_by_text(re.compile(r"Per-class IoU (averaged over the last|at step 0)")).count() >= 1
        assert horizontal_overflow(page) <= 1
        assert not errors, errors
    finally:
        page.close()


def tap(page, locator, device: dict) -> None:
    locator.tap() if device.get("has_touch") else locator.click()


def run_compare(page, device: dict) -> None:
    tap(page, page.get_by_role("button", name="Run the models"), device)
    page.get_by_text("models ran on").wait_for(timeout=60_000)


TABLE_FITS = """box => {
    const table = box.querySelector('table');
    const cells = Array.from(box.querySelectorAll('th, td'));
    const broken = cells.filter(cell => { const style = getComputedStyle(cell);
        return style.wordBreak !== 'normal' || !['normal', 'break-word'].includes(style.overflowWrap) && style.overflowWrap !== 'normal'; });
    const overflowing = cells.filter(cell => cell.scrollWidth > cell.clientWidth + 1).map(cell => cell.innerText);
    return {wide: table.scrollWidth - box.clientWidth, overflowing, broken: broken.length,
            cards: getComputedStyle(table.querySelector('tbody tr')).display, label: getComputedStyle(table.querySelector('td'), '::before').content};
}"""


@pytest.mark.parametrize("size", SIZES)
def test_the_comparison_table_fits_and_keeps_words_whole(browser, url, size):
    """At 1280 px every column shows without scrolling; on a phone each model is a card whose
    values sit beside their column's names; no cell breaks a word or spills out, and the
    pruning table does the same."""
    page, errors = open_page(browser, url, SIZES[size])
    try:
        run_compare(page, SIZES[size])
        fit = page.locator("#compare-table .results-table").evaluate(TABLE_FITS)
        assert fit["wide"] <= 1 and not fit["overflowing"] and fit["broken"] == 0, fit
        if size == "phone":
            assert fit["cards"] == "block" and fit["label"] == '"mIoU (this image)"', fit
            card = page.locator("#compare-table tbody tr").first.bounding_box()
            assert card["x"] >= 0 and card["x"] + card["width"] <= 390
        else:
            assert fit["cards"] == "table-row"
        page.get_by_role("tab", name="U-Net++ pruning", exact=True).click()
        page.get_by_text("pruned to depths").wait_for(timeout=60_000)
        fit = page.locator("#pruning-table .results-table").evaluate(TABLE_FITS)
        assert fit["wide"] <= 1 and not fit["overflowing"] and fit["broken"] == 0, fit
        assert horizontal_overflow(page) <= 0 and not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("size", SIZES)
def test_charts_name_every_point_and_every_class(browser, url, size):
    """The compute chart names each model beside its point, its x-axis title inside the chart;
    the per-class chart names every class."""
    page, errors = open_page(browser, url, SIZES[size])
    try:
        run_compare(page, SIZES[size])
        scatter = page.locator("#compare-scatter")
        scatter.locator(".annotation-text").nth(3).wait_for(state="attached", timeout=10_000)
        names = {scatter.locator(".annotation-text").nth(i).text_content() for i in range(4)}
        assert names == {"U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"}
        scatter.scroll_into_view_if_needed()
        chart, title = scatter.locator(".main-svg").first.bounding_box(), scatter.locator(".xtitle").bounding_box()
        assert chart["y"] <= title["y"] and title["y"] + title["height"] <= chart["y"] + chart["height"] and chart["x"] <= title["x"]
        ticks = page.locator("#compare-bars .ytick text").all_text_contents()
        assert ticks == ["background", "circle", "triangle", "rectangle"], ticks
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("size", SIZES)
def test_fast_taps_the_last_one_wins_and_is_highlighted(browser, url, size):
    """Thumbnails tapped in quick succession: the menu, the "Current image" line and the
    highlighted thumbnail all end on the last tap, every time."""
    device = SIZES[size]
    page, errors = open_page(browser, url, device)
    thumbnails = page.locator("#examples button.thumbnail-item")

    def shown_choice() -> tuple[str, list[int]]:
        return page.locator("#example input").first.input_value(), thumbnails.evaluate_all("buttons => buttons.map((b, i) => b.classList.contains('selected') ? i : -1).filter(i => i >= 0)")

    try:
        assert thumbnails.evaluate_all("buttons => buttons.map(b => b.classList.contains('selected'))").index(True) == 0  # the example shown at start
        for taps in ((2, 4, 0, 6), (5, 1, 7, 3), (2, 4, 0, 6)):
            for index in taps:
                tap(page, thumbnails.nth(index), device)
                time.sleep(0.12)
            label = f"Shapes #{1000 + taps[-1]}"
            page.wait_for_function("label => document.querySelector('#example input').value === label && document.querySelector('#current-image').innerText.includes(label)", arg=label, timeout=30_000)
            time.sleep(1.0)  # a late answer to an earlier tap would land now; then the last tap must win everywhere
            eventually(shown_choice, (label, [taps[-1]]).__eq__, what=f"after the taps {taps}: the menu and the highlighted thumbnails")
        # Choosing from the menu moves the highlight too.
        page.locator("#example input").first.click()
        page.get_by_role("option", name="Shapes #1001").click()
        page.wait_for_function("() => document.querySelector('#examples button.thumbnail-item:nth-child(1)') !== null && "
            "Array.from(document.querySelectorAll('#examples button.thumbnail-item')).findIndex(b => b.classList.contains('selected')) === 1", timeout=30_000)
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("size", SIZES)
def test_no_pill_or_estimate_covers_the_status(browser, server, size, monkeypatch):
    """While the models run, the status says which one, and Gradio shows no time estimate of its
    own; after a refused Run its red "Error" pill covers nothing: the message is on top."""
    device = SIZES[size]
    engine = server.dashboard.engine
    original = engine.run_models

    def slow(*args, **kwargs):
        for run in original(*args, **kwargs):
            time.sleep(0.8)
            yield run

    monkeypatch.setattr(engine, "run_models", slow)
    page, errors = open_page(browser, server.local_url, device)
    try:
        tap(page, page.get_by_role("button", name="Run the models"), device)
        page.locator("#compare-status").get_by_text(re.compile(r"(running|sharing the mask of) U-Net\+\+ \(2 of 4\)")).wait_for(timeout=60_000)
        shown = page.locator("#compare-status").inner_text()
        assert not re.search(r"\d+(\.\d+)?\s*/\s*\d+(\.\d+)?\s*s", shown), shown  # no "elapsed / estimate s"
        page.get_by_text("models ran on").wait_for(timeout=60_000)
        for checkbox in page.get_by_role("checkbox").all():
            if checkbox.is_checked():
                tap(page, checkbox, device)
        tap(page, page.get_by_role("button", name="Run the models"), device)
        inline = page.locator("#compare-status .inline-error")
        inline.wait_for(timeout=30_000)
        time.sleep(1.0)  # a pill would show by now (the check can only miss one on a slow machine, never fail wrongly)
        assert page.locator("#compare-status .error").filter(has_text="Error").evaluate_all("pills => pills.filter(p => p.offsetParent !== null).length") == 0
        inline.scroll_into_view_if_needed()
        box = inline.bounding_box()
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.inline-error') !== null", [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert on_top and not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_tiny_upload_is_run_with_a_warning(browser, url, size):
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    page, errors = open_page(browser, url, SIZES[size])
    try:
        page.get_by_text("…or upload your own image").click()
        page.locator("#image-upload input[type='file']").set_input_files(files=[{"name": "tiny.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
        page.locator("#current-image").get_by_text(re.compile("only 8x8 px")).wait_for(timeout=30_000)
        run_compare(page, SIZES[size])
        assert "only 8x8 px" in page.locator("#compare-status").inner_text() and not errors
    finally:
        page.close()


@pytest.fixture(scope="module")
def two_sets(tiny_zoo, tmp_path_factory):
    """A server with two model sets, each with its own examples (a fake CamVid folder and set)."""
    from conftest import build_fake_camvid
    from demo import DemoConfig, build_demo, launch_kwargs

    root = tmp_path_factory.mktemp("two_sets")
    camvid, weights = build_fake_camvid(root / "camvid", root / "weights", tiny_zoo, root / "run")
    config = DemoConfig(weights_dir=weights, camvid_dir=camvid, device="cpu", torch_threads=1, warm_up=False, num_shapes_examples=4, shapes_size=SIZE)
    demo = build_demo(config)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo.local_url
    demo.close()


@pytest.mark.parametrize("size", SIZES)
def test_the_highlight_follows_a_change_of_set(browser, two_sets, size):
    device = SIZES[size]
    page, errors = open_page(browser, two_sets, device)
    thumbnails = page.locator("#examples button.thumbnail-item")
    highlighted = "() => Array.from(document.querySelectorAll('#examples button.thumbnail-item')).map((b, i) => b.classList.contains('selected') ? i : -1).filter(i => i >= 0).join(',')"
    try:
        tap(page, thumbnails.nth(1), device)  # CamVid's second example
        page.wait_for_function(f"() => ({highlighted})() === '1'", timeout=30_000)
        page.get_by_text("Shapes (synthetic", exact=False).first.click()
        page.wait_for_function("() => document.querySelector('#example input').value === 'Shapes #1000'", timeout=30_000)
        page.wait_for_function(f"() => ({highlighted})() === '0'", timeout=30_000)  # the new set's chosen example, not the old position
        tap(page, thumbnails.nth(3), device)
        page.wait_for_function(f"() => ({highlighted})() === '3' && document.querySelector('#example input').value === 'Shapes #1003'", timeout=30_000)
        assert not errors, errors
    finally:
        page.close()
