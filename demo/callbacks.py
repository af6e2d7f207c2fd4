"""The dashboard's callbacks: plain methods on plain values (strings, file paths, numbers,
numpy arrays), so they are tested without a browser. Each public callback returns exactly
what its Gradio outputs expect; the ``*_result`` methods return named results for tests.

Every user-facing failure becomes a :class:`gradio.Error` with a clear message (never a
traceback), raised *before* any state is returned, so a failed request leaves the
session as it was."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import utils as gradio_utils
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from segmodels import ARCH_NAMES, ARCHITECTURES, create_model
from segmodels.blocks import SPP
from segmodels.data import DatasetInfo
from segmodels.inference import Latency
from segmodels.losses import class_weights_inverse_share, pixel_counts
from segmodels.metrics import ERROR_FN, ERROR_FP, ERROR_TP, iou_error_map
from segmodels.receptive_field import aspp_rates, output_field_size

from . import figures
from .config import DemoConfig
from .engine import SET_LABELS, Engine, ModelRun, ModelUnavailable, OutOfMemory, is_out_of_memory
from .scheduler import FairScheduler
from .serving import delete_uploads
from .sources import DATASETS, Example, InputError, Source, camvid_examples, load_example, load_upload, shapes_examples

log = logging.getLogger(__name__)

ARCH_ORDER = tuple(ARCHITECTURES)
DILATION_RATES = (1, 2)  # shown before the ASPP rates of the real model
ALL_CLASSES = "all classes"
CLICK_SIDE = 320  # smallest longest side of the clickable image



def _gpu(fn):
    return fn


if os.environ.get("SPACES_ZERO_GPU"):  # Hugging Face ZeroGPU: optional, never required.
    try:
        import spaces  # type: ignore

        _gpu = spaces.GPU  # noqa: F811
    except Exception:  # noqa: BLE001 - absent package or no GPU runtime
        log.warning("SPACES_ZERO_GPU is set but the 'spaces' package is unusable; running without it")


def _user_error(error: Exception) -> gr.Error:
    """The message a user sees for any failure (never a traceback)."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, (InputError, ModelUnavailable, OutOfMemory)):
        return gr.Error(str(error), print_exception=False)
    if is_out_of_memory(error):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return gr.Error("The device ran out of memory. Nothing was lost: try again with fewer models or a smaller image.", print_exception=False)
    log.error("callback failed: %s: %s", type(error).__name__, str(error)[:500])
    log.debug("traceback", exc_info=error)
    return gr.Error(f"Something went wrong ({type(error).__name__}). Try another image or fewer models; the details are in the server log.", print_exception=False)


def user_errors(fn):
    """Turn every failure into a ``gr.Error`` with a message meant for the user; works for
    plain and for streaming (generator) callbacks."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise _user_error(error) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _user_error(error) from None

    return wrapper


def _file_path(value: Any) -> str | None:
    """A Gradio file value (path string, FileData-like dict or object) as a path, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


LATENCY_NOTE = "latency = median of a benchmark measured while the server was idle (IQR beside it); ⚠ marks a figure that is a single pass or noisy."


def latency_columns(latency: Latency | None) -> dict:
    """Median, IQR and where the figure comes from, for a table row."""
    if latency is None:
        return {"Latency (ms)": float("nan"), "Latency IQR (ms)": float("nan"), "Latency from": "-"}
    when = time.strftime("%H:%M", time.localtime(latency.measured_at))
    origin = f"benchmark, {latency.samples} passes, {when}" if latency.source == "benchmark" else "this click, 1 pass (benchmark pending)"
    return {
        "Latency (ms)": _round(latency.median_ms, 1),
        "Latency IQR (ms)": _round(latency.iqr_ms, 1) if latency.samples > 1 else float("nan"),
        "Latency from": origin + (" ⚠" if latency.noisy else ""),
    }


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a huge argument is never echoed back."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit])
    if isinstance(value, str) and len(value) > limit:
        return f"{text[:-1]}…' ({len(value):,} characters)"
    return text if len(text) <= limit else text[:limit] + "…"


def _round(value: float | None, digits: int) -> float:
    return float("nan") if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


@dataclass
class CompareResult:
    source: Source
    set_name: str
    info: DatasetInfo
    gt: np.ndarray | None
    runs: list[ModelRun]
    table: pd.DataFrame
    notes: list[str]


@dataclass
class PruningResult:
    source: Source
    info: DatasetInfo
    gt: np.ndarray | None
    runs: list[ModelRun]
    table: pd.DataFrame


