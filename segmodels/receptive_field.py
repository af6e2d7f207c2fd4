"""Receptive fields: theoretical (derived from every layer's kernel, stride, dilation and
padding while the model runs) and effective (Luo et al., NeurIPS 2016: the input gradient
of one output pixel).

The theoretical receptive field of a feature is the size ``r`` of the input window that can
influence one of its pixels; ``jump`` is the distance in input pixels between neighbouring
feature pixels, and ``start`` the input coordinate of the first feature pixel's centre. A
layer with kernel k, stride s, dilation d and padding p maps them as (Araujo et al. 2019):

    k_eff = d (k - 1) + 1,  r' = r + (k_eff - 1) jump,  jump' = jump s,
    start' = start + ((k_eff - 1) / 2 - p) jump.

Branches that meet (concatenation, addition) take the largest window; global pooling
(ASPP's image-pooling branch) sees the whole image, reported as ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .blocks import ATROUS_CONVS


@dataclass(frozen=True)
class Field:
    """Receptive field of a feature map along one axis, in input pixels."""

    size: float = 1.0
    jump: float = 1.0
    start: float = 0.5

    @property
    def is_global(self) -> bool:
        return math.isinf(self.size)

    def through(self, kernel: int, stride: int, dilation: int = 1, padding: int = 0) -> Field:
        if self.is_global:
            return self
        k_eff = dilation * (kernel - 1) + 1
        return Field(
            size=self.size + (k_eff - 1) * self.jump,
            jump=self.jump * stride,
            start=self.start + ((k_eff - 1) / 2 - padding) * self.jump,
        )

    def upsampled(self, factor: float, interpolates: bool) -> Field:
        """Upsampling by ``factor``: bilinear interpolation mixes two neighbours."""
        if self.is_global:
            return self
        return Field(size=self.size + (self.jump if interpolates else 0.0), jump=self.jump / factor, start=self.start)


GLOBAL = Field(size=math.inf, jump=math.inf, start=math.nan)


@dataclass(frozen=True)
class LayerField:
    """One conv or pool layer as it ran, with the receptive field of its output."""

    index: int
    name: str
    op: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    size: float
    jump: float
    start: float

    def as_dict(self) -> dict:
        return asdict(self)


def _pair(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _cropped(field: Field, index) -> Field:
    """The field after indexing: a crop ``[..., start:, ...]`` of the width axis (the last
    index) moves the first pixel's centre by ``start`` pixels of the feature map."""
    width_index = index[-1] if isinstance(index, tuple) else None
    if not isinstance(width_index, slice) or not isinstance(width_index.start, int) or width_index.start <= 0 or field.is_global:
        return field
    return Field(field.size, field.jump, field.start + width_index.start * field.jump)


def _merge(fields: list[Field]) -> Field:
    if not fields:
        return Field()
    widest = max(fields, key=lambda f: f.size)
    return Field(size=widest.size, jump=min(f.jump for f in fields), start=widest.start)


