"""Distillation with tiny real models on the CPU: the loss falls, the export loads through the
registry and embeds like the trained student, recall@k is right, the CLI runs end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import PHOTOS, photo
from PIL import Image

from lookalike.cli import main
from lookalike.cli.distill import distill as distill_command
from lookalike.embedder import get_backbone
from lookalike.embedder.checkpoints import BACKBONE_FILE, exported_info
from lookalike.embedder.sources import walk_images
from lookalike.errors import InvalidArgument
from lookalike.training.agreement import embed_rows, neighbour_recall
from lookalike.training.distill import (
    DistillConfig,
    StudentTrainer,
    build_student,
    distill,
    export_student,
    indexed_images,
    set_student_mode,
    split_images,
    teacher_backbone,
    teacher_classifier,
    train_student,
)
from lookalike.training.losses import distill_loss, logit_kl

CPU = torch.device("cpu")
# timm's test models, random init: a 256-d teacher with a classifier, a 96-d student.
TINY = DistillConfig(
    teacher="timm:test_efficientnet",
    teacher_weights=None,
    teacher_image_size=64,
    student="timm:test_resnet",
    student_weights=None,
    student_image_size=48,
    epochs=2,
    batch_size=8,
    lr=1e-3,
    k=5,
    speed_batch_size=8,
)
TEACHER_DIM = 256


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 small PNGs: random crops of four real photos."""
    folder = tmp_path_factory.mktemp("distill-images")
    rng = np.random.default_rng(0)
    photos = [np.asarray(photo(name)) for name in PHOTOS]
    for number in range(60):
        pixels = photos[number % len(photos)]
        side = int(min(pixels.shape[:2]) * rng.uniform(0.3, 0.9))
        top = rng.integers(0, pixels.shape[0] - side)
        left = rng.integers(0, pixels.shape[1] - side)
        crop = Image.fromarray(pixels[top : top + side, left : left + side]).resize((64, 64))
        crop.save(folder / f"{number:03d}.png")
    return folder


@pytest.fixture(scope="module")
def images(image_dir: Path):
    return indexed_images(walk_images([image_dir]))


def test_config_checks_its_settings() -> None:
    with pytest.raises(InvalidArgument, match="unknown loss"):
        DistillConfig(loss="l1")
    with pytest.raises(InvalidArgument, match="batchnorm"):
        DistillConfig(batchnorm="sometimes")
    assert DistillConfig().batchnorm_mode == "frozen"  # a pretrained student keeps its statistics
    assert DistillConfig(student_weights=None).batchnorm_mode == "train"


def test_cli_defaults_are_the_config_defaults() -> None:
    names = {
        "teacher_size": "teacher_image_size",
        "student_size": "student_image_size",
    }
    defaults = DistillConfig()
    parsed = distill_command.make_context("distill", ["--data", ".", "--out", "x"]).params
    compared = 0
    for name, value in parsed.items():
        field = names.get(name, name)
        if hasattr(defaults, field):
            assert value == getattr(defaults, field), name
            compared += 1
    assert compared >= 15


def test_recall_on_hand_made_neighbours() -> None:
    angles = np.radians([0, 10, 90, 100])
    teacher = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert neighbour_recall(teacher, teacher, k=1) == 1.0
    assert neighbour_recall(teacher, 5 * teacher, k=1) == 1.0  # cosine: the scale is irrelevant
    swapped = np.radians([0, 90, 10, 100])  # pairs (0, 2) and (1, 3) instead of (0, 1) and (2, 3)
    assert neighbour_recall(teacher, np.stack([np.cos(swapped), np.sin(swapped)], 1), k=1) == 0.0
    # 0 and 1 keep each other, 3's nearest is still 2, but 2's nearest is now 1: 3 of 4
    moved = np.radians([0, 10, 100, 200])
    assert neighbour_recall(teacher, np.stack([np.cos(moved), np.sin(moved)], 1), k=1) == 0.75


