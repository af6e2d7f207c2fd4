"""The one choice of the reduced precision that autocast runs in, for inference, evaluation,
training and benchmarks alike.

bfloat16 (8 exponent bits, as float32) keeps float32's range, so activations need no loss
scaling; float16 (5 exponent bits) is the fallback on CUDA devices without bfloat16 support
(before Ampere)."""

from __future__ import annotations

import torch


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on the CPU and on CUDA devices that support it, float16 on other CUDA devices."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device | str, enabled: bool = True) -> torch.autocast:
    """``torch.autocast`` on ``device`` in :func:`autocast_dtype` (a no-op context when not ``enabled``)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=autocast_dtype(device), enabled=enabled)
