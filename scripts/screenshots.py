"""Screenshots of every tab of the running dashboard, on a desktop (1440x900) and a phone
(390x844), taken with Debian's headless Chromium through Playwright (no browser is ever
downloaded), so the README's pictures never go stale.

    python scripts/screenshots.py [--weights DIR] [--camvid DIR] [--out docs/screenshots]

It starts the app in this process (the shipped zoo by default, or any weights folder, such
as the tests' tiny zoo), presses each tab's button, waits for its results and writes
``<out>/<desktop|phone>-<tab>.png``: the visible window with the tab bar at its top, shrunk
and reduced to a small palette so the whole set stays a few hundred kilobytes."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO = Path(__file__).resolve().parent.parent

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}
SHRINK = {"desktop": 0.5, "phone": 0.75}
COLOURS = 64
WAIT_MS = 120_000



@dataclass(frozen=True)
class Shot:
    """How to photograph a tab: the button to press (None: opening the tab fills it), the text
    that shows it is done, the element to put at the top of the window (its results), and the
    devices on which the whole page is taken instead (an overview)."""

    button: str | None
    done: str | None
    anchor: str | None = None
    whole_page_on: tuple[str, ...] = ()


SHOTS = {
    "Compare": Shot("Run the models", r"models ran on", "#compare-status", whole_page_on=("desktop",)),
    "U-Net++ pruning": Shot(None, r"pruned to depths", "#pruning-status"),
    "Receptive field": Shot(None, r"largest theoretical receptive field", "#rf-click-image"),
    "Losses and IoU": Shot(None, r"IoU\(.+\) = TP|neither in the ground truth|needs a ground-truth", "#weights-note"),
    "Semantic vs instance": Shot(None, r"ndimage\.label\) of", "#instances-controls"),
    "Inside the network": Shot("Look inside", r"nodes run at inference"),
}
OTHER_TAB = Shot(None, None)  # a tab this script does not know: photographed as it opens
VISIBLE_IMAGES_LOADED = """whole => Array.from(document.images).filter(image => {
    const box = image.getBoundingClientRect();
    return box.width > 0 && (whole || (box.bottom > 0 && box.top < innerHeight));
}).every(image => { image.loading = "eager"; return image.complete; })"""


def chromium() -> str:
    """Debian's Chromium (scripts/install_chromium.sh installs it)."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("No Chromium found: install Debian's package with scripts/install_chromium.sh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(weights: Path | None, camvid: Path | None):
    """The dashboard on a free local port: (demo, url)."""
    from demo import DemoConfig, build_demo, launch_kwargs

    overrides = {"weights_dir": weights} if weights else {}
    config = DemoConfig(camvid_dir=camvid, torch_threads=1, **overrides)
    demo = build_demo(config)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    return demo, url


def shrink(path: Path, factor: float) -> None:
    """Resize by ``factor`` and reduce to a small palette (a UI screenshot needs few colours)."""
    from PIL import Image

    with Image.open(path) as shot:
        small = shot.convert("RGB").resize((round(shot.width * factor), round(shot.height * factor)), Image.Resampling.LANCZOS)
    small.quantize(colors=COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)


def tab_ids(page) -> list[tuple[str, str]]:
    """(id, title) of every tab, in order, read from the page's tab buttons."""
    buttons = page.locator("button[role='tab']")
    return [(buttons.nth(i).get_attribute("id") or "", buttons.nth(i).inner_text().strip()) for i in range(buttons.count())]


def capture(page, out: Path, device: str) -> list[Path]:
    written = []
    page.locator("#current-image").get_by_text("Current image:").wait_for(timeout=WAIT_MS)
    titles = [title for _, title in tab_ids(page)]
    for index, title in enumerate(titles):
        tab = page.get_by_role("tab", name=title, exact=True)
        tab.click()
        shot = SHOTS.get(title, OTHER_TAB)
        if shot.button:
            page.get_by_role("button", name=shot.button).click()
        if shot.done:
            page.get_by_text(re.compile(shot.done)).first.wait_for(timeout=WAIT_MS)
        if title == "Receptive field":
            target = page.locator("#rf-click-image img").first
            target.scroll_into_view_if_needed()
            target.click()
            page.get_by_text(re.compile(r"Effective receptive field of output pixel")).wait_for(timeout=WAIT_MS)
        time.sleep(2.0)  # images load, plots finish their transitions
        whole = device in shot.whole_page_on
        if not whole:
            anchor = page.locator(shot.anchor).first if shot.anchor else tab
            page.evaluate("y => window.scrollBy(0, y)", anchor.bounding_box()["y"] - 8)
        page.wait_for_function(VISIBLE_IMAGES_LOADED, arg=whole, timeout=WAIT_MS)
        name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or f"tab{index}"
        path = out / f"{device}-{name}.png"
        page.screenshot(path=str(path), full_page=whole)
        shrink(path, SHRINK[device])
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None, help="model zoo folder (default: the shipped assets/weights)")
    parser.add_argument(
        "--camvid", type=Path, default=Path(os.environ["SEGMODELS_CAMVID"]) if os.environ.get("SEGMODELS_CAMVID") else None, help="CamVid folder for the examples (env SEGMODELS_CAMVID)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--devices", nargs="+", choices=sorted(VIEWPORTS), default=list(VIEWPORTS))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    demo, url = start_app(args.weights, args.camvid)
    written = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                for device in args.devices:
                    width, height = VIEWPORTS[device]
                    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1, is_mobile=device == "phone", has_touch=device == "phone")
                    page.goto(url, wait_until="domcontentloaded")
                    written += capture(page, args.out, device)
                    page.close()
            finally:
                browser.close()
    finally:
        demo.close()
    total = sum(path.stat().st_size for path in written)
    for path in written:
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}  {path.stat().st_size / 1024:.0f} KB")
    print(f"{len(written)} screenshots, {total / 1024:.0f} KB in all")


if __name__ == "__main__":
    main()
