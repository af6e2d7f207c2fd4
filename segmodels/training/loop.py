"""The lock-step trainer: every model of a recipe (ours, extra seeds, smp's peers) trained
side by side on one device, step by step on the same batches (one augmented stream per seed
and augmentation), validated together, stopped together by a time budget, each written as a
run folder (``history.jsonl``, ``last.pt`` every ``checkpoint_every`` epochs, ``best.pt`` in
float16, ``card.json``) that ``python -m segmodels evaluate`` and ``export`` take.

Per step and model: bf16 autocast on CUDA, channels_last, deep supervision (the mean of the
heads' losses), AdamW with linear warm-up and poly decay per step, then the weight average.

Time budget: with ``fit_budget`` the second epoch is timed (the first includes cuDNN's
autotuning: 59 s against 3.3-5.3 s for the later ones of the fair set on an H200,
docs/fair_zoo/train_h200.log) and the schedule of every model shortened to the epochs that
fit (the poly decay then ends at zero, as planned); in any
case a guard stops all models after the same epoch when the next epoch and the final
evaluation would not fit, so the comparison stays fair and the results are still written.

Resume (``LockstepRun.resume``, :mod:`.resume`): a call that ends before the schedule does
(the guard, ``stop_after``) checkpoints every model at its last epoch, and the next call
continues from there exactly. The schedule's length is fixed in the call that starts the run
(the recipe's epochs, or the fitted ones) and recorded in the checkpoints: a resumed run keeps
it, ``fit_budget`` does not shorten it again, and the guard stops each call within its own budget."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cards import device_description
from ..data import CAMVID
from ..losses import dataset_class_statistics
from .augment import AugmentedStream
from .card import build_card
from .config import save_atomically
from .frames import FrameDataset, FrameSet
from .lockstep import ZooMember, build_member, half_state
from .recipe import MemberPlan, Recipe
from .resume import RunRecord, frames_fingerprint, planned_settings, resume_run, save_best, save_checkpoints

EPOCH_TIME_MARGIN = 1.25
FIT_AT_EPOCH = 2


@dataclass
class LockstepRun:
    """How one lock-step call runs (the recipe says what is trained). ``clock`` times the
    budget, the epochs and the validations; ``started`` is read from it unless given.
    ``resume`` continues the run in the output folders; ``stop_after`` ends this call after
    that many epochs (resume later)."""

    budget_seconds: float = 480.0
    resume: bool = False
    stop_after: int | None = None
    fit_budget: bool = False
    checkpoint_every: int = 1
    val_batch_size: int = 16
    finish_reserve_seconds: float = 20.0
    device: str | None = None
    clock: Callable[[], float] = time.monotonic
    started: float | None = None

    def __post_init__(self):
        if self.checkpoint_every < 1 or (self.stop_after is not None and self.stop_after < 1):
            raise ValueError(f"checkpoint_every and stop_after count epochs from 1; got {self.checkpoint_every} and {self.stop_after}")
        if self.started is None:
            self.started = self.clock()


@dataclass
class Outcome:
    epochs_done: int
    epochs_planned: int
    schedule_epochs: int
    stopped_by_time_budget: bool
    wall_seconds: float
    resumed_after: list[int]


def time_to_stop(now: float, deadline: float, next_epoch_seconds: float, finish_seconds: float) -> bool:
    """True when another epoch and the final evaluation would end after ``deadline``."""
    return now + next_epoch_seconds + finish_seconds > deadline


def finish_estimate(members: list[ZooMember], epoch_seconds: float, reserve_seconds: float) -> float:
    """Seconds for the final evaluations: each model twice (the stopping epoch may still need
    validating) and once more per pruning depth (U-Net++), plus a fixed reserve. A model not
    yet validated is charged its share of a training epoch per pass, far more than a val pass."""
    total = reserve_seconds
    for member in members:
        passes = 2 + len(member.model.pruning_depths)
        total += passes * (member.val_seconds or epoch_seconds / len(members))
    return total


def epochs_that_fit(planned: int, done: int, epoch_seconds: float, seconds_left: float, finish_seconds: float, val_round_seconds: float, val_every: int) -> int:
    """The most epochs (at least ``done``, at most ``planned``) whose remaining training,
    validations and final evaluation fit in ``seconds_left``."""
    per_epoch = EPOCH_TIME_MARGIN * epoch_seconds + val_round_seconds / val_every
    return max(done, min(planned, done + math.floor((seconds_left - finish_seconds) / per_epoch)))


def stream_key(config) -> tuple:
    return (config.seed, config.batch_size, tuple(config.crop_size), tuple(config.scale_range), config.photometric)


def check_plans(plans: list[MemberPlan]) -> None:
    if not plans:
        raise ValueError("nothing to train: the recipe and --archs leave no model")
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"run folder names repeat: {names}")
    for setting in ("epochs", "val_every", "protocol", "keep", "dataset"):
        values = {getattr(plan.config, setting) for plan in plans}
        if len(values) > 1:
            raise ValueError(f"models trained in lock-step share {setting}; got {sorted(map(str, values))}")


def validate_round(members: list[ZooMember], val_set: FrameDataset, run: LockstepRun, device: torch.device, epoch: int) -> tuple[dict[str, dict], list[ZooMember]]:
    """Validate every model; returns the scores and the models that keep their best validated
    weights and beat their best (they save them after the epoch's checkpoints)."""
    results, improved = {}, []
    for member in members:
        started = run.clock()
        metrics = member.validate(val_set, run.val_batch_size, device)
        member.val_seconds = max(member.val_seconds, run.clock() - started)
        results[member.name] = metrics
        if member.config.keep == "best" and metrics["miou"] > member.best_miou:
            member.best_miou, member.best_epoch = metrics["miou"], epoch
            improved.append(member)
    return results, improved


def record_epoch(members: list[ZooMember], epoch: int, losses: dict[str, float], results: dict[str, dict]) -> None:
    """Append the epoch to each run's ``history.jsonl``, with the fields training writes."""
    for member in members:
        metrics = results.get(member.name)
        record = {"epoch": epoch, "train_loss": losses[member.name], "val_miou": metrics["miou"] if metrics else None, "lr": member.scheduler.get_last_lr()[0],
                  "seconds": round(member.clock.total(), 2)}
        if metrics:
            record |= {"val_mean_class_accuracy": metrics["mean_class_accuracy"], "val_per_class_iou": metrics["per_class_iou"]}
        with open(member.output_dir / "history.jsonl", "a") as history:
            history.write(json.dumps(record) + "\n")


def write_card(member: ZooMember, val_set: FrameDataset, frames: FrameSet, recipe: Recipe | None, run: LockstepRun, device: torch.device, outcome: Outcome,
               models_in_lockstep: list[str]) -> dict:
    """The kept weights (``best.pt``: the best validated, or the final epoch's) scored on val
    and described by :func:`.card.build_card`, with how the lock-step run went."""
    kept = member.output_dir / "best.pt"
    if member.config.keep == "final":
        save_atomically({"model": half_state(member.evaluated_model), "spec": member.spec, "epoch": outcome.epochs_done}, kept)
    best = torch.load(kept, map_location="cpu", weights_only=True)
    member.evaluated_model.load_state_dict(best["model"])
    data_split = {"train": member.config.protocol, "val": "val", "train_images": len(frames.train_images), "val_images": len(val_set), "frames": frames.description}
    extra = {
        "recipe": recipe.describe() if recipe else None,
        "lockstep": {
            "epochs_planned": outcome.epochs_planned,
            "schedule_epochs": outcome.schedule_epochs,
            "finished": outcome.epochs_done == outcome.schedule_epochs,
            "stopped_by_time_budget": outcome.stopped_by_time_budget,
            "resumed_after_epochs": outcome.resumed_after,
            "budget_seconds": run.budget_seconds,
            "fit_budget": run.fit_budget,
            "wall_seconds_all_models": round(outcome.wall_seconds, 1),
            "models_in_lockstep": models_in_lockstep,
            "amp": amp_mode(device),
            "augmentation": f"on the device (segmodels.training.augment): photometric {member.config.photometric}, scale, crop, flip",
            "best_checkpoint_dtype": "float16",
        },
    }
    card = build_card(member.evaluated_model, member.spec, CAMVID, member.config, data_split=data_split, epochs=outcome.epochs_done, kept_epoch=best["epoch"],
                      metrics=member.validate(val_set, run.val_batch_size, device), train_seconds=member.clock.total(), device=device,
                      validate_at_depth=lambda depth: member.validate(val_set, run.val_batch_size, device, depth=depth), extra=extra)
    (member.output_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card


def amp_mode(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else ("fp16" if device.type == "cuda" else "none")


def build_members(plans: list[MemberPlan], frames: FrameSet, encoder_state: dict | None, device: torch.device,
                  fresh: bool = True) -> tuple[dict[tuple, AugmentedStream], dict[tuple, list[ZooMember]]]:
    """One augmented stream per (seed, batch, crop, scale, photometric) and the models that share it."""
    counts = dataset_class_statistics([frames.train_masks.cpu()], CAMVID.num_classes, CAMVID.ignore_index)
    streams: dict[tuple, AugmentedStream] = {}
    members_by_stream: dict[tuple, list[ZooMember]] = {}
    for plan in plans:
        config, key = plan.config, stream_key(plan.config)
        if key not in streams:
            streams[key] = AugmentedStream(frames.train_images, frames.train_masks, config.seed, config.batch_size, tuple(config.crop_size), tuple(config.scale_range),
                                           CAMVID.ignore_index, config.photometric)
        member = build_member(plan, CAMVID.num_classes, CAMVID.ignore_index, counts, encoder_state, streams[key].steps_per_epoch, device, fresh)
        members_by_stream.setdefault(key, []).append(member)
    return streams, members_by_stream


def train_epoch(streams: dict[tuple, AugmentedStream], members_by_stream: dict[tuple, list[ZooMember]], device: torch.device) -> dict[str, float]:
    """One epoch of every model, step by step: each stream's batch goes to each of its models.
    Streams of different batch sizes stop with the shortest. Returns each model's mean loss."""
    for batches in zip(*(stream.epoch() for stream in streams.values())):
        for key, (images, masks) in zip(streams, batches):
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            for member in members_by_stream[key]:
                member.train_step(images, masks, device)
    return {member.name: member.end_epoch_loss() for group in members_by_stream.values() for member in group}


def train_lockstep(plans: list[MemberPlan], frames: FrameSet, encoder_state: dict | None, run: LockstepRun, recipe: Recipe | None = None, log=print) -> list[dict]:
    """Train every model of ``plans`` in lock-step on ``frames`` and return their cards."""
    check_plans(plans)
    first = plans[0].config
    if first.dataset != "camvid":
        raise ValueError(f"the lock-step trainer trains CamVid-layout frames; the recipe's dataset is {first.dataset!r}")
    deadline = run.started + run.budget_seconds
    device = torch.device(run.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    frames = frames.limited(first.train_images, first.val_images)
    if first.protocol == "train+val":
        frames = frames.train_and_val()
    frames = frames.to(device)
    val_set = FrameDataset(frames.val_images, frames.val_masks, CAMVID.ignore_index)
    log(f"data: {len(frames.train_images)} training ({first.protocol}) and {len(frames.val_images)} val frames on {device_description(device)} "
        f"after {run.clock() - run.started:.1f} s")
    streams, members_by_stream = build_members(plans, frames, encoder_state, device, fresh=not run.resume)
    members = [member for group in members_by_stream.values() for member in group]
    record = RunRecord([member.name for member in members], {member.name: planned_settings(member.config) for member in members}, frames_fingerprint(frames),
                       amp_mode(device), first.epochs, first.epochs)
    epoch = 0
    if run.resume:
        epoch, record = resume_run(members_by_stream, streams, record, device)
        log(f"resumed after epoch {epoch} of {record.schedule_epochs}" + (" (the schedule was fixed when the run started; --fit-budget acts only then)"
                                                                           if run.fit_budget else ""))
    training_started = run.clock()
    planned, epochs, val_every = record.epochs_planned, record.schedule_epochs, first.val_every
    last_epoch_of_call = epochs if run.stop_after is None else min(epochs, epoch + run.stop_after)
    stopped = False
    while epoch < last_epoch_of_call:
        epoch += 1
        started = run.clock()
        for member in members:
            member.start_epoch(epoch - 1)
        losses = train_epoch(streams, members_by_stream, device)
        epoch_seconds = run.clock() - started
        val_round_seconds = sum(member.val_seconds for member in members)
        if run.fit_budget and not run.resume and epoch == min(FIT_AT_EPOCH, epochs):
            finish = finish_estimate(members, epoch_seconds, run.finish_reserve_seconds)
            fitted = epochs_that_fit(planned, epoch, epoch_seconds, deadline - run.clock(), finish, val_round_seconds, val_every)
            if fitted < epochs:
                epochs = record.schedule_epochs = fitted
                last_epoch_of_call = min(last_epoch_of_call, fitted)
                for member in members:
                    member.fit_schedule(epochs)
                log(f"time budget: {planned} epochs do not fit; every schedule now ends after epoch {epochs}")
        validates = epoch % val_every == 0
        if epoch < last_epoch_of_call:
            next_validates = (epoch + 1) % val_every == 0
            ahead = validates * val_round_seconds + EPOCH_TIME_MARGIN * epoch_seconds + next_validates * val_round_seconds
            stopped = time_to_stop(run.clock(), deadline, ahead, finish_estimate(members, epoch_seconds, run.finish_reserve_seconds))
        ends_call = stopped or epoch == last_epoch_of_call
        results, improved = validate_round(members, val_set, run, device, epoch) if validates or ends_call else ({}, [])
        record_epoch(members, epoch, losses, results)
        if epoch % run.checkpoint_every == 0 or improved or ends_call:
            record.wall_seconds += run.clock() - training_started
            training_started = run.clock()
            save_checkpoints(members_by_stream, streams, epoch, record, device)
        for member in improved:
            save_best(member, epoch)
        scores = "  ".join(f"{name} {values['miou']:.4f}" for name, values in results.items())
        log(f"epoch {epoch}/{epochs} in {run.clock() - started:.1f} s" + (f"  val mIoU: {scores}" if scores else "") + f"  ({run.clock() - run.started:.0f} s elapsed)")
        if stopped:
            log(f"time budget: every model stops after epoch {epoch} of {epochs} ({deadline - run.clock():.0f} s left for the cards); continue with --resume")
            break
    if epoch < epochs and not stopped:
        log(f"stopped after epoch {epoch} of {epochs} as asked; continue with --resume")
    outcome = Outcome(epoch, planned, epochs, stopped, record.wall_seconds + run.clock() - training_started, record.resumed_after)
    names = [member.name for member in members]
    cards = [write_card(member, val_set, frames, recipe, run, device, outcome, names) for member in members]
    for member, card in zip(members, cards):
        log(f"{member.name}: val mIoU {card['val_miou']:.4f}, mean class accuracy {card['val_mean_class_accuracy']:.4f} ({card['kept']}: epoch {card['best_epoch']} of {epoch})")
    return cards


def imagenet_encoder_state(encoder: str) -> dict:
    """Our encoder's ImageNet weights from the installed package (never downloaded)."""
    from .. import create_model

    return create_model("unet", CAMVID.num_classes, encoder=encoder, pretrained=True).encoder.state_dict()


def train_recipe(recipe: Recipe, frames: FrameSet, data_root: str, out: Path, run: LockstepRun, archs: list[str] | None = None, with_peers: bool = True,
                 encoder_state: dict | None = None, log=print, models: list[str] | None = None, **overrides) -> list[dict]:
    """Train ``recipe`` (its ``archs`` when given, of those the run folders named in ``models``)
    on ``frames`` (read from ``data_root``) into ``out/<run name>``. ``encoder_state`` defaults
    to the installed ImageNet weights when the recipe is pretrained; ``overrides`` replace
    training settings (tiny test runs). A model trained apart from the others of its recipe
    sees the same batches (its seed's stream draws from its own generator)."""
    plans = recipe.members(out, data_root, archs, with_peers, **overrides)
    if models is not None:
        unknown = [name for name in models if name not in {plan.name for plan in plans}]
        if unknown:
            raise ValueError(f"no model {', '.join(unknown)} in this run; its models: {', '.join(plan.name for plan in plans)}")
        plans = [plan for plan in plans if plan.name in models]
    if encoder_state is None and recipe.pretrained:
        encoder_state = imagenet_encoder_state(recipe.encoder)
    return train_lockstep(plans, frames, encoder_state, run, recipe, log)