class Dashboard:
    """State shared by all sessions (engine, examples) and the callbacks."""

    def __init__(self, config: DemoConfig | None = None):
        self.config = config or DemoConfig()
        self.engine = Engine(self.config)
        self._uploads: dict[str, set[str]] = {}
        self.scheduler = FairScheduler(self.config.jobs_per_address, self.config.jobs_total, self.config.max_wait_s)
        camvid, self.camvid_problem = camvid_examples(self.config.camvid_dir, self.config.num_camvid_examples)
        self.examples: list[Example] = camvid + shapes_examples(self.config.shapes_seed, self.config.num_shapes_examples, self.config.shapes_size)
        self._by_name = {e.key: e for e in self.examples} | {e.label: e for e in self.examples}
        self._fallback_deeplab: dict[int, torch.nn.Module] = {}
        self._thumbs: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ choices

    def sets(self) -> list[str]:
        return list(self.engine.catalogue())

    def set_choices(self) -> list[tuple[str, str]]:
        return [(SET_LABELS.get(s, s), s) for s in self.sets()]

    def default_set(self) -> str | None:
        """The first set whose own examples are available (so the first view has ground
        truth), else the first set."""
        sets = self.sets()
        with_examples = [s for s in sets if self.examples_of(s)]
        return (with_examples or sets or [None])[0]

    def archs(self, set_name: str | None) -> list[str]:
        return self.engine.catalogue().get(set_name, []) if set_name else []

    def model_choices(self, set_name: str | None) -> list[tuple[str, str]]:
        return [(ARCH_NAMES[a], a) for a in self.archs(set_name)]

    def example_choices(self) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.examples]

    def examples_of(self, set_name: str | None) -> list[Example]:
        """The examples from the dataset that ``set_name``'s models were trained on."""
        return [e for e in self.examples if e.dataset == set_name]

    def default_example(self, set_name: str | None) -> str | None:
        chosen = self.examples_of(set_name) or self.examples
        return chosen[0].key if chosen else None

    def info(self, set_name: str | None) -> DatasetInfo:
        if set_name in self.sets():
            return self.engine.dataset_info(set_name)
        return DATASETS.get(set_name or "", DATASETS["shapes"])

    def class_choices(self, set_name: str | None, with_all: bool = False) -> list[str]:
        names = list(self.info(set_name).class_names)
        return ([ALL_CLASSES] if with_all else []) + names

    def default_instance_class(self, set_name: str | None) -> str:
        names = self.info(set_name).class_names
        return "Car" if "Car" in names else ALL_CLASSES

    def default_iou_class(self, set_name: str | None) -> str:
        names = self.info(set_name).class_names
        for preferred in ("Car", "circle"):
            if preferred in names:
                return preferred
        return names[-1]

    def gallery_examples(self, set_name: str | None) -> list[Example]:
        """The examples shown as thumbnails: those of the set's dataset (all when it has none)."""
        return self.examples_of(set_name) or list(self.examples)

    def thumbnails(self, set_name: str | None) -> list[tuple[np.ndarray, str]]:
        thumbs = []
        for example in self.gallery_examples(set_name):
            if example.key not in self._thumbs:
                try:
                    self._thumbs[example.key] = load_example(example, 160).image
                except InputError as error:
                    log.warning("%s", error)
                    continue
            thumbs.append((self._thumbs[example.key], example.label))
        return thumbs

    def usual_sizes(self) -> dict[str, tuple[int, int]]:
        """{set: the size of its first example}: what most requests will run at."""
        sizes = {}
        for set_name in self.sets():
            example = next(iter(self.examples_of(set_name)), None)
            if example is not None:
                try:
                    sizes[set_name] = load_example(example, self.config.max_side).size
                except InputError as error:
                    log.warning("%s", error)
        return sizes

    # ------------------------------------------------------------------ validation

    def check_set(self, set_name: str | None) -> str:
        sets = self.sets()
        if not sets:
            raise InputError(f"No trained models are installed (looked in {self.config.weights_dir}). Export weights there or set SEGMODELS_WEIGHTS.")
        if set_name not in sets:
            labels = {label: s for s, label in ((s, SET_LABELS.get(s, s)) for s in sets)}
            if set_name in labels:
                return labels[set_name]
            raise InputError(f"Unknown model set {_short(set_name)}; available: {', '.join(sets)}.")
        return set_name

    def check_models(self, set_name: str, models: list[str] | str | None) -> list[str]:
        """Known, shipped architectures (by key or display name), deduplicated, in display
        order; a list longer than the architectures that exist is refused before any lookup."""
        if isinstance(models, str):
            models = [models]
        if not models:
            raise InputError("Choose at least one model to run.")
        if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
            raise InputError(f"Models must be a list of names such as {', '.join(ARCH_NAMES)}.")
        unique = list(dict.fromkeys(models))
        if len(unique) > len(ARCH_NAMES):
            raise InputError(f"At most {len(ARCH_NAMES)} different models can run ({', '.join(ARCH_NAMES)}); got {len(unique)} names.")
        names = {v: k for k, v in ARCH_NAMES.items()}
        shipped = self.archs(set_name)
        archs = []
        for model in unique:
            arch = names.get(model, model)
            if arch not in ARCH_NAMES:
                raise InputError(f"Unknown model {_short(model)}; choose from {', '.join(ARCH_NAMES.values())}.")
            if arch not in shipped:
                raise InputError(f"The {SET_LABELS.get(set_name, set_name)} set ships no {ARCH_NAMES[arch]} weights.")
            if arch not in archs:
                archs.append(arch)
        return sorted(archs, key=ARCH_ORDER.index)

    @staticmethod
    def check_depth(depth: Any) -> int:
        try:
            value = float(depth if depth is not None else 4)
        except (TypeError, ValueError):
            raise InputError(f"The U-Net++ depth must be a number from 1 to 4, got {_short(depth)}.") from None
        if not 1 <= value <= 4:  # NaN fails too
            raise InputError(f"The U-Net++ depth must be from 1 to 4, got {_short(depth)}.")
        return int(round(value))

    @staticmethod
    def check_opacity(opacity: Any) -> float:
        try:
            value = float(opacity if opacity is not None else 0.8)
        except (TypeError, ValueError):
            raise InputError(f"The mask opacity must be a number from 0 to 1, got {_short(opacity)}.") from None
        if not 0 <= value <= 1:  # NaN fails too
            raise InputError(f"The mask opacity must be from 0 to 1, got {_short(opacity)}.")
        return value

    def source(self, example: str | None, image_file: Any, mask_file: Any, set_name: str) -> Source:
        """The request's image: the upload when there is one, else the example."""
        image_path, mask_path = _file_path(image_file), _file_path(mask_file)
        if image_path:
            return load_upload(image_path, mask_path, set_name, self.config.max_side)
        if mask_path:
            raise InputError("A ground-truth mask was uploaded without its image: upload the image as well (or clear the mask).")
        if not example:
            raise InputError("Pick an example or upload an image.")
        chosen = self._by_name.get(example)
        if chosen is None:
            raise InputError(f"Unknown example {_short(example)}; examples are {', '.join(e.key for e in self.examples[:4])}, ...")
        return load_example(chosen, self.config.max_side)

    def _gt(self, src: Source, set_name: str, notes: list[str]) -> np.ndarray | None:
        gt = src.gt_for(set_name)
        if src.gt is not None and gt is None:
            notes.append(f"The ground truth of {src.label} uses the {src.gt_dataset} classes, not those of the {set_name} models: no mIoU on this image.")
        elif gt is None:
            notes.append("No ground truth for this image: scores on it need a mask (upload one with the image); the model cards' validation scores are shown instead.")
        return gt

    # ------------------------------------------------------------------ session (predictions kept per browser tab)

    @staticmethod
    def _prediction_key(arch: str, depth: int | None) -> str:
        return f"{arch}@{depth if arch == 'unetpp' and depth else 0}"

    @staticmethod
    def _session_predictions(session: Any, src: Source, set_name: str) -> dict[str, np.ndarray]:
        if isinstance(session, dict) and session.get("key") == src.key and session.get("set") == set_name:
            return dict(session.get("predictions", {}))
        return {}

    def _predict(self, src: Source, set_name: str, arch: str, depth: int | None, session: Any) -> tuple[np.ndarray, dict]:
        """One model's prediction, from the session when this image already ran, else computed."""
        predictions = self._session_predictions(session, src, set_name)
        run_depth = self.engine.depth_for(set_name, arch, depth)
        key = self._prediction_key(arch, run_depth)
        if key not in predictions:
            run = next(self.engine.run_models(set_name, [arch], src.image, depth))
            if not run.ok:
                raise ModelUnavailable(run.error)
            predictions[key] = run.labels
        return predictions[key], {"key": src.key, "set": set_name, "predictions": predictions}

    # ------------------------------------------------------------------ Compare

    def _card_miou(self, set_name: str, run: ModelRun) -> float:
        try:
            card = self.engine.card(set_name, run.arch)
        except ModelUnavailable:
            return float("nan")
        depth = run.depth
        if depth is not None:
            for entry in card.get("pruning") or []:
                if entry.get("depth") == depth:
                    return _nan(entry.get("val_miou"))
        return _nan(card.get("val_miou"))

    def _card_per_class(self, set_name: str, arch: str, info: DatasetInfo) -> list[float]:
        try:
            values = self.engine.card(set_name, arch).get("val_per_class_iou") or {}
        except ModelUnavailable:
            values = {}
        if isinstance(values, list):
            values = dict(zip(info.class_names, values))
        return [_nan(values.get(name)) for name in info.class_names]

    def compare_table(self, set_name: str, info: DatasetInfo, runs: list[ModelRun]) -> pd.DataFrame:
        rows = []
        for run in runs:
            per_class = run.metrics["per_class_iou"] if run.metrics else [None] * info.num_classes
            row = {
                "Model": run.name,
                "Status": "ok" if run.ok else run.error,
                "mIoU (this image)": _round(run.metrics["miou"] if run.metrics else None, 4),
                "mIoU (card, val set)": _round(self._card_miou(set_name, run), 4),
                **latency_columns(run.latency),
                "Params (M)": _round(run.params / 1e6 if run.params is not None else None, 3),
                "GFLOPs": _round(run.flops / 1e9 if run.flops is not None else None, 3),
            }
            row |= {f"IoU {name}": _round(value, 4) for name, value in zip(info.class_names, per_class)}
            rows.append(row)
        return pd.DataFrame(rows)

    def _compare_request(self, example, image_file, mask_file, set_name, models, depth) -> tuple[str, list[str], int, Source, DatasetInfo, np.ndarray | None, list[str]]:
        set_name = self.check_set(set_name)
        archs = self.check_models(set_name, models)
        depth = self.check_depth(depth)
        src = self.source(example, image_file, mask_file, set_name)
        notes = list(src.notes)
        gt = self._gt(src, set_name, notes)
        return set_name, archs, depth, src, self.info(set_name), gt, notes

    def compare_result(self, example, image_file, mask_file, set_name, models, depth) -> CompareResult:
        """Every chosen model on the image, one forward pass each (for tests and scripts)."""
        set_name, archs, depth, src, info, gt, notes = self._compare_request(example, image_file, mask_file, set_name, models, depth)
        runs = list(self.engine.run_models(set_name, archs, src.image, depth, gt, info))
        if not any(run.ok for run in runs):
            raise ModelUnavailable("No model could run. " + " ".join(run.error for run in runs))
        return CompareResult(src, set_name, info, gt, runs, self.compare_table(set_name, info, runs), notes)

    @staticmethod
    def _slot_image(run: ModelRun, overlay: np.ndarray | None):
        if not run.ok:
            return gr.update(value=None, label=f"{ARCH_NAMES[run.arch]}: unavailable (see status)", visible=True)
        return gr.update(value=overlay, label=run.name, visible=True)

    def _status(self, header: str, runs: list[ModelRun], notes: list[str]) -> str:
        lines = [header]
        lines += [f"- **{run.name}**: {run.error}" for run in runs if not run.ok]
        lines += [f"- {note}" for note in notes]
        return "\n".join(lines)

    @user_errors
    @_gpu
    def compare(self, example, image_file, mask_file, set_name, models, depth, opacity, session):
        """Run the chosen models on the image, streaming: status, legend, input, ground truth,
        one image per architecture slot (each as soon as its model is done), then the table,
        two figures and the new session."""
        set_name, archs, depth, src, info, gt, notes = self._compare_request(example, image_file, mask_file, set_name, models, depth)
        opacity = self.check_opacity(opacity)
        has_gt = gt is not None
        present = set(np.unique(gt).tolist()) if has_gt else None
        slots = {arch: gr.update(value=None, label=f"{ARCH_NAMES[arch]}: waiting…", visible=arch in archs) for arch in ARCH_ORDER}
        waiting_table = pd.DataFrame({"Model": [ARCH_NAMES[a] for a in archs], "Status": "waiting…"})
        waiting_plot = gr.update(value=figures.empty_figure("Running the models…"), visible=True)
        yield (f"**{src.label}**: running {ARCH_NAMES[archs[0]]} (1 of {len(archs)})…", figures.legend_html(info, present), src.image,
               figures.overlay(src.image, gt, info, opacity) if has_gt else None, *slots.values(),
               gr.update(value=waiting_table, visible=True), waiting_plot, waiting_plot, gr.skip())
        runs, overlays = [], {}
        for run in self.engine.run_models(set_name, archs, src.image, depth, gt, info):
            runs.append(run)
            overlays[run.arch] = figures.overlay(src.image, run.labels, info, opacity) if run.ok else None
            slots[run.arch] = self._slot_image(run, overlays[run.arch])
            following = f"running {ARCH_NAMES[archs[len(runs)]]} ({len(runs) + 1} of {len(archs)})…" if len(runs) < len(archs) else "making the table…"
            yield (f"**{src.label}**: {following}", gr.skip(), gr.skip(), gr.skip(), *(slots[a] if a == run.arch else gr.skip() for a in ARCH_ORDER), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        if not any(run.ok for run in runs):
            raise ModelUnavailable("No model could run. " + " ".join(run.error for run in runs))
        table = self.compare_table(set_name, info, runs)
        ok = sum(run.ok for run in runs)
        header = f"**{src.label}** ({src.size[1]}x{src.size[0]} px) · {ok} of {len(runs)} models ran on **{self.engine.device.type.upper()}**, one forward pass each · {LATENCY_NOTE}"
        if has_gt:
            bars = figures.per_class_figure(table, info.class_names, "this image")
        else:
            card_rows = pd.DataFrame([{"Model": run.name, **{f"IoU {n}": v for n, v in zip(info.class_names, self._card_per_class(set_name, run.arch, info))}} for run in runs if run.ok])
            bars = figures.per_class_figure(card_rows, info.class_names, "validation set, from the model cards")
        predictions = {self._prediction_key(run.arch, run.depth): run.labels for run in runs if run.ok}
        yield (  # everything again, so an API client's final result is complete
            self._status(header, runs, notes),
            figures.legend_html(info, present),
            src.image,
            figures.overlay(src.image, gt, info, opacity) if has_gt else None,
            *(overlays.get(arch) for arch in ARCH_ORDER),
            table,
            figures.miou_latency_figure(table, has_gt),
            bars,
            {"key": src.key, "set": set_name, "predictions": predictions},
        )

    @user_errors
    def restyle(self, example, image_file, mask_file, set_name, opacity, session):
        """New mask opacity: redraw ground truth and the session's predictions, no model runs."""
        opacity = self.check_opacity(opacity)
        set_name = self.check_set(set_name)
        src = self.source(example, image_file, mask_file, set_name)
        info = self.info(set_name)
        gt = src.gt_for(set_name)
        predictions = self._session_predictions(session, src, set_name)
        slots = []
        for arch in ARCH_ORDER:
            labels = next((v for k, v in predictions.items() if k.startswith(f"{arch}@")), None)
            slots.append(gr.skip() if labels is None else figures.overlay(src.image, labels, info, opacity))
        return (figures.overlay(src.image, gt, info, opacity) if gt is not None else None, *slots)

    def remember_uploads(self, session: str | None, *files: Any) -> None:
        """Note which uploads a browser session used, to delete them when it ends."""
        paths = {path for path in map(_file_path, files) if path}
        if session is not None and paths:
            self._uploads.setdefault(session, set()).update(paths)

    async def session_ended(self, request: gr.Request):
        """A browser tab closed: drop its waiting model jobs and delete its uploads."""
        session = getattr(request, "session_hash", None)
        self.scheduler.cancel_session(session)
        delete_uploads(self._uploads.pop(session, set()), Path(gradio_utils.get_upload_folder()))

    @user_errors
    def preview(self, example, image_file, mask_file, set_name, opacity, request: gr.Request = None):
        """Show the chosen image (and its ground truth) as soon as it is picked: input image,
        ground-truth overlay, legend, the receptive-field tab's clickable image, and a note.
        Works without any trained model (the examples are still shown)."""
        self.remember_uploads(getattr(request, "session_hash", None), image_file, mask_file)
        opacity = self.check_opacity(opacity)
        if self.sets() or set_name is not None:
            set_name = self.check_set(set_name)
        else:
            chosen = self._by_name.get(example or "")
            set_name = chosen.dataset if chosen is not None else "shapes"
        src = self.source(example, image_file, mask_file, set_name)
        info = self.info(set_name)
        notes: list[str] = []
        gt = self._gt(src, set_name, notes)
        note = f"**Current image:** {src.label}, {src.size[1]}x{src.size[0]} px, " + ("with ground truth." if gt is not None else "no ground truth.")
        return src.image, (figures.overlay(src.image, gt, info, opacity) if gt is not None else None), figures.legend_html(info), self.click_image(src.image), note

    @staticmethod
    def click_scale(size: tuple[int, int]) -> int:
        """Small images are shown enlarged (by this integer factor) so a pixel can be clicked."""
        return max(1, CLICK_SIDE // max(size))

    def click_image(self, image: np.ndarray) -> np.ndarray:
        """The image to click on in the receptive-field tab (nearest-neighbour enlarged)."""
        scale = self.click_scale(image.shape[:2])
        return image if scale == 1 else np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

    def set_changed(self, set_name, example):
        """A new model set: its models, classes, and an example of its dataset."""
        if set_name not in self.sets():
            return (gr.skip(),) * 9
        chosen = self._by_name.get(example) if example else None
        new_example = example if chosen is not None and chosen.dataset == set_name else self.default_example(set_name)
        if not self.examples_of(set_name):
            gr.Info(f"No {SET_LABELS.get(set_name, set_name)} examples on this server: upload an image of that kind (the examples shown have no ground truth for these classes).")
        archs = self.model_choices(set_name)
        arch_values = [a for _, a in archs]
        return (
            gr.CheckboxGroup(choices=archs, value=arch_values),
            gr.Dropdown(value=new_example),
            gr.Slider(visible="unetpp" in arch_values),
            gr.Dropdown(choices=archs, value=arch_values[0] if arch_values else None),
            gr.Dropdown(choices=self.class_choices(set_name), value=self.default_iou_class(set_name)),
            gr.Dropdown(choices=archs, value=arch_values[0] if arch_values else None),
            gr.Dropdown(choices=self.class_choices(set_name, with_all=True), value=self.default_instance_class(set_name)),
            figures.legend_html(self.info(set_name)),
            gr.Gallery(value=self.thumbnails(set_name)),
        )

    def pick_example(self, set_name, evt: gr.SelectData):
        """A tap on an example thumbnail: choose it and clear any upload."""
        shown = self.gallery_examples(set_name)
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(shown):
            return gr.skip(), gr.skip(), gr.skip()
        return shown[index].key, None, None

    # ------------------------------------------------------------------ U-Net++ pruning

    def pruning_result(self, example, image_file, mask_file, set_name) -> PruningResult:
        return list(self.pruning_steps(example, image_file, mask_file, set_name))[-1]

    def pruning_steps(self, example, image_file, mask_file, set_name) -> Iterator[PruningResult]:
        """The prunable model at every depth, one result per finished depth (runs so far)."""
        set_name = self.check_set(set_name)
        arch = next((a for a in self.archs(set_name) if self.engine.pruning_depths(set_name, a)), None) if "unetpp" in self.archs(set_name) else None
        if arch is None:
            raise InputError(f"The {SET_LABELS.get(set_name, set_name)} set ships no U-Net++ weights, so there is nothing to prune.")
        src = self.source(example, image_file, mask_file, set_name)
        info = self.info(set_name)
        gt = src.gt_for(set_name)
        card = self.engine.card(set_name, arch)
        pruning = {entry.get("depth"): entry for entry in card.get("pruning") or []}
        runs, rows = [], []
        for run in self.engine.run_depths(set_name, arch, src.image, gt, info):
            if not run.ok:
                raise ModelUnavailable(run.error)
            runs.append(run)
            rows.append({
                "Depth": f"L{run.depth}",
                "mIoU (this image)": _round(run.metrics["miou"] if run.metrics else None, 4),
                "mIoU (card, val set)": _round(pruning.get(run.depth, {}).get("val_miou"), 4),
                **latency_columns(run.latency),
                "Params (M)": _round(run.params / 1e6, 4),
                "GFLOPs": _round(run.flops / 1e9, 3),
            })
            yield PruningResult(src, info, gt, list(runs), pd.DataFrame(rows))

    @user_errors
    @_gpu
    def pruning(self, example, image_file, mask_file, set_name, opacity):
        """U-Net++ L1..L4 on the image, streamed depth by depth: status, four images, the
        table and the trade-off chart."""
        opacity = self.check_opacity(opacity)
        result = None
        for result in self.pruning_steps(example, image_file, mask_file, set_name):
            done = len(result.runs)
            images = [gr.update(value=figures.overlay(result.source.image, run.labels, result.info, opacity), label=run.name) for run in result.runs]
            images += [gr.update(value=None, label=f"U-Net++ L{d}: waiting…") for d in range(done + 1, 5)]
            yield (f"**{result.source.label}**: U-Net++ L1 to L{done} done…", *images[:4], gr.skip(), gr.skip())
        status = f"**{result.source.label}**: U-Net++ pruned to depths L1 to L{len(result.runs)}, each on the same input tensor, one forward pass each · {LATENCY_NOTE}" + ("" if result.gt is not None else " No ground truth for this image: only the card's validation mIoU is plotted.")
        yield (status, *(gr.skip() for _ in range(4)), result.table, figures.pruning_figure(result.table))

    # ------------------------------------------------------------------ receptive fields

    def receptive_field_table(self, set_name, models, depth) -> pd.DataFrame:
        set_name = self.check_set(set_name)
        archs = self.check_models(set_name, models)
        depth = self.check_depth(depth)
        frames = []
        for arch in archs:
            layers = self.engine.receptive_field(set_name, arch, depth)
            frames.append(pd.DataFrame({
                "Model": ARCH_NAMES[arch] + (f" L{depth}" if arch == "unetpp" else ""),
                "Layer": [layer.index for layer in layers],
                "Module": [layer.name for layer in layers],
                "Op": [layer.op for layer in layers],
                "Kernel": [layer.kernel for layer in layers],
                "Stride": [layer.stride for layer in layers],
                "Dilation": [layer.dilation for layer in layers],
                "Receptive field (px)": [layer.size for layer in layers],
                "Jump (px)": [layer.jump for layer in layers],
            }))
        return pd.concat(frames, ignore_index=True)

    def aspp_setup(self, set_name: str) -> tuple[list[int], int, str]:
        """(ASPP rates, output stride, where they come from), read from DeepLabV3+'s layers."""
        if "deeplabv3p" in self.archs(set_name):
            try:
                with self.engine.guard():
                    model = self.engine.model(set_name, "deeplabv3p")
                return aspp_rates(model), int(model.output_stride), f"read from the shipped DeepLabV3+ ({set_name}) with segmodels.receptive_field.aspp_rates"
            except ModelUnavailable as error:
                log.warning("%s", error)
        info = self.info(set_name)
        if info.num_classes not in self._fallback_deeplab:
            self._fallback_deeplab[info.num_classes] = create_model("deeplabv3p", info.num_classes, encoder="plain", pretrained=False, base_channels=4, aspp_channels=8, low_level_channels=4).eval()
        model = self._fallback_deeplab[info.num_classes]
        return aspp_rates(model), int(model.output_stride), "read from an untrained DeepLabV3+ built by segmodels (no trained DeepLabV3+ in this set)"

    @user_errors
    def receptive_fields(self, set_name, models, depth, progress=gr.Progress()):
        """The theoretical receptive-field chart, its per-layer table, and the dilation figure."""
        table = self.receptive_field_table(set_name, models, depth)
        traces = {name: frame for name, frame in table.groupby("Model", sort=False)}
        rates, stride, origin = self.aspp_setup(self.check_set(set_name))
        shown_rates = sorted(set(DILATION_RATES) | set(rates))
        summary = ["| Model | layers | largest theoretical receptive field |", "|---|---|---|"]
        for name, frame in traces.items():
            largest = float(frame["Receptive field (px)"].max())
            summary.append(f"| {name} | {len(frame)} | {'whole image (global pooling)' if math.isinf(largest) else f'{largest:.0f} px'} |")
        summary.append(f"\nDeepLabV3+ ASPP rates {', '.join(map(str, rates))} at output stride {stride} ({origin}); SPP bins {', '.join(f'{b}x{b}' for b in SPP().bins)}.")
        display = table.copy()
        for column in ("Receptive field (px)", "Jump (px)"):
            display[column] = [("whole image" if column.startswith("Receptive") else "-") if math.isinf(v) else f"{v:g}" for v in display[column]]
        return figures.receptive_field_figure(traces), display, figures.dilation_figure(shown_rates, rates, stride), "\n".join(summary)

    def effective_fields_at(self, example, image_file, mask_file, set_name, models, depth, pixel: tuple[int, int], progress=None) -> tuple[Source, dict[str, np.ndarray], np.ndarray, str]:
        """ERF overlays {arch: image} of the output pixel (row, col), the SPP/ASPP illustration
        centred on it, and a note."""
        set_name = self.check_set(set_name)
        archs = self.check_models(set_name, models)
        depth = self.check_depth(depth)
        src = self.source(example, image_file, mask_file, set_name)
        row = int(np.clip(pixel[0], 0, src.size[0] - 1))
        col = int(np.clip(pixel[1], 0, src.size[1] - 1))
        overlays, lines = {}, [f"Effective receptive field of output pixel (row {row}, column {col}), log scale from 1/1000 of the peak gradient (dark) to the peak (yellow); cyan square = theoretical receptive field."]
        for i, arch in enumerate(archs):
            if progress is not None:
                progress(i / len(archs), desc=f"Gradient of {ARCH_NAMES[arch]}")
            try:
                erf = self.engine.effective_field(set_name, arch, src.image, (row, col), depth)
                theoretical = output_field_size(self.engine.receptive_field(set_name, arch, depth))
            except ModelUnavailable as error:
                lines.append(f"- {error}")
                continue
            overlays[arch] = figures.erf_overlay(src.image, erf, (row, col), theoretical)
            share = float((erf > 0.01).mean())
            lines.append(f"- **{ARCH_NAMES[arch]}**: {share:.1%} of the image has a gradient above 1% of the peak; theoretical field {'whole image' if math.isinf(theoretical) else f'{theoretical:.0f} px'}.")
        if not overlays:
            raise ModelUnavailable("No model could compute a receptive field. " + " ".join(lines[1:]))
        rates, stride, _ = self.aspp_setup(set_name)
        pooling = figures.pooling_illustration(src.image, SPP().bins, rates, stride, (row, col))
        return src, overlays, pooling, "\n".join(lines)

    @user_errors
    @_gpu
    def effective_fields(self, example, image_file, mask_file, set_name, models, depth, evt: gr.SelectData, progress=gr.Progress()):
        """A click on the image (``evt.index`` = (x, y)): four ERF images, illustration, note."""
        if evt is None or evt.index is None:
            raise InputError("Click on the image to choose a pixel.")
        x, y = evt.index[:2]
        set_name = self.check_set(set_name)
        scale = self.click_scale(self.source(example, image_file, mask_file, set_name).size)  # the clicked image was enlarged by this
        _, overlays, pooling, note = self.effective_fields_at(example, image_file, mask_file, set_name, models, depth, (int(y) // scale, int(x) // scale), progress)
        slots = [gr.update(value=overlays[a], label=ARCH_NAMES[a], visible=True) if a in overlays else gr.update(value=None, visible=False) for a in ARCH_ORDER]
        return (*slots, pooling, note)

    # ------------------------------------------------------------------ losses and IoU

    def class_weight_table(self, mask: np.ndarray, info: DatasetInfo) -> pd.DataFrame:
        ignore = info.ignore_index if info.ignore_index is not None else -100
        counts = pixel_counts(torch.from_numpy(mask.astype(np.int64)), info.num_classes, ignore)
        if int(counts.sum()) == 0:
            raise InputError("The mask has no labelled pixels, so there is nothing to count.")
        weights = class_weights_inverse_share(counts)
        total = int(counts.sum())
        return pd.DataFrame({
            "Class": list(info.class_names),
            "Pixels N_c": [int(c) for c in counts],
            "Share of pixels": [round(int(c) / total, 4) for c in counts],
            "Weight w_c": [round(float(w), 4) for w in weights],
        })

    @user_errors
    def class_weights(self, example, image_file, mask_file, set_name, session):
        """Pixel counts and w_c = (N - N_c) / N for the current mask (the ground truth, else
        the first prediction already made for this image)."""
        set_name = self.check_set(set_name)
        src = self.source(example, image_file, mask_file, set_name)
        info = self.info(set_name)
        gt = src.gt_for(set_name)
        if gt is not None:
            mask, origin = gt, "the ground-truth mask"
        else:
            predictions = self._session_predictions(session, src, set_name)
            if not predictions:
                raise InputError("This image has no ground-truth mask. Upload one with the image, or press Run on the Compare tab so a predicted mask can be counted instead.")
            key = sorted(predictions, key=lambda k: ARCH_ORDER.index(k.split("@")[0]))[0]
            mask, origin = predictions[key], f"the mask predicted by {ARCH_NAMES[key.split('@')[0]]} (no ground truth for this image)"
        table = self.class_weight_table(mask, info)
        total = int(table["Pixels N_c"].sum())
        note = f"Counted on {origin} of **{src.label}**: N = {total} labelled pixels."
        return table, figures.class_weights_figure(table), note

    def loss_curves(self, gamma):
        try:
            gamma = float(gamma)
        except (TypeError, ValueError):
            gamma = 2.0
        return figures.loss_curves_figure(max(0.0, gamma))

    def iou_map_result(self, example, image_file, mask_file, set_name, arch, class_name, depth, session) -> tuple[np.ndarray, dict, dict]:
        """(error-map image, {tp, fp, fn, iou}, new session) for one class and model."""
        set_name = self.check_set(set_name)
        arch = self.check_models(set_name, [arch] if arch else [])[0]
        depth = self.check_depth(depth)
        src = self.source(example, image_file, mask_file, set_name)
        info = self.info(set_name)
        gt = src.gt_for(set_name)
        if gt is None:
            raise InputError("The IoU map needs a ground-truth mask: pick an example or upload a mask with your image.")
        if class_name not in info.class_names:
            raise InputError(f"Unknown class {_short(class_name)}; the classes are {', '.join(info.class_names)}.")
        class_index = info.class_names.index(class_name)
        labels, session = self._predict(src, set_name, arch, depth, session)
        codes = iou_error_map(labels, gt, class_index, info.ignore_index)
        tp, fp, fn = (int((codes == c).sum()) for c in (ERROR_TP, ERROR_FP, ERROR_FN))
        iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
        return figures.error_map_image(src.image, codes), {"tp": tp, "fp": fp, "fn": fn, "iou": iou}, session

    @user_errors
    @_gpu
    def iou_map(self, example, image_file, mask_file, set_name, arch, class_name, depth, session):
        image, counts, session = self.iou_map_result(example, image_file, mask_file, set_name, arch, class_name, depth, session)
        tp, fp, fn, iou = counts["tp"], counts["fp"], counts["fn"], counts["iou"]
        if math.isnan(iou):
            formula = f"**{class_name}** is neither in the ground truth nor in the prediction: its IoU is undefined and it does not count towards mIoU."
        else:
            formula = f"IoU({class_name}) = TP / (TP + FP + FN) = {tp} / ({tp} + {fp} + {fn}) = **{iou:.3f}**"
        note = f"{ARCH_NAMES[arch]} on the current image. Green **TP = {tp}**, red **FP = {fp}**, blue **FN = {fn}** pixels.\n\n{formula}"
        return image, note, session

    # ------------------------------------------------------------------ semantic vs instance

    def instances_result(self, example, image_file, mask_file, set_name, arch, class_name, depth, session) -> tuple[np.ndarray, np.ndarray, str, int, dict | Any]:
        """(class-coloured image, instance-coloured image, explanation, number of instances, session)."""
        set_name = self.check_set(set_name)
        depth = self.check_depth(depth)
        src = self.source(example, image_file, mask_file, set_name)
        if src.instances is not None and src.gt is not None:
            info = DATASETS[src.gt_dataset]
            count = int(len(np.unique(src.instances[src.instances > 0])))
            note = f"**Ground truth** of {src.label}: left, every pixel coloured by its *class*; right, by its *instance*: {count} separate objects, even where two of the same class touch or overlap."
            return figures.overlay(src.image, src.gt, info, 0.85), figures.instance_colours(src.instances), note, count, gr.skip()
        arch = self.check_models(set_name, [arch] if arch else [])[0]
        info = self.info(set_name)
        labels, session = self._predict(src, set_name, arch, depth, session)
        if class_name in (None, "", ALL_CLASSES):
            targets = list(range(info.num_classes))
            what = "every predicted class"
        elif class_name in info.class_names:
            targets = [info.class_names.index(class_name)]
            what = f"the predicted class **{class_name}**"
        else:
            raise InputError(f"Unknown class {_short(class_name)}; the classes are {', '.join(info.class_names)}.")
        components = np.zeros(labels.shape, dtype=np.int32)
        count = 0
        for target in targets:
            labelled, found = ndimage.label(labels == target)
            components[labelled > 0] = labelled[labelled > 0] + count
            count += found
        note = (f"**Not ground-truth instances:** these are the *connected components* (scipy.ndimage.label) of {what} in "
                f"{ARCH_NAMES[arch]}'s prediction: {count} regions. Touching objects merge into one region and an occluded object "
                "can split in two; a semantic model does not know where one object ends and the next begins.")
        return figures.overlay(src.image, labels, info, 0.85), figures.instance_colours(components), note, count, session

    @user_errors
    @_gpu
    def instances(self, example, image_file, mask_file, set_name, arch, class_name, depth, session):
        classes, instances, note, _, session = self.instances_result(example, image_file, mask_file, set_name, arch, class_name, depth, session)
        return classes, instances, note, session
