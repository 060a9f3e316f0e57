"""Distillation report: a student that reproduces the offline default's embeddings, faster.

Teacher: the offline default (EfficientNet-Lite0, ImageNet weights) at 224 px. Student: the same
network initialised from the teacher's weights at a lower input size (resolution distillation),
trained to output the teacher's 224-px vectors. Baseline, same run: that student before training;
for scale, the teacher itself at 208 px (a 7 % change of input size) against its 224-px self.
Data: Fashion-MNIST training images to distil on; 400 images of the standard test set held out.
Prints recall@10 of the teacher's neighbours among the held-out images, and images/s of both models
alone on pre-made tensors (same device, same batch): torch eager, and in full mode on a CPU also
ONNX Runtime.

    python bench/distill_bench.py --quick     # 400 training images, 200 held out, 1 epoch: 1-2 minutes
    python bench/distill_bench.py             # 3000 training images, 3 epochs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from transfer_bench import FASHION_MNIST, fashion_mnist_missing, load, nested_order, write_pngs

from lookalike.embedder import get_backbone
from lookalike.embedder.export import use_engine
from lookalike.embedder.sources import walk_images
from lookalike.training.agreement import HeldOut, compare_speed, embed_rows
from lookalike.training.distill import (
    DistillConfig,
    DistillReport,
    distill,
    indexed_images,
    teacher_backbone,
)

TARGET_RECALL = 0.8
TARGET_RATIO = 2.0


def write_data(folder: Path, train: int, held_out: int) -> tuple[Path, Path]:
    """Class-balanced Fashion-MNIST PNGs: `train` training images, `held_out` test images."""
    data = load(FASHION_MNIST)
    train_rows = nested_order(data["train_y"])[:train]
    held_rows = nested_order(data["test_y"])[:held_out]
    write_pngs(data["train_x"], data["train_y"], train_rows, folder / "train")
    write_pngs(data["test_x"], data["test_y"], held_rows, folder / "held-out")
    return folder / "train", folder / "held-out"


def device_words(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def onnx_speed(report: DistillReport, config: DistillConfig, device: str) -> str:
    """Both models on ONNX Runtime (CPU only): images/s and the ratio, or why not."""
    if device != "cpu":
        return "ONNX Runtime: CPU only, not measured"
    try:
        teacher = use_engine(teacher_backbone(config, torch.device("cpu")), "onnx")
        student = get_backbone(report.backbone_path, device="cpu", engine="onnx")
    except Exception as error:  # an export the engine refuses is reported, not fatal
        return f"ONNX Runtime: refused ({error})"
    teacher_rate, student_rate = compare_speed(teacher, student, config.speed_batch_size)
    return (
        f"images/s, ONNX Runtime: teacher {teacher_rate:.1f}, student {student_rate:.1f}, "
        f"ratio {student_rate / teacher_rate:.2f}x"
    )


def teacher_against_itself(held_dir: Path, config: DistillConfig, device: str, size: int) -> float:
    """recall@10 of the teacher at 224 px by the teacher at `size` px: how fragile the figure is."""
    held = indexed_images(walk_images([held_dir]))
    reference = teacher_backbone(config, torch.device(device))
    judge = HeldOut(held, embed_rows(reference, held, config.batch_size), config.k)
    resized = dataclasses.replace(config, teacher_image_size=size)
    return judge.recall(teacher_backbone(resized, torch.device(device)))


def verdict(report: DistillReport) -> str:
    reached = report.recall >= TARGET_RECALL and report.speed_ratio >= TARGET_RATIO
    return (
        f"target recall@10 >= {TARGET_RECALL} at >= {TARGET_RATIO}x the teacher's images/s: "
        f"{'REACHED' if reached else 'NOT reached'} (recall {report.recall:.3f}, "
        f"{report.speed_ratio:.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train", type=int, help="training images (default 400, quick; 3000)")
    parser.add_argument("--held-out", type=int, help="held-out images (default 200, quick; 400)")
    parser.add_argument("--epochs", type=int, help="default 1, quick; 3")
    parser.add_argument("--student-size", type=int, default=DistillConfig.student_image_size)
    parser.add_argument("--lr", type=float, default=DistillConfig.lr)
    parser.add_argument("--loss", default="cosine")
    parser.add_argument("--kl-weight", type=float, default=0.0)
    parser.add_argument("--batchnorm", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/distill"))
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    args = parser.parse_args()
    if fashion_mnist_missing(args.data):
        return 0
    train = args.train or (400 if args.quick else 3000)
    held_out = args.held_out or (200 if args.quick else 400)
    epochs = args.epochs or (1 if args.quick else 3)
    train_dir, held_dir = write_data(args.workdir / f"data-{train}-{held_out}", train, held_out)
    config = DistillConfig(
        student_image_size=args.student_size, loss=args.loss, kl_weight=args.kl_weight,
        epochs=epochs, lr=args.lr, batchnorm=args.batchnorm,
    )  # fmt: skip
    print(f"device: {args.device} ({device_words(args.device)}); torch {torch.__version__}")
    print(
        f"Fashion-MNIST: {train} training images, {held_out} held-out test images; teacher "
        f"{config.teacher} at its own 224 px, student {config.student} at {args.student_size} px "
        f"from the teacher's weights; loss {config.loss}{' (centred)' * config.center}, "
        f"KL weight {config.kl_weight}, "
        f"{epochs} epochs, batch {config.batch_size}, lr {config.lr}"
    )
    started = time.perf_counter()
    report = distill(train_dir, args.workdir / "student", config, held_dir, args.device, False)
    print(report.summary())
    if not args.quick:  # two more passes of the teacher, and two ONNX exports
        itself = teacher_against_itself(held_dir, config, args.device, 208)
        print(
            f"for scale: recall@10 of the teacher at 224 px by the teacher at 208 px: {itself:.3f}"
        )
        print(onnx_speed(report, config, args.device))
    print(f"losses by epoch: {[round(loss, 5) for loss in report.losses]}")
    print(verdict(report))
    print(f"wall time {time.perf_counter() - started:.0f} s")
    (args.workdir / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