def test_recall_of_shuffled_vectors_is_chance() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(300, 16)).astype(np.float32)
    noisy = teacher + 0.01 * rng.normal(size=teacher.shape).astype(np.float32)
    assert neighbour_recall(teacher, noisy, k=10) > 0.95
    assert neighbour_recall(teacher, rng.permutation(teacher), k=10) < 0.15  # chance is 10/299


def test_recall_leaves_out_undecoded_rows_and_needs_enough_vectors() -> None:
    teacher = np.random.default_rng(1).normal(size=(30, 4))
    student = teacher.copy()
    student[3] = np.nan
    assert neighbour_recall(teacher, student, k=5) == 1.0
    with pytest.raises(InvalidArgument, match="neighbours need more"):
        neighbour_recall(teacher[:5], student[:5], k=5)


def test_split_holds_out_a_seeded_fraction(image_dir: Path) -> None:
    train, held = split_images(image_dir, None, 0.2, seed=0)
    assert (len(train), len(held)) == (48, 12)
    assert not set(train.sources) & set(held.sources)
    assert split_images(image_dir, None, 0.2, seed=0)[1].sources == held.sources


def test_losses_and_the_kl_term() -> None:
    vectors = torch.randn(4, TEACHER_DIM)
    assert distill_loss(vectors, vectors, TINY) == pytest.approx(0.0, abs=1e-6)
    mse = dataclasses.replace(TINY, loss="mse")
    assert distill_loss(2 * vectors, vectors, mse) == pytest.approx(float((vectors**2).mean()))
    assert distill_loss(2 * vectors, vectors, TINY) == pytest.approx(0.0, abs=1e-6)  # cosine
    assert float(logit_kl(vectors, vectors, 4.0)) == pytest.approx(0.0, abs=1e-6)
    shared = 10 * torch.ones(TEACHER_DIM)  # a direction every vector shares hides differences
    raw = distill_loss(vectors + shared, torch.randn(4, TEACHER_DIM) + shared, TINY)
    centred = distill_loss(
        vectors + shared, torch.randn(4, TEACHER_DIM) + shared, TINY, None, shared
    )
    assert float(raw) < 0.1 < float(centred)
    classifier = teacher_classifier(TINY)
    assert classifier.in_features == TEACHER_DIM
    with_kl = dataclasses.replace(TINY, kl_weight=1.0)
    other = torch.randn(4, TEACHER_DIM)
    assert distill_loss(other, vectors, with_kl, classifier) > distill_loss(other, vectors, TINY)


@pytest.mark.slow
@pytest.mark.parametrize("loss, kl_weight", [("cosine", 0.0), ("cosine+mse", 0.5)])
def test_loss_falls_over_a_few_steps(images, loss: str, kl_weight: float) -> None:
    config = dataclasses.replace(
        TINY, loss=loss, kl_weight=kl_weight, warmup_fraction=0.0, epochs=10
    )
    teacher = teacher_backbone(config, CPU)
    batch = images.subset(np.arange(8))
    targets = embed_rows(teacher, batch, 8)
    assert targets.shape == (8, TEACHER_DIM)
    student = build_student(config, TEACHER_DIM)
    assert student.width == 96 and student.projection.out_features == TEACHER_DIM
    classifier = teacher_classifier(config) if kl_weight else None
    trainer = StudentTrainer(student, targets, config, CPU, classifier)
    assert torch.allclose(trainer.center, torch.from_numpy(targets.mean(axis=0)), atol=1e-5)
    set_student_mode(trainer.model, config.batchnorm_mode)
    pixels = torch.stack([trainer_pixels(student, source.path) for source in batch.sources])
    rows = torch.arange(8)
    losses = [trainer.step(pixels, rows) for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0], losses


def trainer_pixels(student, path: Path) -> torch.Tensor:
    from lookalike.training.images import eval_transform

    return eval_transform(student.preprocess)(path.read_bytes())


