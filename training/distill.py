"""Knowledge distillation: train a student backbone to reproduce a teacher's embeddings.

The teacher embeds the training images once, at its own preprocessing (its targets are cached:
cheap and deterministic); the student sees the same images at its own preprocessing, the exact
pixels it will embed later, and learns to output the teacher's vectors (cosine and/or MSE), through
a linear projection when its width differs. Both are compared minus the teacher's mean vector:
about half of the vectors' energy is a direction every image shares, and neighbours differ in the
rest (``center``). Optionally a KL term matches the teacher's class distribution: the teacher's own
classifier is applied to both the teacher's and the student's vectors, softened by a temperature.
AdamW, linear warm-up then cosine decay per step, bf16 autocast on CUDA. The student stays in eval
mode (no dropout or stochastic depth: it imitates a fixed function); its BatchNorm layers either keep
their statistics (``frozen``: a pretrained student) or update them (``train``: a random-init one).

The student is exported with `save_backbone` (the registry builds it by path) and judged on held-out
images through the registry: recall@k of the teacher's neighbours and images/s on the same device
(see `agreement`).
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
from torch import nn

from lookalike.checks import DISTILL, FRACTION, check_ranges
from lookalike.durable import write_atomic
from lookalike.embedder.backbone import Backbone, best_device
from lookalike.embedder.build import get_backbone
from lookalike.embedder.checkpoints import BACKBONE_FILE, ProjectedModel, save_backbone
from lookalike.embedder.heads import classifier_name, remove_classifier
from lookalike.embedder.registry import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, create_model
from lookalike.embedder.sources import ImageSource, walk_images
from lookalike.embedder.spec import OUTPUT_LAYER, Preprocess
from lookalike.errors import InvalidArgument

from .agreement import HeldOut, compare_speed, embed_rows
from .images import Batch, LabelledImages, eval_transform, loader
from .loop import autocast_for, run_epoch, update, warmup_cosine
from .losses import distill_loss
from .options import BATCHNORM_MODES, LOSSES

log = logging.getLogger(__name__)

REPORT_FILE = "distill.json"


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides a distillation run (recorded with the exported student)."""

    teacher: str = DEFAULT_BACKBONE
    teacher_weights: str | None = DEFAULT_WEIGHTS
    teacher_image_size: int | None = None  # crop size (default: the teacher's own)
    student: str = DEFAULT_BACKBONE
    student_weights: str | None = DEFAULT_WEIGHTS
    student_image_size: int | None = 144  # resolution distillation: the teacher's net, fewer pixels
    loss: str = "cosine"  # on the vectors: cosine, mse, or cosine+mse
    center: bool = True  # compare vectors minus the teacher's mean: what tells neighbours apart
    kl_weight: float = 0.0  # weight of KL(teacher || student) on the teacher's classifier logits
    temperature: float = 4.0  # softens both distributions of the KL term
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of all steps
    batchnorm: str = "auto"  # frozen, train, or auto: frozen for pretrained students
    holdout: float = 0.2  # fraction of the data held out for recall (when no eval data is given)
    k: int = 10  # recall@k of the teacher's neighbours
    speed_batch_size: int = 32
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InvalidArgument(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise InvalidArgument(
                f"unknown batchnorm mode {self.batchnorm!r}; known: {', '.join(BATCHNORM_MODES)}"
            )
        check_ranges(vars(self), DISTILL)

    @property
    def batchnorm_mode(self) -> str:
        if self.batchnorm != "auto":
            return self.batchnorm
        return "train" if self.student_weights is None else "frozen"


@dataclass
class DistillReport:
    """How well and how fast the exported student reproduces its teacher."""

    config: DistillConfig
    recall: float  # recall@k of the teacher's neighbours on the held-out images
    teacher_images_per_s: float
    student_images_per_s: float
    recall_before: float = math.nan  # the student's own vectors before distillation
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    train_images: int = 0
    held_out_images: int = 0
    teacher_dim: int = 0
    student_dim: int = 0  # before the projection (if any)
    device: str = "cpu"
    engine: str = "torch"
    seconds: float = 0.0
    backbone_path: str = ""

    @property
    def speed_ratio(self) -> float:
        return self.student_images_per_s / max(self.teacher_images_per_s, 1e-9)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(speed_ratio=self.speed_ratio, final_loss=self.final_loss)
        return data

    def summary(self) -> str:
        c = self.config
        return (
            f"student {c.student} @{self.student_crop} ({self.student_dim}-d) <- teacher "
            f"{c.teacher} ({self.teacher_dim}-d); {self.train_images} training images, "
            f"{c.epochs} epochs, final loss {self.final_loss:.4f}\n"
            f"recall@{c.k} of the teacher's neighbours on {self.held_out_images} held-out images: "
            f"{self.recall:.3f} (before distillation: {self.recall_before:.3f})\n"
            f"images/s on {self.device} ({self.engine}, batch {c.speed_batch_size}): teacher "
            f"{self.teacher_images_per_s:.1f}, student {self.student_images_per_s:.1f}, "
            f"ratio {self.speed_ratio:.2f}x\nexported: {self.backbone_path}"
        )

    @property
    def student_crop(self) -> str:
        return str(self.config.student_image_size or "native")


# ----- data -----------------------------------------------------------------------------------


def indexed_images(sources: Iterable[ImageSource]) -> LabelledImages:
    """Unlabelled images whose targets are their row numbers: a batch says which rows it holds."""
    sources = tuple(sources)
    return LabelledImages(sources, np.arange(len(sources), dtype=np.int64), ())


def split_images(
    data: str | Path, eval_data: str | Path | None, holdout: float, seed: int
) -> tuple[LabelledImages, LabelledImages]:
    """(training, held-out) images: `eval_data` when given, else a seeded `holdout` fraction."""
    images = indexed_images(walk_images([data]))
    if eval_data is not None:
        return images, indexed_images(walk_images([eval_data]))
    FRACTION.check("holdout", holdout)
    rows = np.random.default_rng(seed).permutation(len(images))
    held = max(1, round(holdout * len(images)))
    return (
        indexed_images(images.sources[r] for r in np.sort(rows[held:])),
        indexed_images(images.sources[r] for r in np.sort(rows[:held])),
    )


# ----- models ---------------------------------------------------------------------------------


def teacher_backbone(config: DistillConfig, device: torch.device) -> Backbone:
    """The teacher as the product embeds with it, unnormalised (its vectors are the targets)."""
    return get_backbone(
        config.teacher,
        config.teacher_weights,
        normalize=False,
        image_size=config.teacher_image_size,
        device=device,
    )


def student_backbone(config: DistillConfig, device: torch.device) -> Backbone:
    """The student before distillation, as the product would embed with it."""
    return get_backbone(
        config.student,
        config.student_weights,
        normalize=False,
        image_size=config.student_image_size,
        device=device,
    )


def teacher_classifier(config: DistillConfig) -> nn.Module:
    """The teacher's classifier (frozen): logits from vectors, for the KL term."""
    model = create_model(config.teacher, config.teacher_weights).model
    name = classifier_name(model)
    if name is None:
        raise InvalidArgument(f"{config.teacher} has no classifier, so no logits for the KL term")
    return model.get_submodule(name).eval().requires_grad_(False)


@dataclass
class Student:
    """The network being trained, the projection into the teacher's space, and how it is named."""

    body: nn.Module
    projection: nn.Linear | None
    backbone: str  # the architecture's registry name
    preprocess: Preprocess
    width: int  # the body's output width

    @property
    def module(self) -> nn.Module:
        return self.body if self.projection is None else ProjectedModel(self.body, self.projection)


def build_student(config: DistillConfig, teacher_width: int) -> Student:
    """The student headless, at its input size, with a projection when its width is not the teacher's."""
    loaded = create_model(config.student, config.student_weights)
    remove_classifier(loaded.model)
    body = loaded.model.body if isinstance(loaded.model, ProjectedModel) else loaded.model
    preprocess = loaded.preprocess
    if config.student_image_size:
        preprocess = preprocess.scaled_to(config.student_image_size)
    with torch.no_grad():
        crop = preprocess.crop
        width = int(body.eval()(torch.zeros(1, 3, crop, crop)).shape[-1])
    projection = nn.Linear(width, teacher_width) if width != teacher_width else None
    return Student(body, projection, loaded.backbone, preprocess, width)


def set_student_mode(model: nn.Module, batchnorm: str) -> None:
    """Eval mode (no dropout), with BatchNorm updating its statistics when `batchnorm` is ``train``."""
    model.eval()
    if batchnorm == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()


# ----- training -------------------------------------------------------------------------------


class StudentTrainer:
    """The student's optimizer, schedule and steps against cached teacher vectors."""

    def __init__(
        self,
        student: Student,
        targets: np.ndarray,
        config: DistillConfig,
        device: torch.device,
        classifier: nn.Module | None = None,
    ) -> None:
        self.model = student.module.to(device, memory_format=torch.channels_last)
        self.preprocess = student.preprocess
        self.targets = torch.from_numpy(np.nan_to_num(targets))
        found = self.targets[np.isfinite(targets).all(axis=1)]
        self.center = found.mean(dim=0).to(device) if config.center else 0.0
        self.config, self.device = config, device
        self.classifier = classifier.to(device) if classifier is not None else None
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        steps = config.epochs * math.ceil(len(targets) / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(steps, config.warmup_fraction)
        )

    def step(self, pixels: torch.Tensor, rows: torch.Tensor) -> float:
        """One optimizer step on a batch; returns its loss."""
        pixels = pixels.to(self.device, memory_format=torch.channels_last)
        target = self.targets[rows].to(self.device)
        with autocast_for(self.device):
            output = self.model(pixels)
        loss = distill_loss(output.float(), target, self.config, self.classifier, self.center)
        return update(loss, self.optimizer, self.scheduler)

    def epoch(self, images: LabelledImages, epoch: int, progress: bool = True) -> float:
        """One pass over `images` in a seeded order; returns the mean loss."""
        set_student_mode(self.model, self.config.batchnorm_mode)
        batches = loader(
            images, eval_transform(self.preprocess), self.config.batch_size,
            shuffle=True, seed=self.config.seed + epoch, workers=self.config.workers,
        )  # fmt: skip
        description = f"distil epoch {epoch + 1}/{self.config.epochs}"
        totals = run_epoch(batches, self._batch_step, description, progress)
        self.model.eval()
        return totals.mean_loss

    def _batch_step(self, batch: Batch) -> tuple[float, int]:
        return self.step(batch.pixels, batch.targets), 0


# ----- the run --------------------------------------------------------------------------------


def export_student(student: Student, out: Path, config: DistillConfig, losses: list[float]) -> Path:
    """The student as an exported backbone (atomic safetensors) the registry builds by path."""
    student.body.to(memory_format=torch.contiguous_format)  # safetensors refuses channels_last
    info = {"distilled_from": dataclasses.asdict(config), "losses": losses}
    return save_backbone(
        out / BACKBONE_FILE,
        student.body,
        student.backbone,
        student.preprocess,
        projection=student.projection,
        info=info,
    )


def _write_report(report: DistillReport, out: Path) -> None:
    write_atomic(out / REPORT_FILE, json.dumps(report.to_dict(), indent=2).encode())


def train_student(
    teacher: Backbone,
    images: LabelledImages,
    config: DistillConfig,
    device: torch.device,
    progress: bool = True,
) -> tuple[Student, list[float]]:
    """The student trained against `teacher`'s vectors of `images`, and its mean loss per epoch."""
    targets = embed_rows(teacher, images, config.batch_size, progress)
    student = build_student(config, targets.shape[1])
    classifier = teacher_classifier(config) if config.kl_weight > 0 else None
    trainer = StudentTrainer(student, targets, config, device, classifier)
    losses = [trainer.epoch(images, epoch, progress) for epoch in range(config.epochs)]
    log.info("distillation losses by epoch: %s", losses)
    return student, losses


def distill(
    data: str | Path,
    out: str | Path,
    config: DistillConfig | None = None,
    eval_data: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> DistillReport:
    """Train `config.student` to reproduce `config.teacher`'s embeddings of the images in `data`,
    export it to `out`, and measure it against the teacher on held-out images (`eval_data`, else
    a `config.holdout` fraction of `data`)."""
    config = config or DistillConfig()
    device = torch.device(device) if device else best_device()
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    train, held = split_images(data, eval_data, config.holdout, config.seed)
    teacher = teacher_backbone(config, device)
    teacher_vectors = embed_rows(teacher, held, config.batch_size, progress)
    judge = HeldOut(held, teacher_vectors, config.k, config.batch_size)
    before = judge.recall(student_backbone(config, device), progress)
    student, losses = train_student(teacher, train, config, device, progress)
    path = export_student(student, Path(out), config, losses)
    exported = get_backbone(str(path), normalize=False, device=device)
    report = DistillReport(
        config, judge.recall(exported, progress), *compare_speed(teacher, exported, config.speed_batch_size),
        recall_before=before, losses=losses, train_images=len(train), held_out_images=len(held),
        teacher_dim=teacher.spec.dims[OUTPUT_LAYER], student_dim=student.width,
        device=str(device), engine=exported.engine_name,
        seconds=time.perf_counter() - started, backbone_path=str(path),
    )  # fmt: skip
    _write_report(report, Path(out))
    return report
