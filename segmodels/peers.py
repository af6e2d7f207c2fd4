"""segmentation_models_pytorch (smp, Iakubovskii 2019) as a peer in latency comparisons,
prepared and run exactly as segmodels runs its own models, so that a ratio between the two
compares the architectures and their code, not how each side was prepared:

- the same input contract (:class:`SmpPeer`): ImageNet normalisation inside the model, zero
  padding on the right and bottom to the multiple smp needs, the logits cropped back, as
  :meth:`segmodels.models.SegmentationModel.forward` does;
- the same preparation, :func:`segmodels.runtime.prepare_for_inference` (batch norms folded
  into the convolutions with ``fold_batchnorm``, channels_last on the CPU);
- the same runtime objects (:mod:`segmodels.runtime.runtimes`): PyTorch in float32, PyTorch
  under bfloat16 autocast (CPU) and ONNX Runtime;
- every candidate timed in the same interleaved rounds, in a new random order each round
  (:func:`segmodels.benchmark.time_interleaved`), reported as median and interquartile range.

Two smp models per architecture: smp's defaults, and a *parameter-matched* one whose decoder
width is found by bisection so that its parameter count is the closest to ours
(:func:`matched_width`). smp's U-Net and U-Net++ decoder widths halve from the deepest block
((256, 128, 64, 32, 16) by default), so one width w gives (w, w/2, w/4, w/8, w/16); its
DeepLabV3+ has one width (256 by default). The encoder is built with ``encoder_weights=None``:
nothing is downloaded, and latency and FLOPs do not depend on the weights.

``python -m segmodels bench --smp`` prints the table; ``scripts/inference_speed.py --smp`` adds
the peers to the shipped models' candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .benchmark import summarize_timings, time_interleaved
from .cards import count_flops, count_parameters
from .models import ARCH_NAMES, create_model
from .models.base import IMAGENET_MEAN, IMAGENET_STD
from .runtime import prepare_for_inference, runtime_named

SMP_CLASSES = {"unet": "Unet", "unetpp": "UnetPlusPlus", "deeplabv3p": "DeepLabV3Plus"}
DEFAULT_WIDTH = 256  # smp's deepest decoder width (U-Net, U-Net++) and DeepLabV3+'s width
WIDTH_RANGE = (8, 4096)


def smp_encoder_name(encoder: str) -> str:
    """smp's name for a segmodels encoder (timm's EfficientNet-Lite0 through smp's ``tu-``)."""
    if encoder == "plain":
        raise ValueError("segmentation_models_pytorch has no 'plain' encoder; compare with --encoder efficientnet_lite0 or a resnet")
    return "tu-efficientnet_lite0" if encoder == "efficientnet_lite0" else encoder


def _smp():
    try:
        import segmentation_models_pytorch
    except ImportError:
        raise ValueError("segmentation_models_pytorch is not installed: pip install segmentation-models-pytorch (it is in requirements-dev.txt)") from None
    return segmentation_models_pytorch


class SmpPeer(nn.Module):
    """An smp model behind segmodels' input contract: images in [0, 1], normalised with
    ImageNet statistics inside, zero-padded on the right and bottom to a multiple of the
    encoder's output stride where smp needs it, logits cropped back to H x W."""

    def __init__(self, model: nn.Module, arch: str, width: int):
        super().__init__()
        self.model = model
        self.arch = arch
        self.width = width
        self.divisor = model.encoder.output_stride if model.requires_divisible_input_shape else 1
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        x = (images - self.mean) / self.std
        pad_h = math.ceil(height / self.divisor) * self.divisor - height
        pad_w = math.ceil(width / self.divisor) * self.divisor - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.model(x)[..., :height, :width]


def build_smp(arch: str, num_classes: int, encoder: str, width: int = DEFAULT_WIDTH) -> SmpPeer:
    """smp's model of ``arch`` on ``encoder`` (no downloaded weights), its decoder ``width``
    wide (smp's default at 256; see the module docstring)."""
    if arch not in SMP_CLASSES:
        raise ValueError(f"segmentation_models_pytorch has no {ARCH_NAMES.get(arch, arch)}; it has {', '.join(ARCH_NAMES[a] for a in SMP_CLASSES)}")
    smp = _smp()
    decoder = {"decoder_channels": width} if arch == "deeplabv3p" else {"decoder_channels": [max(1, round(width / 2**i)) for i in range(5)]}
    model = getattr(smp, SMP_CLASSES[arch])(encoder_name=smp_encoder_name(encoder), encoder_weights=None, classes=num_classes, **decoder)
    return SmpPeer(model, arch, width).eval()


