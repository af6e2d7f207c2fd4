"""The architecture registry: ``@register_architecture(name, display_name)`` on a
:class:`SegmentationModel` subclass whose constructor takes ``(encoder, num_classes, **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..registry import DisplayNames, Registry
from .base import SegmentationModel

ARCHITECTURES = Registry("architecture")
ARCH_NAMES = DisplayNames(ARCHITECTURES)
RESERVED_ARGUMENTS = ("encoder", "num_classes")


def register_architecture(name: str, display_name: str) -> Callable[[type[SegmentationModel]], type[SegmentationModel]]:
    """Decorator registering an architecture. Its constructor's keyword parameters after
    ``encoder`` and ``num_classes`` are its options; if its :attr:`encoder_requirements`
    restrict the output stride, one of them must be ``output_stride``."""

    def add(cls: type[SegmentationModel]) -> type[SegmentationModel]:
        if not issubclass(cls, SegmentationModel):
            raise TypeError(f"architectures must subclass SegmentationModel; {cls.__qualname__} does not")
        if cls.encoder_requirements.output_strides and "output_stride" not in inspect.signature(cls).parameters:
            raise TypeError(f"{cls.__qualname__} restricts its encoder's output stride, so it must take an output_stride option")
        return ARCHITECTURES.register(name, display_name)(cls)

    return add
