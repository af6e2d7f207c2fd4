"""One model's training loop (``python -m segmodels train --arch ...``): AMP and channels_last
on CUDA, deep supervision, per-epoch checkpoints with exact resume, best-by-val-mIoU
selection, model cards, and DistributedDataParallel under ``torchrun``. The recipe levers
beyond the loss and colour jitter (EMA, strong photometric augmentation, keeping the final
epoch, training on train+val) belong to the lock-step trainer, :mod:`.loop`."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

from ..cards import model_from_spec, model_spec
from ..data import build_dataset, eval_transform, train_transform
from ..evaluation import evaluate
from ..losses import build_loss, dataset_class_statistics
from .card import build_card
from .config import TrainConfig, learning_rate_factor, optimisation_step, parameter_groups, save_atomically, seed_everything

LOCKSTEP_ONLY = {"ema_decay": 0.0, "keep": "best", "protocol": "train"}


def distributed_context() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when run by ``torchrun``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return (dist.get_rank() if dist.is_initialized() else 0), world_size, device


class Trainer:
    """Builds data, model, loss and optimiser from a :class:`TrainConfig` and runs it."""

    def __init__(self, config: TrainConfig, show_progress: bool = True):
        config.check_levers()
        unsupported = [f"{name}={getattr(config, name)}" for name, off in LOCKSTEP_ONLY.items() if getattr(config, name) != off]
        if config.photometric == "strong":
            unsupported.append("photometric=strong")
        if unsupported:
            raise ValueError(f"this trainer does not implement {', '.join(unsupported)}; the lock-step trainer does: python -m segmodels train --recipe FILE")
        self.config = config
        self.rank, self.world_size, self.device = distributed_context()
        if config.device:
            self.device = torch.device(config.device)
        self.is_main = self.rank == 0
        self.show_progress = show_progress and self.is_main
        self.output_dir = Path(config.output_dir)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)

        self.train_set = self._dataset(config.train_split, train=True)
        self.val_set = self._dataset(config.val_split, train=False)
        self.info = self.train_set.info
        self.ignore_index = self.info.ignore_index if self.info.ignore_index is not None else 255

        seed_everything(config.seed)
        self.spec = model_spec(config.arch, config.encoder, self.info.num_classes, config.base_channels, config.options)
        model = model_from_spec(self.spec, pretrained=config.pretrained).to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ddp_model = DistributedDataParallel(model) if self.world_size > 1 else model
        counts, image_counts = self._class_statistics()
        self.criterion = build_loss(config.loss, self.info.num_classes, counts, ignore_index=self.ignore_index, gamma=config.focal_gamma, image_counts=image_counts,
                                    options=config.loss_options).to(self.device)

        self.steps_per_epoch = math.ceil(len(self.train_set) / (config.batch_size * self.world_size))
        self.optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
        total_steps = self.steps_per_epoch * config.epochs
        warmup_steps = int(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: learning_rate_factor(step, total_steps, warmup_steps, config.schedule))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and not torch.cuda.is_bf16_supported())
        self.start_epoch = 0
        self.best_miou = -1.0
        self.history: list[dict] = []
        self.train_seconds = 0.0

    def _dataset(self, split: str, train: bool):
        config = self.config
        dataset = build_dataset(config.dataset, config.data_root, split=split, **self._dataset_kwargs(train))
        ignore = dataset.info.ignore_index if dataset.info.ignore_index is not None else 255
        dataset.transform = train_transform(config.crop_size, config.scale_range, ignore_index=ignore, color_jitter=config.photometric == "jitter") if train else eval_transform()
        limit = config.train_images if train else config.val_images
        if limit is not None and config.dataset != "shapes":
            subset = Subset(dataset, range(min(limit, len(dataset))))
            subset.info = dataset.info
            return subset
        return dataset

    def _dataset_kwargs(self, train: bool) -> dict:
        config = self.config
        limit = config.train_images if train else config.val_images
        if config.dataset != "shapes" or limit is None:
            return {}
        return {"num_images": limit}

    def _class_statistics(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Pixel counts per class over the unaugmented training set (cached in the run)."""
        if self.config.loss in ("ce", "focal", "ohem", "ce_lovasz"):
            return None, None
        cache = self.output_dir / "class_counts.json"
        if cache.is_file():
            stored = json.loads(cache.read_text())
            return torch.tensor(stored["counts"]), torch.tensor(stored["image_counts"])
        unaugmented = self._dataset(self.config.train_split, train=False)
        counts, image_counts = dataset_class_statistics((unaugmented[i][1] for i in range(len(unaugmented))), self.info.num_classes, self.ignore_index)
        if self.is_main:
            cache.write_text(json.dumps({"counts": counts.tolist(), "image_counts": image_counts.tolist()}))
        return counts, image_counts

    def _loader(self, epoch: int) -> DataLoader:
        config = self.config
        if self.world_size > 1:
            sampler = DistributedSampler(self.train_set, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=config.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        return DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=len(self.train_set) >= config.batch_size * self.world_size,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def train_one_epoch(self, epoch: int) -> float:
        seed_everything(self.config.seed * 1_000_003 + epoch * 7919 + self.rank)
        self.ddp_model.train()
        if hasattr(self.criterion, "start_epoch"):
            self.criterion.start_epoch(epoch)
        total, count, started = 0.0, 0, time.perf_counter()
        progress = tqdm(self._loader(epoch), desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.show_progress, leave=False)
        for images, masks in progress:
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            loss = optimisation_step(self.ddp_model, images, masks, self.criterion, self.optimizer, self.scaler, self.scheduler, self.device)
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            progress.set_postfix(loss=f"{total / count:.4f}", img_s=f"{count / (time.perf_counter() - started):.1f}")
        return total / max(count, 1)

    def validate(self, depth: int | None = None, distributed: bool = True) -> dict:
        """Val metrics; ``distributed`` shards the split over ranks (all ranks must call)."""
        shard = distributed and self.world_size > 1
        sampler = DistributedSampler(self.val_set, num_replicas=self.world_size, rank=self.rank, shuffle=False) if shard else None
        options = {"depth": depth} if depth is not None else {}
        matrix = evaluate(self.model, self.val_set, self.info.num_classes, self.ignore_index, self.device, sampler=sampler, **options)
        return matrix.compute()

    def checkpoint_state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_miou": self.best_miou,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "config": asdict(self.config),
            "spec": self.spec,
            "dataset_info": self.info.to_dict(),
        }

    def resume(self) -> bool:
        """Continue from ``last.pt`` in the output directory; False when there is none."""
        path = self.output_dir / "last.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_miou = state["best_miou"]
        self.history = state["history"]
        self.train_seconds = state["train_seconds"]
        return True

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to ``config.epochs`` and return the model card of the best checkpoint.
        ``stop_after`` ends this run after that many epochs (resume later); no card then."""
        last_epoch = self.config.epochs if stop_after is None else min(self.config.epochs, self.start_epoch + stop_after)
        for epoch in range(self.start_epoch, last_epoch):
            started = time.perf_counter()
            train_loss = self.train_one_epoch(epoch)
            self.train_seconds += time.perf_counter() - started
            validated = (epoch + 1) % self.config.val_every == 0 or epoch + 1 == self.config.epochs
            metrics = self.validate() if validated else {}
            miou = metrics.get("miou")
            record = {"epoch": epoch + 1, "train_loss": train_loss, "val_miou": miou, "lr": self.scheduler.get_last_lr()[0], "seconds": self.train_seconds}
            if validated:
                record |= {"val_mean_class_accuracy": metrics["mean_class_accuracy"], "val_per_class_iou": metrics["per_class_iou"]}
            self.history.append(record)
            improved = validated and miou > self.best_miou
            if improved:
                self.best_miou = miou
            if self.is_main:
                with open(self.output_dir / "history.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
                if improved:
                    save_atomically({"model": self.model.state_dict(), "spec": self.spec, "epoch": epoch + 1}, self.output_dir / "best.pt")
                save_atomically(self.checkpoint_state(epoch), self.output_dir / "last.pt")
                val_text = f"val mIoU {miou:.4f}" if validated else "not validated"
                print(f"epoch {epoch + 1}: train loss {train_loss:.4f}  {val_text}  best {self.best_miou:.4f}", flush=True)
        finished = last_epoch == self.config.epochs
        card = self.write_card() if self.is_main and finished else {}
        if dist.is_initialized():
            dist.barrier()
        return card

    def write_card(self) -> dict:
        """Evaluate the best checkpoint on the validation split and write ``card.json``
        (:func:`.card.build_card`)."""
        best = torch.load(self.output_dir / "best.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(best["model"])
        data_split = {"train": self.config.train_split, "val": self.config.val_split, "train_images": len(self.train_set), "val_images": len(self.val_set)}
        card = build_card(self.model, self.spec, self.info, self.config, data_split=data_split, epochs=self.config.epochs, kept_epoch=best["epoch"],
                          metrics=self.validate(distributed=False), train_seconds=self.train_seconds, device=self.device, world_size=self.world_size,
                          validate_at_depth=lambda depth: self.validate(depth=depth, distributed=False))
        (self.output_dir / "card.json").write_text(json.dumps(card, indent=2))
        return card


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (resuming from ``last.pt`` when asked) and return the model card ({} when
    ``stop_after`` ended the run early)."""
    trainer = Trainer(config, show_progress=show_progress)
    if resume:
        trainer.resume()
    card = trainer.fit(stop_after=stop_after)
    if dist.is_initialized():
        dist.destroy_process_group()
    return card
