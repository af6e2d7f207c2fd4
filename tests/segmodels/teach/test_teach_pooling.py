"""segmodels.teach.pooling: SPP's fixed-length output and PSPNet's pyramid pooling module."""

from __future__ import annotations

import pytest
import torch

from segmodels.teach.pooling import PSP_BINS, SPP, SPP_BINS, PyramidPoolingModule


def test_spp_gives_fixed_length_for_any_size():
    spp = SPP()
    assert spp.bins == SPP_BINS == (1, 2, 4)
    for size in ((7, 9), (32, 32), (100, 3)):
        assert spp(torch.rand(2, 5, *size)).shape == (2, spp.output_length(5)) == (2, 5 * 21)


def test_pyramid_pooling_module_doubles_the_channels_at_the_same_size() -> None:
    module = PyramidPoolingModule(16).eval()
    assert module.bins == PSP_BINS == (1, 2, 3, 6)
    x = torch.randn(2, 16, 12, 15)
    out = module(x)
    assert out.shape == (2, 32, 12, 15) and module.out_channels == 32
    assert torch.equal(out[:, :16], x), "the input is concatenated unchanged"
    pooled = [branch[0](x).shape[-2:] for branch in module.branches]
    assert pooled == [(b, b) for b in PSP_BINS]
    with pytest.raises(ValueError, match="at least the number of bins"):
        PyramidPoolingModule(3)
    with pytest.raises(ValueError, match="bins must be positive"):
        PyramidPoolingModule(8, bins=(1, 0))
