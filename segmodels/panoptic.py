"""Panoptic-DeepLab's training targets, loss and grouping (Cheng et al., CVPR 2020),
and the shipped Shapes instance model.

**Targets**, from an instance map: each object ``k`` is represented by its centre
of mass ``c_k``; the centre heatmap is ``max_k exp(-||x - c_k||^2 / (2 sigma^2))`` and the
offset at every pixel ``x`` of object ``k`` is ``c_k - x`` (0 elsewhere).

**Loss** (the paper and its official configuration)::

    L = lambda_sem L_sem + lambda_heat L_heat + lambda_offset L_offset

with ``L_heat`` the mean squared error of the heatmap over all pixels, ``L_offset`` the L1
error of the offsets over the *thing* pixels, ``lambda_heat = 200`` and
``lambda_offset = 0.01``. The paper's ``L_sem`` is bootstrapped cross-entropy with small
objects (under 64 x 64 px) weighted 3x; here it is the plain cross-entropy the shipped Shapes models were
trained with.

**Grouping**: centres are the peaks of the heatmap kept by keypoint NMS (a pixel
survives when it equals the max-pool of its ``nms_kernel`` x ``nms_kernel`` neighbourhood),
above ``threshold`` (0.1), at most ``top_k`` (200) of them. Every thing pixel ``x`` of the
semantic prediction then joins the centre nearest to where its offset points::

    k_hat(x) = argmin_k || C_k - (x + O(x)) ||

and each instance takes the class most of its pixels were predicted as (majority vote). With
no centre, thing pixels belong to no segment.

**Scale.** The paper's sigma = 8 px and the official 7 x 7 NMS window are for 1024 x 2048 Cityscapes frames.
Shapes images are 128 px and their objects 16 px and up; the heads run at stride 4 and are
upsampled bilinearly, so a peak much narrower than 4 px cannot be drawn. Here sigma = 4 px:
two touching 16 px objects have centres 16 px = 4 sigma apart, so their peaks stay apart.
The NMS window stays 7 x 7 (3 px each side, less than half that distance).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from . import zoo
from .cards import model_from_spec
from .metrics import ConfusionMatrix
from .models.panoptic import HEAD_CHANNELS, PanopticDeepLab, PanopticOutput
from .panoptic_quality import PanopticQuality, panoptic_ids

CENTRE_SIGMA = 4.0
CENTRE_WEIGHT = 200.0
OFFSET_WEIGHT = 0.01
CENTRE_THRESHOLD = 0.1
NMS_KERNEL = 7
TOP_K = 200
INSTANCE_FOLDER = "instance"
SHAPES_THING_CLASSES = (1, 2, 3)


# ---------------------------------------------------------------------------- targets and loss


def centre_and_offset_targets(instances: np.ndarray, sigma: float = CENTRE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """(centre heatmap H x W, offsets 2 x H x W as (dy, dx) in pixels), float32, from an
    instance map (0 = no object, 1..n = objects)."""
    instances = np.asarray(instances)
    yy, xx = np.mgrid[0:instances.shape[0], 0:instances.shape[1]].astype(np.float32)
    heatmap = np.zeros(instances.shape, dtype=np.float32)
    offsets = np.zeros((2, *instances.shape), dtype=np.float32)
    for instance_id in np.unique(instances[instances > 0]):
        inside = instances == instance_id
        centre_y, centre_x = yy[inside].mean(), xx[inside].mean()
        heatmap = np.maximum(heatmap, np.exp(-((yy - centre_y) ** 2 + (xx - centre_x) ** 2) / (2 * sigma**2)))
        offsets[0][inside] = centre_y - yy[inside]
        offsets[1][inside] = centre_x - xx[inside]
    return heatmap, offsets


def panoptic_loss(output: PanopticOutput, semantic: torch.Tensor, heatmap: torch.Tensor, offsets: torch.Tensor, things: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted loss terms and their sum (``total``). ``semantic``: B x H x W class ids;
    ``heatmap``: B x H x W; ``offsets``: B x 2 x H x W; ``things``: B x H x W bool (pixels of
    thing classes, where offsets are trained)."""
    semantic_term = F.cross_entropy(output.semantic, semantic)
    centre_term = F.mse_loss(output.centre[:, 0], heatmap)
    weight = things.unsqueeze(1).to(offsets.dtype)
    offset_term = (F.l1_loss(output.offset, offsets, reduction="none") * weight).sum() / weight.sum().clamp_min(1.0)
    terms = {"semantic": semantic_term, "centre": CENTRE_WEIGHT * centre_term, "offset": OFFSET_WEIGHT * offset_term}
    return {**terms, "total": sum(terms.values())}


# ---------------------------------------------------------------------------- grouping


