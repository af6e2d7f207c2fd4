"""Images of the dashboard (no Gradio here, no model code): class colours over an image and
their legend, heat maps, instance colours, the TP / FP / FN map and the SPP / ASPP panels."""

from __future__ import annotations

import colorsys
import html
import math

import numpy as np
from PIL import Image, ImageDraw

from segmodels.data import DatasetInfo
from segmodels.metrics import ERROR_FN, ERROR_FP, ERROR_TP

ERROR_COLOURS = {ERROR_TP: (46, 204, 64), ERROR_FP: (255, 65, 54), ERROR_FN: (0, 116, 217)}
# Control points of a perceptually ordered black-purple-orange-yellow heat map (like "inferno").
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def overlay(image: np.ndarray, labels: np.ndarray, info: DatasetInfo, opacity: float) -> np.ndarray:
    """Class colours blended over the image; ignored / unknown ids leave the image as is.
    Integer blending through 256-entry tables of colour and weight (out of 256), indexed by
    the uint8 class ids: faster than float blending, within one level of it."""
    alpha = round(float(np.clip(opacity, 0.0, 1.0)) * 256)
    known = min(info.num_classes, 255)
    colours = np.zeros((256, 3), dtype=np.uint16)
    colours[:known] = np.asarray(info.colors, dtype=np.uint16).reshape(-1, 3)[:known]
    weights = np.zeros(256, dtype=np.uint16)
    weights[:known] = alpha
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = np.where((labels >= 0) & (labels < known), labels, 255).astype(np.uint8)
    weight = weights[labels][..., None]
    return ((image.astype(np.uint16) * (256 - weight) + colours[labels] * weight + 128) >> 8).astype(np.uint8)


def legend_html(info: DatasetInfo, present: set[int] | None = None) -> str:
    """Colour swatches with class names; classes absent from the image are dimmed."""
    items = []
    for index, (name, colour) in enumerate(zip(info.class_names, info.colors)):
        dim = present is not None and index not in present
        swatch = f"background: rgb{tuple(colour)}; width: 1.1em; height: 1.1em; display: inline-block; border: 1px solid #8888; border-radius: 3px; vertical-align: middle; margin-right: 0.3em"
        items.append(f'<span style="display: inline-block; margin: 0.15em 0.8em 0.15em 0; opacity: {0.45 if dim else 1}"><span style="{swatch}"></span>{html.escape(name)}</span>')
    if info.ignore_index is not None:
        items.append(f'<span style="display: inline-block; margin: 0.15em 0; color: #888">unlabelled (id {info.ignore_index}): image shown as is</span>')
    return f'<div class="class-legend" style="font-size: 1.05em; line-height: 1.7">{"".join(items)}</div>'


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> H x W x 3 uint8 with a black-purple-orange-yellow map."""
    scaled = np.clip(values, 0, 1) * (len(_HEAT) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(_HEAT) - 2)
    frac = (scaled - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).round().astype(np.uint8)


ERF_DECADES = 3  # the heat map spans gradients from 1/1000 of the peak to the peak


def erf_scale(erf: np.ndarray) -> np.ndarray:
    """Log scale: 0 at 1/1000 of the peak gradient (or below), 1 at the peak."""
    return np.clip(np.log10(np.clip(erf, 0, 1) * 10**ERF_DECADES + 1e-12) / ERF_DECADES, 0, 1)


def erf_overlay(image: np.ndarray, erf: np.ndarray, pixel: tuple[int, int], theoretical: float | None) -> np.ndarray:
    """The effective receptive field (log scale, so faint gradients show) over a dimmed image,
    the clicked pixel as a cross and the theoretical receptive field as a square."""
    scaled = erf_scale(erf)
    heat = heat_colours(scaled)
    alpha = np.clip(scaled * 1.5, 0, 1)[..., None] * 0.85
    base = image.astype(np.float32) * 0.45
    out = Image.fromarray((base * (1 - alpha) + heat.astype(np.float32) * alpha).round().astype(np.uint8))
    draw = ImageDraw.Draw(out)
    row, col = pixel
    height, width = erf.shape
    arm = max(3, min(height, width) // 40)
    draw.line([(col - arm, row), (col + arm, row)], fill=(0, 255, 255), width=2)
    draw.line([(col, row - arm), (col, row + arm)], fill=(0, 255, 255), width=2)
    if theoretical is not None and math.isfinite(theoretical):
        half = theoretical / 2
        draw.rectangle([col - half, row - half, col + half, row + half], outline=(0, 255, 255), width=1)
    return np.asarray(out)


def instance_colours(instances: np.ndarray) -> np.ndarray:
    """Distinct colours per instance id (golden-ratio hues), black for 0."""
    ids = np.unique(instances)
    out = np.zeros((*instances.shape, 3), dtype=np.uint8)
    for id_ in ids[ids > 0]:
        hue = (int(id_) * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        out[instances == id_] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def error_map_image(image: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """TP green, FP red, FN blue over a greyed image (true negatives and ignored pixels)."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.5
    out = grey.copy()
    for code, colour in ERROR_COLOURS.items():
        out[codes == code] = np.asarray(colour, dtype=np.float32) * 0.85 + grey[codes == code] * 0.15
    return out.round().astype(np.uint8)


