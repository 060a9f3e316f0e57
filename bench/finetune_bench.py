"""Fine-tuning vs the frozen linear probe: Fashion-MNIST, the offline default, same split, one run.

Both fine-tuning strategies start their head from a probe of the frozen features (LP-FT) and
train with discriminative rates. The probe is lookalike's default classifier (logistic regression) on the frozen backbone's
embeddings; the fine-tuned runs train on the same images (the same 80 %: the other 20 % is their
validation split, for early stopping and the best epoch) and every model is scored on the same
images of the standard test set. Low resolution and a few epochs keep it to minutes on a CPU.

    python bench/finetune_bench.py --quick    # 500 train / 500 test, 1 epoch: a smoke run, ~2 min
    python bench/finetune_bench.py            # 3,000 train / 2,000 test, 4 epochs, ~10 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transfer_bench import (
    CLASSES,
    FASHION_MNIST,
    fashion_mnist_missing,
    load,
    nested_order,
    write_pngs,
)

from lookalike.classify import make_model
from lookalike.embedder import get_backbone
from lookalike.training.classifier import evaluate
from lookalike.training.finetune import FinetuneConfig, finetune
from lookalike.training.images import (
    LabelledImages,
    eval_transform,
    labelled_images,
    loader,
    stratified_split,
)

STRATEGIES = ("partial", "gradual")


def frozen_features(images: LabelledImages, image_size: int) -> np.ndarray:
    with get_backbone(image_size=image_size, engine="torch", device="cpu") as backbone:
        batches = loader(images, eval_transform(backbone.spec.preprocess), 64, False, 0)
        return np.concatenate([backbone.embed(b.pixels)["embedding"] for b in batches])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("bench-data/finetune"))
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if fashion_mnist_missing(args.data):
        return 0
    n_train, n_test, size, epochs = (500, 500, 64, 1) if args.quick else (3000, 2000, 64, 4)
    if args.threads:  # 1 when other jobs share the cores: OpenMP threads that wait spin
        torch.set_num_threads(args.threads)
    data = load(args.data)
    work = args.workdir / ("quick" if args.quick else "full")
    train_rows = nested_order(data["train_y"])[:n_train]
    train_dir, test_dir = work / f"train-{n_train}", work / f"test-{n_test}"
    write_pngs(data["train_x"], data["train_y"], train_rows, train_dir)
    write_pngs(data["test_x"], data["test_y"], np.arange(n_test), test_dir)
    train, test = labelled_images(train_dir), labelled_images(test_dir)
    assert train.classes == test.classes == tuple(sorted(CLASSES))
    device = "cpu"
    print(
        f"Fashion-MNIST: {len(train)} train images (80 % fit, 20 % validation), {len(test)} test; "
        f"offline default (EfficientNet-Lite0, ImageNet) at {size} px; device {device}, "
        f"{torch.get_num_threads()} threads"
    )

    fit_rows, _ = stratified_split(train.targets, 0.2, seed=0)  # the fine-tuning runs' own split
    started = time.perf_counter()
    fit_features = frozen_features(train.subset(fit_rows), size)
    test_features = frozen_features(test, size)
    probe = make_model("logreg", len(fit_rows), int(np.bincount(train.targets[fit_rows]).min()))
    probe.fit(fit_features, train.targets[fit_rows])
    probe_accuracy = float((probe.predict(test_features) == test.targets).mean())
    results = {"probe": {"test_accuracy": round(probe_accuracy, 4),
                         "seconds": round(time.perf_counter() - started, 1)}}  # fmt: skip
    print(f"\n{'model':<28} {'test acc':>9} {'best val':>9} {'epochs':>7} {'seconds':>8}")
    print(f"{'frozen + logreg (baseline)':<28} {probe_accuracy:>9.4f} {'':>9} {'':>7} "
          f"{results['probe']['seconds']:>8.1f}")  # fmt: skip
    for strategy in STRATEGIES:
        config = FinetuneConfig(
            strategy=strategy, unfreeze=3, epochs=epochs, batch_size=32, image_size=size,
            lr=1e-3, backbone_lr=5e-4, lr_decay=0.7, label_smoothing=0.1, patience=epochs,
        )  # fmt: skip
        started = time.perf_counter()
        report = finetune(train, work / strategy, config, device, resume=False, progress=False)
        seconds = time.perf_counter() - started
        accuracy = evaluate(work / strategy, test)
        results[strategy] = {
            "test_accuracy": round(accuracy, 4),
            "best_val_accuracy": report.best_val_accuracy,
            "epochs": len(report.history),
            "seconds": round(seconds, 1),
            "history": [r.__dict__ for r in report.history],
        }
        print(f"{'fine-tune ' + strategy:<28} {accuracy:>9.4f} {report.best_val_accuracy:>9.4f} "
              f"{len(report.history):>7} {seconds:>8.1f}")  # fmt: skip
    best = max(("partial", "gradual"), key=lambda s: results[s]["test_accuracy"])
    gain = results[best]["test_accuracy"] - probe_accuracy
    print(f"\nbest fine-tune ({best}) - frozen probe = {gain:+.4f} test accuracy "
          f"({'beats' if gain > 0 else 'does NOT beat'} the probe)")  # fmt: skip
    (work / "finetune.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