@dataclass
class PanopticPrediction:
    """One image's panoptic segmentation.

    Attributes:
        semantic: H x W class ids (each instance's pixels carry its majority class).
        instances: H x W instance ids, 0 = stuff or no instance.
        centres: K x 2 predicted centres (y, x) in pixels, one per instance id 1..K in order.
    """

    semantic: np.ndarray
    instances: np.ndarray
    centres: np.ndarray

    @property
    def count(self) -> int:
        return len(np.unique(self.instances[self.instances > 0]))


def find_centres(heatmap: torch.Tensor, threshold: float = CENTRE_THRESHOLD, nms_kernel: int = NMS_KERNEL, top_k: int = TOP_K) -> torch.Tensor:
    """K x 2 (y, x) positions of the heatmap's peaks (H x W): keypoint NMS by max-pooling,
    then the threshold, then the ``top_k`` highest, highest first. Pixels that tie for the
    maximum of a window (a plateau, as when a centre falls between pixels) give one peak,
    the first in raster order."""
    if nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ValueError(f"nms_kernel must be an odd positive size, got {nms_kernel}")
    heatmap = heatmap.detach().float()
    pooled = F.max_pool2d(heatmap[None, None], nms_kernel, stride=1, padding=nms_kernel // 2)[0, 0]
    peaks = (heatmap == pooled) & (heatmap > threshold)
    positions = peaks.nonzero()
    positions = positions[heatmap[peaks].argsort(descending=True, stable=True)]
    kept: list[torch.Tensor] = []
    for position in positions:
        if len(kept) == top_k:
            break
        if all((position - other).abs().max() > nms_kernel // 2 for other in kept):
            kept.append(position)
    return torch.stack(kept) if kept else positions[:0]


def group_pixels(things: torch.Tensor, offsets: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """H x W instance ids: each pixel of ``things`` (H x W bool) joins centre ``k`` (id k + 1)
    nearest to where its offset (2 x H x W, dy and dx) points; 0 elsewhere, and everywhere
    when there is no centre."""
    instances = torch.zeros(things.shape, dtype=torch.int64, device=things.device)
    if len(centres) == 0:
        return instances
    yy, xx = torch.meshgrid(torch.arange(things.shape[0], device=things.device), torch.arange(things.shape[1], device=things.device), indexing="ij")
    pointed = torch.stack([yy + offsets[0], xx + offsets[1]], dim=-1)[things]  # N x 2
    distances = torch.cdist(pointed.float(), centres.float())  # N x K
    instances[things] = distances.argmin(dim=1) + 1
    return instances


def majority_vote(semantic: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int]) -> np.ndarray:
    """``semantic`` with every instance's pixels set to the thing class most of them carry."""
    merged = semantic.copy()
    for instance_id in np.unique(instances[instances > 0]):
        inside = instances == instance_id
        counts = np.bincount(semantic[inside], minlength=max(thing_classes) + 1)
        merged[inside] = max(thing_classes, key=lambda c: counts[c])
    return merged


def panoptic_from_output(output: PanopticOutput, thing_classes: Sequence[int], threshold: float = CENTRE_THRESHOLD, nms_kernel: int = NMS_KERNEL, top_k: int = TOP_K) -> list[PanopticPrediction]:
    """Group each image of a batch into instances (see the module docstring)."""
    predictions = []
    labels = output.semantic.argmax(1)
    for semantic, heatmap, offsets in zip(labels, output.centre[:, 0], output.offset):
        centres = find_centres(heatmap, threshold, nms_kernel, top_k)
        things = torch.isin(semantic, torch.tensor(list(thing_classes), device=semantic.device))
        instances = group_pixels(things, offsets, centres)
        semantic_np, instances_np = semantic.cpu().numpy().astype(np.uint8), instances.cpu().numpy().astype(np.int32)
        predictions.append(PanopticPrediction(majority_vote(semantic_np, instances_np, thing_classes), instances_np, centres.cpu().numpy()))
    return predictions


@torch.inference_mode()
def predict_panoptic(model: PanopticDeepLab, image: np.ndarray, thing_classes: Sequence[int] = SHAPES_THING_CLASSES) -> PanopticPrediction:
    """The panoptic segmentation of one H x W x 3 uint8 image."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255).unsqueeze(0).to(device)
    return panoptic_from_output(model(x), thing_classes)[0]


def connected_components(labels: np.ndarray, targets: Sequence[int]) -> tuple[np.ndarray, int]:
    """The 4-connected regions of each target class, numbered 1, 2, ... across classes."""
    components = np.zeros(labels.shape, dtype=np.int32)
    count = 0
    for target in targets:
        labelled, found = ndimage.label(labels == target)
        components[labelled > 0] = labelled[labelled > 0] + count
        count += found
    return components, count


# ---------------------------------------------------------------------------- the shipped model


def panoptic_spec(semantic_spec: dict, head_channels: int = HEAD_CHANNELS) -> dict:
    """What rebuilds a :class:`PanopticDeepLab`: the semantic model's spec and the head width."""
    return {"arch": "panoptic_deeplab", "semantic": dict(semantic_spec), "head_channels": head_channels}


def panoptic_from_spec(spec: dict) -> PanopticDeepLab:
    return PanopticDeepLab(model_from_spec(spec["semantic"], pretrained=False), spec["head_channels"])


def instance_dir(weights_dir: Path, set_name: str) -> Path:
    """Where a set's instance model lives: ``<weights>/<set>/instance/``, one level below the
    semantic models, so :func:`segmodels.zoo.list_models` (``<weights>/*/*.json``) never
    lists it as a semantic model."""
    return Path(weights_dir) / set_name / INSTANCE_FOLDER


def instance_models(weights_dir: Path, set_name: str) -> list[str]:
    """Names of the instance models shipped for a set."""
    return sorted(card.stem for card in instance_dir(weights_dir, set_name).glob("*.json"))


def export_panoptic(run_dir: Path, set_name: str, name: str, weights_dir: Path = zoo.WEIGHTS_DIR, extra: dict | None = None) -> Path:
    """A run's ``best.pt`` as an fp16 state dict with its card (see :func:`segmodels.zoo.export_model`)."""
    return zoo.export_model(run_dir, f"{INSTANCE_FOLDER}/{name}", weights_dir=Path(weights_dir) / set_name, extra=extra)


_cache: dict[tuple, tuple[tuple, PanopticDeepLab]] = {}
_lock = threading.Lock()


def load_panoptic(set_name: str, name: str, device: torch.device | str = "cpu", weights_dir: Path = zoo.WEIGHTS_DIR) -> PanopticDeepLab:
    """A shipped instance model in eval mode on ``device``, its weights checked against the
    SHA-256 in its card; cached until its files change. Raises :class:`segmodels.zoo.WeightsError`."""
    set_dir = Path(weights_dir) / set_name
    qualified = f"{INSTANCE_FOLDER}/{name}"
    stamp = zoo.file_stamp(qualified, set_dir)
    key = (str(set_dir / qualified), str(torch.device(device)))
    with _lock:
        cached = _cache.get(key)
        if cached is None or cached[0] != stamp:
            card = zoo.load_card(qualified, set_dir)
            state = zoo.load_state_dict_checked(set_dir / INSTANCE_FOLDER / card["weights_file"], card["sha256"])
            model = panoptic_from_spec(card)
            model.load_state_dict(state)
            _cache[key] = (stamp, model.eval().to(device))
        return _cache[key][1]


def load_panoptic_card(set_name: str, name: str, weights_dir: Path = zoo.WEIGHTS_DIR) -> dict:
    """The card of a shipped instance model (:class:`segmodels.zoo.WeightsError` when absent)."""
    return zoo.load_card(f"{INSTANCE_FOLDER}/{name}", Path(weights_dir) / set_name)


# ---------------------------------------------------------------------------- evaluation


def evaluate_panoptic(model: PanopticDeepLab, samples, class_names: Sequence[str], thing_classes: Sequence[int], batch_size: int = 10) -> dict:
    """PQ, SQ and RQ (:class:`PanopticQuality`) of ``model`` and, for comparison, of the
    connected components of its own semantic prediction, and that prediction's mIoU, over
    ``samples``: (image, class ids, instance ids) arrays."""
    grouped, components = PanopticQuality(class_names, thing_classes), PanopticQuality(class_names, thing_classes)
    confusion = ConfusionMatrix(len(class_names))
    device = next(model.parameters()).device
    samples = list(samples)
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size]
            images = torch.from_numpy(np.stack([image.transpose(2, 0, 1) for image, _, _ in batch])).float().div(255).to(device)
            output = model(images)
            labels = output.semantic.argmax(1).cpu()
            confusion.update(labels, torch.from_numpy(np.stack([semantic for _, semantic, _ in batch]).astype(np.int64)))
            labels = labels.numpy()
            for prediction, semantic_labels, (_, semantic, instances) in zip(panoptic_from_output(output, thing_classes), labels, batch):
                truth = panoptic_ids(semantic, instances, thing_classes)
                grouped.update(panoptic_ids(prediction.semantic, prediction.instances, thing_classes), truth)
                regions, _ = connected_components(semantic_labels, thing_classes)
                components.update(panoptic_ids(semantic_labels, regions, thing_classes), truth)
    return {"num_images": len(samples), **grouped.compute(), "connected_components": components.compute(), "semantic_miou": confusion.compute()["miou"]}
