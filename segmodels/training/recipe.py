"""A training recipe as a YAML file (``recipes/*.yaml``): the encoder, the architectures
with their decoder options, the seeds, the smp peers and the training settings that
``python -m segmodels train --recipe FILE`` trains in lock-step.

::

    name: camvid-fair-v1
    dataset: camvid
    encoder: efficientnet_lite0
    pretrained: true
    archs:                 # architecture -> create_model options
      unet: {}
      unetpp: {decoder_channels: [26, 52, 104, 208]}
    extra_seeds: {unet: [1]}   # more runs of an architecture, named unet-seed1
    peers: [unet]          # smp's model of these architectures, smp's defaults (optional)
    training:              # TrainConfig fields (segmodels.training.config)
      epochs: 80
      crop_size: [288, 384]
      loss: mfb
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..losses import LOSS_NAMES
from ..models import ARCHITECTURES
from .config import TrainConfig
from .peers import SMP_CLASSES

RECIPE_KEYS = {"name", "dataset", "encoder", "pretrained", "archs", "extra_seeds", "peers", "training", "notes"}
RUN_LOCAL_FIELDS = ("arch", "encoder", "pretrained", "options", "dataset", "data_root", "seed", "output_dir", "device", "workers")
BASE_SEED = 0


@dataclass(frozen=True)
class MemberPlan:
    """One model of a lock-step run: its run folder name, whether it is ours or smp's, and its configuration."""

    name: str
    peer: bool
    config: TrainConfig


@dataclass
class Recipe:
    name: str
    dataset: str
    encoder: str
    pretrained: bool
    archs: dict[str, dict]
    training: dict
    extra_seeds: dict[str, list[int]] = field(default_factory=dict)
    peers: list[str] = field(default_factory=list)
    source: str | None = None
    sha256: str | None = None

    def train_config(self, arch: str, data_root: str, output_dir: str, seed: int = BASE_SEED, **overrides) -> TrainConfig:
        """The recipe as a :class:`TrainConfig` for ``arch`` (``overrides`` for tiny test runs)."""
        if arch not in self.archs:
            raise ValueError(f"recipe {self.name!r} has no architecture {arch!r}; it has {', '.join(self.archs)}")
        unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"no training setting {', '.join(unknown)}; settings: {', '.join(f.name for f in fields(TrainConfig))}")
        values = {**self.training, **overrides}
        config = TrainConfig.from_dict({**values, "arch": arch, "encoder": self.encoder, "pretrained": self.pretrained, "options": dict(self.archs[arch]),
                                        "dataset": self.dataset, "data_root": data_root, "output_dir": output_dir, "seed": seed})
        config.check_levers()
        return config

    def members(self, out: Path, data_root: str, archs: list[str] | None = None, with_peers: bool = True, **overrides) -> list[MemberPlan]:
        """Every model of the recipe (of ``archs`` when given): ours at the base seed, the
        extra seeds, then the peers."""
        chosen = list(self.archs) if archs is None else archs
        unknown = [arch for arch in chosen if arch not in self.archs]
        if unknown:
            raise ValueError(f"recipe {self.name!r} has no architecture {', '.join(unknown)}; it has {', '.join(self.archs)}")
        plans = [MemberPlan(arch, False, self.train_config(arch, data_root, str(out / arch), BASE_SEED, **overrides)) for arch in chosen]
        for arch, seeds in self.extra_seeds.items():
            if arch in chosen:
                plans += [MemberPlan(f"{arch}-seed{seed}", False, self.train_config(arch, data_root, str(out / f"{arch}-seed{seed}"), seed, **overrides)) for seed in seeds]
        if with_peers:
            for arch in self.peers:
                if arch in chosen:
                    config = self.train_config(arch, data_root, str(out / f"smp-{arch}"), BASE_SEED, **overrides)
                    config.options = {}
                    plans.append(MemberPlan(f"smp-{arch}", True, config))
        return plans

    def describe(self) -> dict:
        """What a card records of the recipe."""
        return {"name": self.name, "file": self.source, "sha256": self.sha256}


def recipe_from_dict(values: dict, source: str | None = None, sha256: str | None = None) -> Recipe:
    """Validate a recipe's parsed YAML; every error names the key at fault."""
    where = source or "recipe"
    if not isinstance(values, dict):
        raise ValueError(f"{where}: a recipe is a YAML mapping with keys {', '.join(sorted(RECIPE_KEYS))}")
    unknown = sorted(set(values) - RECIPE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {', '.join(unknown)}; keys: {', '.join(sorted(RECIPE_KEYS))}")
    for key in ("name", "encoder", "archs", "training"):
        if key not in values:
            raise ValueError(f"{where}: missing key {key!r}")
    archs = {arch: dict(options or {}) for arch, options in values["archs"].items()}
    for arch in archs:
        if arch not in ARCHITECTURES:
            raise ValueError(f"{where}: unknown architecture {arch!r} under archs; known: {', '.join(ARCHITECTURES)}")
    training = dict(values["training"])
    settable = {f.name for f in fields(TrainConfig)} - set(RUN_LOCAL_FIELDS)
    wrong = sorted(set(training) - settable)
    if wrong:
        raise ValueError(f"{where}: training has no setting {', '.join(wrong)}; settings: {', '.join(sorted(settable))}")
    if training.get("loss", "ce") not in LOSS_NAMES:
        raise ValueError(f"{where}: unknown loss {training['loss']!r}; valid names: {', '.join(LOSS_NAMES)}")
    extra_seeds = {arch: [int(seed) for seed in seeds] for arch, seeds in (values.get("extra_seeds") or {}).items()}
    peers = list(values.get("peers") or [])
    for arch in [*extra_seeds, *peers]:
        if arch not in archs:
            raise ValueError(f"{where}: {arch!r} under extra_seeds or peers is not one of the recipe's archs ({', '.join(archs)})")
    for arch in peers:
        if arch not in SMP_CLASSES:
            raise ValueError(f"{where}: smp has no peer for {arch!r}; peers: {', '.join(SMP_CLASSES)}")
    recipe = Recipe(str(values["name"]), values.get("dataset", "camvid"), values["encoder"], bool(values.get("pretrained", True)), archs, training, extra_seeds, peers,
                    source, sha256)
    for arch in archs:
        recipe.train_config(arch, "", "")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no recipe file {path}; the shipped recipes are in recipes/")
    text = path.read_bytes()
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    return recipe_from_dict(values, str(path), hashlib.sha256(text).hexdigest())