def _arg(args: tuple, kwargs: dict, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


class _FieldTracer(TorchFunctionMode):
    """Tags every tensor produced during a forward pass with its receptive field."""

    def __init__(self, module_names: dict[int, str]):
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, Field]] = {}
        self.layers: list[LayerField] = []
        self.current_module = ""
        self.module_names = module_names

    def field_of(self, tensor: torch.Tensor) -> Field | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def tag(self, tensor: torch.Tensor, field: Field) -> None:
        self.fields[id(tensor)] = (tensor, field)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        known = [f for f in (self.field_of(t) for t in inputs) if f is not None]
        if not known:
            return result
        field = self._apply(func, args, kwargs, inputs, _merge(known))
        for out in tree_flatten(result)[0]:
            if isinstance(out, torch.Tensor):
                self.tag(out, field)
        return result

    def _record(self, op: str, kernel: int, stride: int, dilation: int, padding: int, field: Field) -> None:
        self.layers.append(LayerField(len(self.layers), self.current_module, op, kernel, stride, dilation, padding, field.size, field.jump, field.start))

    def _apply(self, func, args, kwargs, inputs, field: Field) -> Field:
        name = getattr(func, "__name__", "")
        if name in ("conv2d", "max_pool2d", "avg_pool2d", "max_pool2d_with_indices"):
            if name == "conv2d":
                weight = _arg(args, kwargs, 1, "weight", None)
                kernel = weight.shape[-1]
                stride, padding, dilation = (_pair(_arg(args, kwargs, i, n, d)) for i, n, d in ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)))
            else:
                kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
                stride = _pair(_arg(args, kwargs, 2, "stride", None) or kernel)
                padding = _pair(_arg(args, kwargs, 3, "padding", 0))
                dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if name != "avg_pool2d" else 1
            out = field.through(kernel, stride, dilation, padding)
            self._record(name.replace("_with_indices", ""), kernel, stride, dilation, padding, out)
            return out
        if name == "conv_transpose2d":
            weight = _arg(args, kwargs, 1, "weight", None)
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            kernel = weight.shape[-1]
            out = Field(size=field.size + (math.ceil(kernel / stride) - 1) * field.jump, jump=field.jump / stride, start=field.start)
            self._record(name, kernel, stride, 1, 0, out)
            return out
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"):
            source = inputs[0]
            bins = _pair(_arg(args, kwargs, 1, "output_size", 1))
            window = math.ceil(source.shape[-1] / bins)
            out = GLOBAL if bins == 1 else field.through(window, window)
            self._record("adaptive_pool", window, window, 1, 0, out)
            return out
        if name == "interpolate":
            source = inputs[0]
            size = _arg(args, kwargs, 1, "size", None)
            factor = (_pair(size) / source.shape[-1]) if size is not None else float(_pair(_arg(args, kwargs, 2, "scale_factor", 1)))
            mode = _arg(args, kwargs, 3, "mode", "nearest")
            return field if factor == 1 else field.upsampled(factor, interpolates=mode != "nearest")
        if name == "__getitem__":
            return _cropped(field, args[1])
        if name == "pad":
            pad = _arg(args, kwargs, 1, "pad", (0,))
            return Field(field.size, field.jump, field.start - pad[0] * field.jump)
        return field


def theoretical_receptive_field(model: nn.Module, input_size: tuple[int, int] = (256, 256), **forward_options) -> list[LayerField]:
    """Run ``model`` once on a blank image and return, for every convolution and pooling in
    execution order, its hyper-parameters and the receptive field of its output (along the
    width axis; all kernels here are square). Deep-supervision heads are included when the
    model is in training mode; call ``model.eval()`` for the inference path."""
    names = {id(m): name for name, m in model.named_modules()}
    tracer = _FieldTracer(names)
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: setattr(tracer, "current_module", names[id(mod)])) for m in model.modules() if not list(m.children())]
    image = torch.zeros(1, 3, *input_size, device=next(model.parameters()).device)
    try:
        with torch.no_grad(), tracer:
            tracer.tag(image, Field())
            model(image, **forward_options)
    finally:
        for hook in hooks:
            hook.remove()
    return tracer.layers


def effective_receptive_field(model: nn.Module, image: torch.Tensor, pixel: tuple[int, int], class_index: int | None = None, **forward_options) -> torch.Tensor:
    """Effective receptive field (Luo et al. 2016, Sec. 2): |d logit(y, x) / d image|, summed
    over colour channels and normalised to [0, 1]; an H x W map. Only the image is
    differentiated, so a shared model's parameters get no ``.grad``.

    Args:
        image: 3 x H x W (or 1 x 3 x H x W) in the model's input range.
        pixel: (row, column) of the output pixel.
        class_index: whose logit to differentiate; the predicted class at the pixel when None.
    """
    row, col = pixel
    x = image.unsqueeze(0) if image.dim() == 3 else image
    x = x.detach().clone().requires_grad_(True)
    if not (0 <= row < x.shape[-2] and 0 <= col < x.shape[-1]):
        raise ValueError(f"pixel {pixel} lies outside the {x.shape[-2]}x{x.shape[-1]} image")
    with torch.enable_grad():
        logits = model(x, **forward_options)
        target = int(logits[0, :, row, col].argmax()) if class_index is None else class_index
        (gradient,) = torch.autograd.grad(logits[0, target, row, col], x)
    gradient = gradient[0].abs().sum(0)
    peak = gradient.max()
    return gradient / peak if peak > 0 else gradient


def aspp_rates(model: nn.Module) -> list[int]:
    """The dilation rates of the ASPP branches of a DeepLabV3+ model, read from its layers."""
    return [m.rate for m in model.modules() if isinstance(m, ATROUS_CONVS)]


def output_field_size(layers: list[LayerField]) -> float:
    """Largest theoretical receptive field reached in the network."""
    return max((layer.size for layer in layers), default=1.0)


__all__ = ["Field", "LayerField", "theoretical_receptive_field", "effective_receptive_field", "aspp_rates", "output_field_size"]
