"""One model of a lock-step run: its optimiser, schedule, loss, weight average and clock,
and its training step; the models of a run share each step's batch (:mod:`.loop`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..cards import model_from_spec, model_spec
from ..evaluation import evaluate
from ..losses import build_loss
from .config import TrainConfig, learning_rate_factor, optimisation_step, parameter_groups, seed_everything
from .ema import WeightAverage
from .frames import FrameDataset
from .peers import SmpPeer, peer_spec
from .recipe import MemberPlan


class StepClock:
    """Seconds spent in one model's steps, from marks set before and after each step: CUDA
    events on a GPU (read, with one synchronisation, by :meth:`total`), the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.seconds = 0.0

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def total(self) -> float:
        """All the seconds between pairs of marks so far."""
        if self.cuda:
            torch.cuda.synchronize()
        for start, end in zip(self.marks[::2], self.marks[1::2]):
            self.seconds += start.elapsed_time(end) / 1000 if self.cuda else end - start
        self.marks.clear()
        return self.seconds


@dataclass
class ZooMember:
    """One model of the run and everything its run folder records."""

    name: str
    peer: bool
    config: TrainConfig
    spec: dict
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    clock: StepClock
    output_dir: Path
    steps_per_epoch: int
    total_steps: int
    best_miou: float = -1.0
    best_epoch: int | None = None
    val_seconds: float = 0.0
    loss_sum: Tensor | None = None
    steps: int = 0

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights the run judges and keeps: the average when there is one."""
        return self.average.model if self.average is not None else self.model

    def start_epoch(self, epoch: int) -> None:
        if hasattr(self.criterion, "start_epoch"):
            self.criterion.start_epoch(epoch)

    def train_step(self, images: Tensor, masks: Tensor, device: torch.device) -> None:
        self.clock.mark()
        loss = optimisation_step(self.model, images, masks, self.criterion, self.optimizer, self.scaler, self.scheduler, device)
        if self.average is not None:
            self.average.update(self.model)
        self.loss_sum = loss.detach() if self.loss_sum is None else self.loss_sum + loss.detach()
        self.steps += 1
        self.clock.mark()

    def end_epoch_loss(self) -> float:
        loss = float(self.loss_sum) / self.steps
        self.loss_sum, self.steps = None, 0
        return loss

    def fit_schedule(self, epochs: int) -> None:
        """Shorten the learning-rate schedule to ``epochs`` (the time budget's plan): the poly
        decay then still reaches zero at the last step."""
        self.total_steps = self.steps_per_epoch * epochs
        self.config.epochs = epochs

    def validate(self, val_set: FrameDataset, batch_size: int, device: torch.device, **options) -> dict:
        return evaluate(self.evaluated_model, val_set, self.spec["num_classes"], val_set.ignore_index, device, batch_size=batch_size, **options).compute()

    def checkpoint_state(self, epoch: int) -> dict:
        """What resumes this model: weights, average, optimiser, schedule, loss scaler, the
        best score so far and the seconds spent (:meth:`restore` reads it back)."""
        return {"epoch": epoch, "model": self.model.state_dict(), "average": self.average.state_dict() if self.average else None, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "total_steps": self.total_steps, "spec": self.spec,
                "best_miou": self.best_miou, "best_epoch": self.best_epoch, "train_seconds": self.clock.total(), "val_seconds": self.val_seconds}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`checkpoint_state` (tensors on the CPU): the schedule's length
        first, since the learning rate of the restored step depends on it."""
        self.model.load_state_dict(state["model"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.fit_schedule(state["total_steps"] // self.steps_per_epoch)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_miou, self.best_epoch, self.val_seconds = state["best_miou"], state["best_epoch"], state["val_seconds"]
        self.clock.seconds = state["train_seconds"]


def build_model(plan: MemberPlan, num_classes: int, encoder_state: dict | None) -> tuple[dict, nn.Module]:
    """(spec, model) with the encoder's ImageNet weights from ``encoder_state`` (our
    encoder's state dict; the same tensors go into smp's timm encoder)."""
    config = plan.config
    if plan.peer:
        spec = peer_spec(config.arch, config.encoder, num_classes)
        model = SmpPeer(spec)
        if encoder_state is not None:
            model.load_encoder_state(encoder_state)
        return spec, model
    spec = model_spec(config.arch, config.encoder, num_classes, config.base_channels, config.options)
    model = model_from_spec(spec, pretrained=False)
    if encoder_state is not None:
        model.encoder.load_state_dict(encoder_state)
    return spec, model


def build_member(plan: MemberPlan, num_classes: int, ignore_index: int, class_counts: tuple[Tensor, Tensor], encoder_state: dict | None, steps_per_epoch: int,
                 device: torch.device, fresh: bool = True) -> ZooMember:
    """The model as :class:`segmodels.training.Trainer` builds it: seeded, then the encoder's
    ImageNet weights; AdamW without weight decay on biases and norms; warm-up and poly per step.
    A ``fresh`` run clears its run folder; a resumed one keeps it."""
    config = plan.config
    seed_everything(config.seed)
    spec, model = build_model(plan, num_classes, encoder_state)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    counts, image_counts = class_counts
    criterion = build_loss(config.loss, num_classes, counts, ignore_index=ignore_index, gamma=config.focal_gamma, image_counts=image_counts,
                           options=config.loss_options).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=device.type == "cuda")
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("history.jsonl", "best.pt", "last.pt", "card.json") if fresh else ():
        (output_dir / stale).unlink(missing_ok=True)
    member = ZooMember(plan.name, plan.peer, config, spec, model, criterion, optimizer, None, scaler, average, StepClock(device), output_dir, steps_per_epoch,
                       steps_per_epoch * config.epochs)
    member.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, member.total_steps, warmup_steps, config.schedule))
    return member


def half_state(model: nn.Module) -> dict:
    """The state dict in float16 on the CPU, the precision the zoo ships."""
    return {key: (value.half() if value.is_floating_point() else value).contiguous().cpu() for key, value in model.state_dict().items()}
