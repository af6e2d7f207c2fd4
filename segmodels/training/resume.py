"""Resuming a lock-step run across calls (``python -m segmodels train --recipe FILE --resume``,
``scripts/train_zoo_gpu.py train --resume``).

Each model's ``last.pt`` holds what continues it exactly: its weights, the weight average, the
AdamW moments, the schedule's step, the loss scaler, the best score so far and its clock, and
a ``run`` record shared by the models of the run: the models' names, each model's training
settings as planned, the training frames' fingerprint, the autocast mode, the schedule length
fixed when the run started (``fit_budget`` acts only in that first call), the generator state
of the model's augmented stream and the global random states (dropout draws from them). All
models are checkpointed after the same epoch, their files written first and renamed together,
so a run stopped mid-write keeps one consistent epoch. A resumed run reads them, refuses
(naming the difference) when the recipe, the models, the frames or the autocast mode changed,
cuts each ``history.jsonl`` back to the checkpoint's epoch and goes on from the next epoch:
the same batches, the same steps, the same result as a run that never stopped
(``pytest tests/segmodels/training/test_training_resume.py`` compares the weights)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig, save_atomically
from .frames import FrameSet
from .lockstep import ZooMember, half_state

RESUME_FORMAT = 1
RUN_LOCAL_SETTINGS = ("data_root", "output_dir", "device", "workers")


@dataclass
class RunRecord:
    """What the checkpoints record of the whole run, besides each model's own state."""

    members: list[str]
    settings: dict[str, dict]
    frames: dict
    amp: str
    epochs_planned: int
    schedule_epochs: int
    wall_seconds: float = 0.0
    resumed_after: list[int] = field(default_factory=list)


def planned_settings(config: TrainConfig) -> dict:
    """The settings that define a model's training, as plain values (tuples as lists); the
    folders, the device and the loader workers may change between calls."""
    return json.loads(json.dumps({key: value for key, value in asdict(config).items() if key not in RUN_LOCAL_SETTINGS}))


def frames_fingerprint(frames: FrameSet) -> dict:
    names = "\n".join(frames.train_names) + "\n|\n" + "\n".join(frames.val_names)
    return {"train": len(frames.train_images), "val": len(frames.val_images), "size": list(frames.train_images.shape[-2:]),
            "names_sha256": hashlib.sha256(names.encode()).hexdigest()}


def global_random_state(device: torch.device) -> dict:
    version, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [], "python": random.getstate(),
            "numpy": [version, keys.tolist(), position, has_gauss, cached]}


def restore_global_random_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    version, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((version, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def save_checkpoints(members_by_stream: dict[tuple, list[ZooMember]], streams: dict, epoch: int, record: RunRecord, device: torch.device) -> None:
    """Every model's ``last.pt`` after ``epoch``: all files written first, then renamed, so the
    run folder never mixes epochs unless the process dies between the renames."""
    randomness = global_random_state(device)
    written = []
    for key, group in members_by_stream.items():
        for member in group:
            state = member.checkpoint_state(epoch)
            state["run"] = {"format": RESUME_FORMAT, **asdict(record), "stream": streams[key].generator.get_state(), "random": randomness}
            path = member.output_dir / "last.pt"
            temporary = path.with_name(path.name + ".tmp")
            torch.save(state, temporary)
            written.append((temporary, path))
    for temporary, path in written:
        os.replace(temporary, path)


def differences(saved: dict, now: dict) -> list[str]:
    return [f"{key} {saved.get(key)!r} in the checkpoint, {now.get(key)!r} now" for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]


def read_checkpoints(members: list[ZooMember], record: RunRecord) -> list[dict]:
    """Each model's ``last.pt`` (on the CPU) after checking it continues this run; a
    ``ValueError`` names what differs."""
    states = []
    for member in members:
        path = member.output_dir / "last.pt"
        if not path.is_file():
            raise ValueError(f"cannot resume: {path} is missing (an interrupted run's folder holds each model's last.pt; leave out --resume to start afresh)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("run", {}).get("format") != RESUME_FORMAT:
            raise ValueError(f"cannot resume from {path}: it holds no resume record of format {RESUME_FORMAT} (written by an older trainer); start afresh")
        states.append(state)
    saved = RunRecord(**{key: value for key, value in states[0]["run"].items() if key in RunRecord.__dataclass_fields__})
    if saved.members != record.members:
        raise ValueError(f"cannot resume: the checkpoints are of a lock-step run of {', '.join(saved.members)}; this run has {', '.join(record.members)} "
                         "(give the recipe, --archs and the peers of the first call)")
    epochs = {member.name: state["epoch"] for member, state in zip(members, states)}
    if len(set(epochs.values())) > 1:
        raise ValueError(f"cannot resume: the models' last.pt hold different epochs ({', '.join(f'{name} {epoch}' for name, epoch in epochs.items())}): "
                         "the run stopped while writing them")
    problems = [f"{name}: {difference}" for name in record.members for difference in differences(saved.settings[name], record.settings[name])]
    problems += [f"training frames: {difference}" for difference in differences(saved.frames, record.frames)]
    if saved.amp != record.amp:
        problems.append(f"autocast {saved.amp} in the checkpoint, {record.amp} now")
    if problems:
        raise ValueError("cannot resume, the run differs from its checkpoints: " + "; ".join(problems))
    return states


def cut_history(path: Path, epoch: int) -> None:
    """Drop the records after ``epoch`` (epochs trained after the checkpoint run again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] <= epoch]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def resume_run(members_by_stream: dict[tuple, list[ZooMember]], streams: dict, record: RunRecord, device: torch.device) -> tuple[int, RunRecord]:
    """Restore every model, stream and random state from the run folders; returns the epoch
    the checkpoints end and the run's record as saved, with this resumption appended."""
    members = [member for group in members_by_stream.values() for member in group]
    states = dict(zip((member.name for member in members), read_checkpoints(members, record)))
    epoch = states[members[0].name]["epoch"]
    for key, group in members_by_stream.items():
        streams[key].generator.set_state(states[group[0].name]["run"]["stream"])
        for member in group:
            member.restore(states[member.name])
            cut_history(member.output_dir / "history.jsonl", epoch)
            restore_best(member, epoch)
    saved = states[members[0].name]["run"]
    restore_global_random_state(saved["random"], device)
    resumed = RunRecord(record.members, record.settings, record.frames, record.amp, saved["epochs_planned"], saved["schedule_epochs"], saved["wall_seconds"],
                        [*saved["resumed_after"], epoch])
    return epoch, resumed


def restore_best(member: ZooMember, epoch: int) -> None:
    """``best.pt`` is written after the checkpoints of its epoch: when the run stopped between
    the two, the restored weights (of ``epoch``) are the best ones and are written again."""
    if member.config.keep != "best" or member.best_epoch is None:
        return
    path = member.output_dir / "best.pt"
    kept_epoch = torch.load(path, map_location="cpu", weights_only=True)["epoch"] if path.is_file() else None
    if kept_epoch == member.best_epoch:
        return
    if member.best_epoch != epoch:
        raise ValueError(f"cannot resume {member.name}: its checkpoint keeps the weights of epoch {member.best_epoch} as the best, {path} holds epoch {kept_epoch}")
    save_best(member, epoch)


def save_best(member: ZooMember, epoch: int) -> None:
    save_atomically({"model": half_state(member.evaluated_model), "spec": member.spec, "epoch": epoch}, member.output_dir / "best.pt")
