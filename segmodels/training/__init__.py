"""Training: one model at a time (:class:`Trainer`, ``python -m segmodels train --arch``), or
a whole recipe in lock-step on one device (:func:`train_recipe`, ``python -m segmodels train
--recipe FILE``), with GPU-side augmentation, weight averaging and one card format
(:func:`build_card`)."""

from .card import build_card
from .config import TrainConfig, learning_rate_factor, lever_defaults, parameter_groups, save_atomically, seed_everything
from .frames import FrameDataset, FrameSet, read_camvid_frames
from .loop import LockstepRun, train_lockstep, train_recipe
from .peers import SmpPeer, build_from_spec, peer_spec
from .recipe import MemberPlan, Recipe, load_recipe
from .trainer import Trainer, distributed_context, train

__all__ = [
    "FrameDataset", "FrameSet", "LockstepRun", "MemberPlan", "Recipe", "SmpPeer", "TrainConfig", "Trainer", "build_card", "build_from_spec", "distributed_context",
    "learning_rate_factor", "lever_defaults", "load_recipe", "parameter_groups", "peer_spec", "read_camvid_frames", "save_atomically", "seed_everything", "train",
    "train_lockstep", "train_recipe",
]
