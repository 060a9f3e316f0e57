"""Fine-tuning a backbone on labelled images: head only, partial, full (discriminative rates), gradual.

Strategies (see `stages` for how a backbone is cut into groups):

- ``head``: the backbone frozen, a new linear head trained (the feature-extraction baseline);
- ``partial``: the top ``unfreeze`` groups train with the head;
- ``full``: every group trains, each with ``lr_decay`` times the rate of the group above it;
- ``gradual``: epoch 0 trains the head alone, and each epoch after unfreezes one more group from
  the top (ULMFiT's gradual unfreezing, with the same discriminative rates).

AdamW or SGD, linear warm-up then cosine decay per step, optional label smoothing, bf16 autocast on
CUDA, frozen groups kept in eval mode (their BatchNorm statistics stay pretrained). Each epoch ends
with validation accuracy on a stratified held-out split and an atomic checkpoint (``last.pt``:
model, optimizer, scheduler, epoch, best accuracy) that ``resume`` continues from exactly; the best
epoch is exported as ``backbone.safetensors`` (an embedder the registry builds) plus ``head.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lookalike.checks import FINETUNE, check_ranges
from lookalike.embedder.backbone import best_device
from lookalike.embedder.checkpoints import BACKBONE_FILE, save_backbone
from lookalike.embedder.registry import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from lookalike.errors import InvalidArgument

from .classifier import HEAD_FILE, ImageClassifier, accuracy, build_classifier
from .images import (
    Batch,
    LabelledImages,
    eval_transform,
    loader,
    stratified_split,
    train_transform,
)
from .loop import autocast_for, run_epoch, save_state, update, warmup_cosine
from .options import HEAD_INITS, OPTIMIZERS, STRATEGIES
from .stages import StageGroup, apply_freezing, layer_rates, set_train_mode

log = logging.getLogger(__name__)

PROBE_C = 0.1  # the default classifier's regularisation (classify.models.logreg)
LAST_CHECKPOINT = "last.pt"
REPORT_FILE = "finetune.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tuning run (recorded with its checkpoints)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = DEFAULT_WEIGHTS
    strategy: str = "partial"
    unfreeze: int = 2  # partial: how many top groups train
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3  # the new head's rate
    backbone_lr: float | None = None  # the top group's rate (default: lr / 10)
    lr_decay: float = 0.5  # each group below gets this times the rate above it
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of all steps
    label_smoothing: float = 0.0
    image_size: int | None = None  # crop size (the resize keeps the weights' ratio)
    val_fraction: float = 0.2
    patience: int = 3  # epochs without a better validation accuracy before stopping
    freeze_bn: bool = True  # BatchNorm keeps its running statistics in trained groups too
    head_init: str = "probe"  # probe: start from a linear probe on frozen features (LP-FT); random
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidArgument(f"unknown strategy {self.strategy!r}; known: {STRATEGIES}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgument(f"unknown optimizer {self.optimizer!r}; known: {OPTIMIZERS}")
        if self.head_init not in HEAD_INITS:
            raise InvalidArgument(f"unknown head init {self.head_init!r}; known: {HEAD_INITS}")
        check_ranges(vars(self), FINETUNE)

    @property
    def top_backbone_lr(self) -> float:
        return self.backbone_lr if self.backbone_lr is not None else self.lr / 10

    def unfrozen_at(self, epoch: int, groups: int) -> int:
        """How many top groups train in `epoch` (0-based)."""
        if self.strategy == "head":
            return 0
        if self.strategy == "partial":
            return min(self.unfreeze, groups)
        if self.strategy == "full":
            return groups
        return min(epoch, groups)  # gradual: the head alone first, then one more group an epoch


@dataclass
class EpochRecord:
    epoch: int  # 1 for the first, as every report prints it
    unfrozen: int
    loss: float
    train_accuracy: float
    val_accuracy: float
    seconds: float


@dataclass
class FinetuneReport:
    config: FinetuneConfig
    classes: tuple[str, ...]
    groups: list[str]
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0  # counted from 1 (an `EpochRecord.epoch`); 0 before the first
    best_val_accuracy: float = 0.0
    frozen_val_accuracy: float | None = None  # the frozen probe's (`Trainer.fit_frozen_probe`)
    stopped_early: bool = False
    skipped_images: int = 0
    device: str = "cpu"
    out: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["classes"] = list(self.classes)
        return data


def make_optimizer(
    model: ImageClassifier, groups: list[StageGroup], config: FinetuneConfig
) -> torch.optim.Optimizer:
    """One parameter group per stage group (discriminative rates), and the head's at `lr`.

    Every group is in the optimizer from the start; frozen ones get no gradient, so the optimizer
    skips them until they are unfrozen.
    """
    rates = layer_rates(len(groups), config.top_backbone_lr, config.lr_decay)
    parameter_groups = [
        {"params": list(group.parameters()), "lr": rate, "name": group.name}
        for group, rate in zip(groups, rates, strict=True)
    ]
    parameter_groups.append(
        {"params": list(model.head.parameters()), "lr": config.lr, "name": "head"}
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameter_groups, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(parameter_groups, weight_decay=config.weight_decay)


class Trainer:
    """One fine-tuning run: the model, its optimizer and schedule, its data and its checkpoints."""

    def __init__(
        self,
        images: LabelledImages,
        out: str | Path,
        config: FinetuneConfig,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out = Path(out)
        self.device = torch.device(device) if device else best_device()
        self.progress = progress
        train_rows, val_rows = stratified_split(images.targets, config.val_fraction, config.seed)
        self.train_images, self.val_images = images.subset(train_rows), images.subset(val_rows)
        self.model, self.groups, self.backbone_name, self.preprocess = build_classifier(
            config.backbone, config.weights, config.image_size, len(images.classes)
        )
        self.model.to(self.device, memory_format=torch.channels_last)  # faster convs, CPU and GPU
        self.optimizer = make_optimizer(self.model, self.groups, config)
        steps = config.epochs * math.ceil(len(self.train_images) / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(steps, config.warmup_fraction)
        )
        self.loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.report = FinetuneReport(
            config, images.classes, [g.name for g in self.groups], device=str(self.device),
            out=str(self.out),
        )  # fmt: skip
        self.bad_epochs = 0

    # ----- checkpoints ------------------------------------------------------------------------

    def save(self) -> None:
        """``last.pt``, atomically: everything `resume` needs to continue as if never stopped."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "config": json.dumps(dataclasses.asdict(self.config)),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "report": json.dumps(self.report.to_dict()),
            "bad_epochs": self.bad_epochs,
        }
        save_state(state, self.out / LAST_CHECKPOINT)

    def resume(self) -> bool:
        """Continue from ``last.pt`` if there is one (written by the same config); True if so."""
        path = self.out / LAST_CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        recorded = json.loads(state["config"])
        ours = json.loads(json.dumps(dataclasses.asdict(self.config)))
        changed = {k for k in ours if k != "patience" and recorded.get(k) != ours[k]}
        if changed:
            raise InvalidArgument(
                f"{path} was written with other settings ({', '.join(sorted(changed))}); "
                "use another --out or start over with --restart"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        saved = json.loads(state["report"])
        shift = int("frozen_val_accuracy" not in saved)  # written when epochs counted from 0
        self.report.history = [
            EpochRecord(**{**record, "epoch": record["epoch"] + shift})
            for record in saved["history"]
        ]
        self.report.best_epoch = saved["best_epoch"] + shift
        self.report.frozen_val_accuracy = saved.get("frozen_val_accuracy")
        self.report.best_val_accuracy = saved["best_val_accuracy"]
        self.report.skipped_images = saved["skipped_images"]
        self.bad_epochs = int(state["bad_epochs"])
        return True

    def export_best(self) -> None:
        """The current model as the run's best: an exported backbone and its head."""
        info = {
            "base_weights": self.config.weights,
            "strategy": self.config.strategy,
            "epoch": self.report.best_epoch,
            "val_accuracy": self.report.best_val_accuracy,
            "classes": list(self.report.classes),
        }
        save_backbone(
            self.out / BACKBONE_FILE,
            self.model.body,
            self.backbone_name,
            self.preprocess,
            info=info,
        )
        head = {"head": self.model.head.state_dict(), "classes": list(self.report.classes)}
        save_state(head, self.out / HEAD_FILE)

    # ----- training ---------------------------------------------------------------------------

    def frozen_features(
        self, images: LabelledImages, description: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """The frozen backbone's features of `images` (embedding preprocessing), and targets."""
        self.model.eval()
        features, targets = [], []
        batches = loader(
            images, eval_transform(self.preprocess), self.config.batch_size,
            shuffle=False, seed=self.config.seed, workers=self.config.workers,
        )  # fmt: skip
        with torch.inference_mode(), autocast_for(self.device):
            for batch in self.shown(batches, description):
                if len(batch.targets):
                    pixels = batch.pixels.to(self.device, memory_format=torch.channels_last)
                    features.append(self.model.body(pixels).float().cpu())
                    targets.append(batch.targets)
        return torch.cat(features).numpy(), torch.cat(targets).numpy()

    def shown(self, batches: DataLoader, description: str) -> Iterable[Batch]:
        """`batches` with a progress bar (when `progress`): a pass over a split without one
        leaves a user looking at a still terminal for a minute."""
        return tqdm(batches, desc=description, unit="batch", disable=not self.progress, leave=False)

    def fit_frozen_probe(self) -> Pipeline:
        """A logistic-regression probe of the frozen features, fitted on the training split and
        scored on the validation split: the baseline (``frozen_val_accuracy``) the run must
        beat, the same figure a head alone on cached features gets."""
        torch.manual_seed(self.config.seed)
        x, y = self.frozen_features(self.train_images, "frozen baseline: training split")
        probe = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=PROBE_C, tol=1e-3, max_iter=1000, random_state=self.config.seed),
        ).fit(x, y)
        x_val, y_val = self.frozen_features(self.val_images, "frozen baseline: validation split")
        self.report.frozen_val_accuracy = round(float(probe.score(x_val, y_val)), 4)
        return probe

    def init_head_from_probe(self, probe: Pipeline) -> None:
        """Start the head at the frozen probe (LP-FT: fine-tuning from a fitted head distorts the
        pretrained features less than from a random one)."""
        scaler, linear = probe[0], probe[-1]
        weight = np.zeros((len(self.report.classes), len(scaler.scale_)), np.float32)
        bias = np.zeros(len(self.report.classes), np.float32)
        rows = linear.classes_ if len(linear.classes_) > 2 else linear.classes_[1:]
        weight[rows], bias[rows] = linear.coef_, linear.intercept_  # binary: class 0's logit is 0
        weight /= scaler.scale_  # the standardisation folded into the head
        bias -= weight @ scaler.mean_
        with torch.no_grad():
            self.model.head.weight.copy_(torch.from_numpy(weight))
            self.model.head.bias.copy_(torch.from_numpy(bias))

    def run(self) -> FinetuneReport:
        """Train until `epochs` or early stopping; the best epoch is exported."""
        first = len(self.report.history)
        if first == 0:
            probe = self.fit_frozen_probe()
            if self.config.head_init == "probe":
                self.init_head_from_probe(probe)
        for epoch in range(first, self.config.epochs):
            if self.bad_epochs >= self.config.patience:
                self.report.stopped_early = True
                break
            record = self.train_epoch(epoch)
            self.report.history.append(record)
            if record.val_accuracy > self.report.best_val_accuracy or not self.report.best_epoch:
                self.report.best_epoch, self.report.best_val_accuracy = (
                    record.epoch,
                    record.val_accuracy,
                )
                self.bad_epochs = 0
                self.export_best()
            else:
                self.bad_epochs += 1
            self.save()
        (self.out / REPORT_FILE).write_text(json.dumps(self.report.to_dict(), indent=2))
        return self.report

    def step(self, batch: Batch) -> tuple[float, int]:
        """One optimizer step on a batch: (its loss, how many it classified right)."""
        pixels = batch.pixels.to(self.device, memory_format=torch.channels_last)
        targets = batch.targets.to(self.device)
        with autocast_for(self.device):
            logits = self.model(pixels)
            loss = self.loss(logits.float(), targets)
        right = int((logits.argmax(dim=1) == targets).sum())
        return update(loss, self.optimizer, self.scheduler), right

    def train_epoch(self, epoch: int) -> EpochRecord:
        started = time.perf_counter()
        seed = self.config.seed * 1000 + epoch  # the epoch's order and augmentation, resumable
        torch.manual_seed(seed)
        unfrozen = self.config.unfrozen_at(epoch, len(self.groups))
        apply_freezing(self.groups, unfrozen)
        set_train_mode(self.model.body, self.groups, unfrozen, self.config.freeze_bn)
        self.model.head.train()
        batches = loader(
            self.train_images, train_transform(self.preprocess), self.config.batch_size,
            shuffle=True, seed=seed, workers=self.config.workers,
        )  # fmt: skip
        description = f"epoch {epoch + 1}/{self.config.epochs} ({unfrozen} groups)"
        totals = run_epoch(batches, self.step, description, self.progress, show_accuracy=True)
        self.report.skipped_images += totals.skipped
        val_batches = loader(
            self.val_images, eval_transform(self.preprocess), self.config.batch_size,
            shuffle=False, seed=seed, workers=self.config.workers,
        )  # fmt: skip
        val_accuracy, _ = accuracy(self.model, self.shown(val_batches, "validation"), self.device)
        record = EpochRecord(
            epoch=epoch + 1,  # counted from 1, as printed
            unfrozen=unfrozen,
            loss=round(totals.mean_loss, 5),
            train_accuracy=round(totals.accuracy, 4),
            val_accuracy=round(val_accuracy, 4),
            seconds=round(time.perf_counter() - started, 2),
        )
        log.info("epoch %s: %s", epoch, record)
        return record


def finetune(
    images: LabelledImages,
    out: str | Path,
    config: FinetuneConfig | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    progress: bool = True,
) -> FinetuneReport:
    """Fine-tune `config.backbone` on `images`; checkpoints, the best backbone and a report in `out`."""
    trainer = Trainer(images, out, config or FinetuneConfig(), device, progress)
    if resume and trainer.resume():
        log.info("resuming %s after epoch %s", out, len(trainer.report.history))
    return trainer.run()
