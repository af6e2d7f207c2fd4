"""Model specs and model cards: what is needed to rebuild a model, and the evidence about it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import ARCHITECTURES, SegmentationModel, create_model

# Options whose default changed after cards were written, with the value those cards meant:
# DeepLabV3+ became depthwise separable; a card without the option holds dense weights.
LEGACY_OPTIONS = {"deeplabv3p": {"separable": False}}


def model_spec(arch: str, encoder: str, num_classes: int, base_channels: int = 64, options: dict | None = None) -> dict:
    """The arguments of :func:`create_model` as a JSON-friendly dict; an option of
    :data:`LEGACY_OPTIONS` is written out with its current default, so that the spec
    rebuilds the same model."""
    written = {option: ARCHITECTURES.entry(arch).default(option) for option in LEGACY_OPTIONS.get(arch, {})} | dict(options or {})
    return {"arch": arch, "encoder": encoder, "num_classes": num_classes, "base_channels": base_channels, "options": written}


def model_from_spec(spec: dict, pretrained: bool = False) -> SegmentationModel:
    """Rebuild a model from :func:`model_spec` (encoder weights come from the checkpoint);
    a spec without an option of :data:`LEGACY_OPTIONS` gets the value it was written with."""
    options = LEGACY_OPTIONS.get(spec["arch"], {}) | spec["options"]
    return create_model(spec["arch"], spec["num_classes"], encoder=spec["encoder"], pretrained=pretrained, base_channels=spec["base_channels"], **options)


def count_parameters(model: nn.Module, **forward_options) -> int:
    """All parameters; with forward options (e.g. ``depth=2`` for a pruned U-Net++), only
    those of the modules an inference pass with those options actually runs."""
    if not forward_options:
        return sum(p.numel() for p in model.parameters())
    used: dict[int, nn.Parameter] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: used.update({id(p): p for p in mod.parameters(recurse=False)})) for m in model.modules()]
    try:
        count_flops(model, (64, 64), **forward_options)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(p.numel() for p in used.values())


def count_flops(model: nn.Module, input_size: tuple[int, int], **forward_options) -> int:
    """Floating-point operations of one forward pass on a 1 x 3 x H x W input
    (``torch.utils.flop_counter``: a multiply-add counts as 2)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, *input_size, device=device), **forward_options)
    model.train(was_training)
    return int(counter.get_total_flops())


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The repository's current commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