def test_frozen_batchnorm_keeps_its_statistics_and_dropout_is_off() -> None:
    student = build_student(TINY, TEACHER_DIM).module
    norms = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    set_student_mode(student, "frozen")
    assert not student.training and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    student(torch.randn(4, 3, 48, 48))
    assert torch.equal(norms[0].running_mean, before)
    set_student_mode(student, "train")
    assert all(m.training for m in norms)
    assert not any(m.training for m in student.modules() if isinstance(m, torch.nn.Dropout))
    student(torch.randn(4, 3, 48, 48))
    assert not torch.equal(norms[0].running_mean, before)


def test_export_loads_through_the_registry_and_embeds_like_the_student(
    images, tmp_path: Path
) -> None:
    teacher = teacher_backbone(TINY, CPU)
    student, losses = train_student(teacher, images, TINY, CPU, progress=False)
    path = export_student(student, tmp_path, TINY, losses)
    assert path == tmp_path / BACKBONE_FILE
    assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever serves it
    assert exported_info(path)["distilled_from"]["teacher"] == TINY.teacher
    loaded = get_backbone(str(tmp_path), normalize=False, device="cpu")
    assert loaded.spec.dims == {
        "embedding": TEACHER_DIM
    }  # the projection speaks the teacher's space
    assert loaded.spec.preprocess == student.preprocess  # the student's own 48-px recipe
    assert loaded.spec.backbone == "timm:test_resnet"
    few = images.subset(np.arange(6))
    pixels = torch.stack([trainer_pixels(student, s.path) for s in few.sources])
    with torch.inference_mode():
        expected = student.module.eval()(pixels).numpy()
    np.testing.assert_allclose(embed_rows(loaded, few, 6), expected, rtol=1e-4, atol=1e-4)


def test_distill_reports_and_writes_its_files(image_dir: Path, tmp_path: Path) -> None:
    report = distill(image_dir, tmp_path, dataclasses.replace(TINY, epochs=1), device="cpu")
    assert (report.train_images, report.held_out_images) == (48, 12)
    assert 0.0 <= report.recall <= 1.0 and 0.0 <= report.recall_before <= 1.0
    assert report.teacher_images_per_s > 0 and report.student_images_per_s > 0
    assert report.speed_ratio == pytest.approx(
        report.student_images_per_s / report.teacher_images_per_s
    )
    assert (report.teacher_dim, report.student_dim, report.device) == (TEACHER_DIM, 96, "cpu")
    saved = json.loads((tmp_path / "distill.json").read_text())
    assert saved["recall"] == report.recall and saved["config"]["student"] == TINY.student
    assert "recall@5" in report.summary()


@pytest.mark.slow
def test_cli_distills_then_embeds_with_the_student(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    arguments = [
        "distill", "--teacher", TINY.teacher, "--teacher-weights", "none", "--teacher-size", "64",
        "--student", TINY.student, "--student-weights", "none", "--student-size", "48",
        "--data", image_dir, "--out", out, "--epochs", "1", "--batch-size", "8",
        "--device", "cpu", "-q", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["config"]["loss"] == "cosine" and 0 <= report["recall"] <= 1
    assert report["held_out_images"] == 12
    collection = tmp_path / "c"
    embedded = CliRunner().invoke(
        main, ["embed", str(image_dir), "-c", str(collection), "--backbone", str(out), "-q"]
    )
    assert embedded.exit_code == 0, embedded.output
    info = CliRunner().invoke(main, ["info", "-c", str(collection)])
    assert "timm:test_resnet" in info.output and "256" in info.output, info.output


def test_cli_refuses_a_bad_loss(image_dir: Path, tmp_path: Path) -> None:
    arguments = ["distill", "--data", str(image_dir), "--out", str(tmp_path), "--loss", "l1"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and "l1" in result.output