TAP_COLOURS = [(0, 200, 255), (255, 0, 255), (255, 200, 0), (0, 220, 0), (255, 128, 0)]  # bright on the dimmed image


def pooling_illustration(image: np.ndarray, bins: tuple[int, ...], rates: list[int], output_stride: int, pixel: tuple[int, int]) -> np.ndarray:
    """Panels in a grid two wide, read left to right: what SPP max-pools (the image split into
    1x1, 2x2, 4x4 ... bins), then where the 3x3 taps of each ASPP branch land in the input
    around ``pixel`` (rate x output stride pixels apart; taps outside the image only see
    padding). Small images are enlarged so the drawing stays readable; the captions are
    :func:`pooling_caption`, page text that stays readable on a phone."""
    scale = max(1, min(math.ceil(240 / min(image.shape[:2])), 640 // max(image.shape[:2])))  # readable, never huge
    big = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST)
    width, height = big.size
    panels = []
    for b in bins:
        panel = Image.fromarray((np.asarray(big, dtype=np.float32) * 0.75).astype(np.uint8))
        draw = ImageDraw.Draw(panel)
        for k in range(1, b):
            draw.line([(k * width / b, 0), (k * width / b, height)], fill=(255, 255, 0), width=3)
            draw.line([(0, k * height / b), (width, k * height / b)], fill=(255, 255, 0), width=3)
        draw.rectangle([0, 0, width - 1, height - 1], outline=(255, 255, 0), width=3)
        panels.append(np.asarray(panel))
    aspp = Image.fromarray((np.asarray(big, dtype=np.float32) * 0.6).astype(np.uint8))
    draw = ImageDraw.Draw(aspp)
    draw.rectangle([0, 0, width - 1, height - 1], outline=(255, 255, 255), width=3)
    row, col = (pixel[0] + 0.5) * scale, (pixel[1] + 0.5) * scale
    for i, rate in enumerate(rates):
        step = rate * output_stride * scale
        radius = 5 + 2 * i
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = row + dy * step, col + dx * step
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=TAP_COLOURS[i % len(TAP_COLOURS)], width=3)
    panels.append(np.asarray(aspp))
    if len(panels) % 2:
        panels.append(np.full_like(panels[0], 255))
    gap = 8
    rows = [np.concatenate([left, np.full((height, gap, 3), 255, np.uint8), right], axis=1) for left, right in zip(panels[::2], panels[1::2])]
    spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for r in rows for part in (r, spacer)][:-1], axis=0)


def pooling_caption(image_size: tuple[int, int], bins: tuple[int, ...], rates: list[int], output_stride: int, pixel: tuple[int, int]) -> str:
    """What each panel of :func:`pooling_illustration` shows (HTML), with the taps' colours."""
    height, width = image_size
    items = [f"SPP {b}x{b}: {b * b} bin{'s' if b > 1 else ''}, the maximum of each" for b in bins]
    for i, rate in enumerate(rates):
        step = rate * output_stride
        inside = sum(0 <= pixel[0] + dy * step < height and 0 <= pixel[1] + dx * step < width for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        swatch = f'<span style="color: rgb{TAP_COLOURS[i % len(TAP_COLOURS)]}; font-size: 1.3em">●</span>'
        items.append(f"{swatch} ASPP rate {rate}: taps {step} px apart, {inside} of 9 inside the image")
    items.append("ASPP image-pooling branch: the whole image")
    spp = "".join(f"<li>{html.escape(item)}</li>" for item in items[: len(bins)])
    aspp = "".join(f"<li>{item}</li>" for item in items[len(bins):])
    return f"<p>Panels, left to right and top to bottom:</p><ol>{spp}<li>ASPP around the clicked pixel:<ul>{aspp}</ul></li></ol>"