def matched_width(arch: str, num_classes: int, encoder: str, target_params: int) -> int:
    """The smp decoder width whose model's parameter count is the closest to
    ``target_params``: bisection for the narrowest width with at least that many (the count
    grows with the width), then the closer of it and the next narrower."""
    def params(width: int) -> int:
        return count_parameters(build_smp(arch, num_classes, encoder, width))

    low, high = WIDTH_RANGE
    while low < high:
        middle = (low + high) // 2
        if params(middle) >= target_params:
            high = middle
        else:
            low = middle + 1
    return min((low, max(WIDTH_RANGE[0], low - 1)), key=lambda width: abs(params(width) - target_params))


def runtime_runners(prepared: nn.Module, runtimes: Sequence[str], size: tuple[int, int], threads: int, depth: int | None = None,
                    channels_last: bool = True) -> dict[str, Callable[[torch.Tensor], object]]:
    """One pass per runtime (:func:`segmodels.runtime.runtime_named`) of a model prepared by
    :func:`segmodels.runtime.prepare_for_inference`, on a 1 x 3 x H x W image of ``size``,
    run as :class:`segmodels.runtime.Predictor` runs it on the CPU (the input in
    channels_last when the model is); the ONNX Runtime session is built here, for ``size``. A
    runtime that cannot run the model (an export that failed) is left out."""
    runners = {}
    for name in runtimes:
        runtime = runtime_named(name, torch.device("cpu"), threads)
        if runtime.for_pass(prepared, size, depth) is not runtime:
            continue

        def run(x, runtime=runtime):
            image = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            return runtime.labels(prepared, image, depth)

        runners[name] = run
    return runners


def sizes(model: nn.Module, size: tuple[int, int], **forward_options) -> dict:
    """Parameters (millions) and GFLOPs at ``size`` (``segmodels.cards``), before folding."""
    return {"params_m": count_parameters(model, **forward_options) / 1e6, "gflops": count_flops(model, size, **forward_options) / 1e9}


def compare_with_smp(archs: Sequence[str], num_classes: int, encoder: str, size: tuple[int, int], runtimes: Sequence[str], rounds: int = 10,
                     base_channels: int = 64, options: dict[str, dict] | None = None) -> list[dict]:
    """Rows of ours, smp's default and smp's parameter-matched model of each architecture
    smp has (untrained; U-Net++ at full depth), on every runtime, in interleaved rounds."""
    threads = torch.get_num_threads()
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    rows = []
    for arch in archs:
        if arch not in SMP_CLASSES:
            print(f"{ARCH_NAMES[arch]}: segmentation_models_pytorch has none; left out")
            continue
        ours = create_model(arch, num_classes, encoder=encoder, pretrained=False, base_channels=base_channels, **(options or {}).get(arch, {})).eval()
        depth = max(ours.pruning_depths) if ours.pruning_depths else None
        forward = {} if depth is None else {"depth": depth}
        ours_size = sizes(ours, size, **forward)
        width = matched_width(arch, num_classes, encoder, count_parameters(ours))
        sides = {ARCH_NAMES[arch]: (ours, depth), f"smp {ARCH_NAMES[arch]}": (build_smp(arch, num_classes, encoder), None),
                 f"smp {ARCH_NAMES[arch]} matched (width {width})": (build_smp(arch, num_classes, encoder, width), None)}
        runners, described = {}, {}
        for name, (model, side_depth) in sides.items():
            described[name] = ours_size if model is ours else sizes(model, size)
            prepared = prepare_for_inference(model, channels_last=True)
            for runtime, run in runtime_runners(prepared, runtimes, size, threads, side_depth).items():
                runners[(name, runtime)] = lambda run=run: run(image)
        timings = time_interleaved(runners, rounds)
        for (name, runtime), values in timings.items():
            rows.append({"model": name, "arch": arch, "runtime": runtime, **described[name], **summarize_timings(values),
                         "segmodels_params_m": ours_size["params_m"], "segmodels_gflops": ours_size["gflops"],
                         "input": f"{size[0]}x{size[1]}", "device": "cpu", "threads": threads, "prepared": "batch norms folded, channels_last"})
    return rows


def format_comparison(rows: list[dict]) -> str:
    """A plain-text table, with each model's latency over ours on the same runtime."""
    ours = {(r["arch"], r["runtime"]): r["median_ms"] for r in rows if not r["model"].startswith("smp")}
    header = f"{'model':<38} {'runtime':<11} {'params(M)':>9} {'GFLOPs':>7} {'median ms':>10} {'IQR ms':>7} {'/ ours':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = r["median_ms"] / ours[(r["arch"], r["runtime"])]
        lines.append(f"{r['model']:<38} {r['runtime']:<11} {r['params_m']:>9.2f} {r['gflops']:>7.2f} {r['median_ms']:>10.1f} {r['iqr_ms']:>7.1f} {ratio:>7.2f}")
    if rows:
        lines.append(f"input {rows[0]['input']}, batch 1, {rows[0]['threads']} threads, every model {rows[0]['prepared']}; untrained weights")
    return "\n".join(lines)
