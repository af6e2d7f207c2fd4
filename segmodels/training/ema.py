"""Exponential moving average of the weights (Polyak & Juditsky 1992; the averaged model is
what EfficientNet, Tan & Le 2019, Sec. 5.2, evaluates): after every optimiser step
``theta_ema <- d theta_ema + (1 - d) theta`` for every floating-point parameter and buffer
(batch-norm statistics included), with ``d_t = min(decay, (1 + t) / (10 + t))`` at update
``t`` so that the average forgets its random start quickly (TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A frozen copy of ``model`` that follows it by exponential moving average."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the averaging decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1 - self.current_decay()
        averaged, current = [], []
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        if state["decay"] != self.decay:
            raise ValueError(f"the saved average has decay {state['decay']}, this one {self.decay}")
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
