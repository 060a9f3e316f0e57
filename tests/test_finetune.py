"""Fine-tuning: stage groups, freezing, learning rates, gradual unfreezing, exact resume, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lookalike.cli import main
from lookalike.embedder import get_backbone
from lookalike.embedder.heads import remove_classifier
from lookalike.embedder.registry import create_model
from lookalike.errors import InvalidArgument
from lookalike.store.collection import Collection
from lookalike.training.advise import recommend
from lookalike.training.classifier import accuracy, build_classifier, evaluate
from lookalike.training.finetune import FinetuneConfig, Trainer, finetune, make_optimizer
from lookalike.training.images import eval_transform, labelled_images, loader
from lookalike.training.stages import stage_groups

TINY = {"backbone": "timm:test_resnet", "weights": None, "image_size": 32, "batch_size": 8}


def config(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{**TINY, "lr": 1e-2, **changes})


def test_stage_groups_follow_the_architecture() -> None:
    lite0 = create_model("default")
    remove_classifier(lite0.model)
    names = [group.name for group in stage_groups(lite0.model)]
    assert names == ["conv_stem+bn1", *(f"blocks.{i}" for i in range(7)), "conv_head+bn2"]
    resnet = create_model("resnet18", None)
    remove_classifier(resnet.model)
    assert [g.name for g in stage_groups(resnet.model)] == [
        "conv1+bn1", "layer1", "layer2", "layer3", "layer4"
    ]  # fmt: skip


def test_groups_get_discriminative_learning_rates() -> None:
    settings = config(strategy="full", lr=1e-2, backbone_lr=1e-3, lr_decay=0.5)
    model, groups, _, _ = build_classifier(
        settings.backbone, settings.weights, settings.image_size, classes=3
    )
    optimizer = make_optimizer(model, groups, settings)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["head"] == pytest.approx(1e-2)
    assert rates["layer4"] == pytest.approx(1e-3)
    assert rates["layer3"] == pytest.approx(5e-4)
    assert rates["conv1+bn1"] == pytest.approx(1e-3 * 0.5**4)
    counted = sum(len(g["params"]) for g in optimizer.param_groups)
    assert counted == len(list(model.parameters()))  # every parameter in exactly one group


def test_unfreezing_schedules() -> None:
    assert [config(strategy="gradual").unfrozen_at(e, 5) for e in range(7)] == [0, 1, 2, 3, 4, 5, 5]
    assert {config(strategy="partial", unfreeze=2).unfrozen_at(e, 5) for e in range(4)} == {2}
    assert config(strategy="full").unfrozen_at(0, 5) == 5
    assert config(strategy="head").unfrozen_at(3, 5) == 0
    with pytest.raises(InvalidArgument):
        config(strategy="everything")


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_partial_trains_only_the_top_groups(
    digit_dir: Path, tmp_path: Path, freeze_bn: bool
) -> None:
    images = labelled_images(digit_dir)
    settings = config(strategy="partial", unfreeze=1, freeze_bn=freeze_bn)
    trainer = Trainer(images, tmp_path, settings, "cpu", False)
    before = _snapshot(trainer.model)
    trainer.train_epoch(0)
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = [k for k in before if k.startswith(("body.conv1", "body.bn1", "body.layer1",
                                                  "body.layer2", "body.layer3"))]  # fmt: skip
    assert frozen and not changed & set(frozen)  # weights and BatchNorm statistics alike
    assert any(k.startswith("body.layer4.") and k.endswith("conv1.weight") for k in changed)
    assert {"head.weight", "head.bias"} <= changed
    statistics = {k for k in changed if k.endswith("running_mean")}
    assert bool(statistics) != freeze_bn  # frozen BN: no statistic moves, even in layer4


def test_head_starts_from_the_probe(digit_dir: Path, tmp_path: Path) -> None:
    """LP-FT: before any step, the head already classifies as a fitted probe does."""
    images = labelled_images(digit_dir)
    scores = {}
    for init in ("probe", "random"):
        trainer = Trainer(images, tmp_path / init, config(head_init=init), "cpu", False)
        if init == "probe":
            trainer.init_head_from_probe(trainer.fit_frozen_probe())
        batches = loader(trainer.train_images, eval_transform(trainer.preprocess), 8, False, 0)
        scores[init] = accuracy(trainer.model, batches, torch.device("cpu"))[0]
    assert scores["probe"] >= 0.9 > scores["random"] + 0.3


def test_gradual_unfreezes_one_group_an_epoch(digit_dir: Path, tmp_path: Path) -> None:
    images = labelled_images(digit_dir)
    trainer = Trainer(images, tmp_path, config(strategy="gradual", epochs=3), "cpu", False)
    trainable = []
    for epoch in range(3):
        trainer.train_epoch(epoch)
        trainable.append([all(p.requires_grad for p in g.parameters()) for g in trainer.groups])
    assert trainable == [
        [False] * 5,
        [False, False, False, False, True],
        [False, False, False, True, True],
    ]


class Crash(RuntimeError):
    pass


@pytest.mark.slow
def test_resume_continues_exactly(digit_dir: Path, tmp_path: Path) -> None:
    """A run killed after epoch 1 and resumed ends with the same weights as one never stopped."""
    images = labelled_images(digit_dir)
    settings = config(strategy="full", epochs=3, patience=5)
    straight = finetune(images, tmp_path / "straight", settings, "cpu", progress=False)

    class CrashingTrainer(Trainer):
        def train_epoch(self, epoch: int):
            if epoch == 1:
                raise Crash
            return super().train_epoch(epoch)

    with pytest.raises(Crash):
        CrashingTrainer(images, tmp_path / "resumed", settings, "cpu", False).run()
    resumed = finetune(images, tmp_path / "resumed", settings, "cpu", progress=False)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight.history]
    ours = torch.load(tmp_path / "resumed/last.pt", weights_only=True)
    theirs = torch.load(tmp_path / "straight/last.pt", weights_only=True)
    for key, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    with pytest.raises(InvalidArgument, match="other settings"):
        finetune(images, tmp_path / "resumed", config(strategy="head"), "cpu", progress=False)


@pytest.mark.slow
def test_exported_backbone_embeds_through_the_registry_and_cli(
    digit_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, [
        "finetune", "--data", str(digit_dir), "--backbone", "timm:test_resnet", "--weights", "none",
        "--strategy", "partial", "--unfreeze", "2", "--epochs", "2", "--batch-size", "8",
        "--lr", "0.01", "--image-size", "32", "--out", str(out), "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best: epoch" in result.output
    finetuned = get_backbone(str(out), device="cpu")
    base = get_backbone("timm:test_resnet", None, image_size=32, device="cpu")
    assert finetuned.spec.backbone == "timm:test_resnet"
    assert finetuned.spec.weights.startswith("file:") and "#sha256:" in finetuned.spec.weights
    assert finetuned.spec.preprocess.crop == 32
    assert finetuned.spec.fingerprint() != base.spec.fingerprint()
    pixels = torch.randn(2, 3, 32, 32)
    ours, theirs = finetuned.embed(pixels)["embedding"], base.embed(pixels)["embedding"]
    assert ours.shape == (2, 96) and not np.allclose(ours, theirs, atol=1e-3)
    assert 0.0 <= evaluate(out, labelled_images(digit_dir)) <= 1.0

    collection = tmp_path / "collection"
    result = runner.invoke(main, ["embed", str(digit_dir), "-c", str(collection),
                                  "--backbone", str(out), "--engine", "torch"])  # fmt: skip
    assert result.exit_code == 0, result.output
    # embed's default layers: the embedding and the inner stages (`get_backbone(layers=None)`)
    with get_backbone(str(out), layers=None, device="cpu") as default:
        assert Collection.open(collection).spec.fingerprint() == default.spec.fingerprint()


def test_undecodable_training_images_are_counted_not_fatal(digit_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(digit_dir, data)
    (data / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = finetune(labelled_images(data), tmp_path / "run", config(epochs=1), "cpu",
                      progress=False)  # fmt: skip
    assert report.skipped_images >= 1
    assert report.history[0].loss > 0


def test_advice_follows_the_grid() -> None:
    few = {c: 20 for c in "abcde"}
    many = {c: 2000 for c in "abcde"}
    assert recommend(few, 0.97).strategy == "head"
    assert recommend(few, 0.40).strategy == "partial"
    assert recommend(many, 0.40).strategy == "full"
    assert recommend(many, 0.80).strategy == "gradual"
    advice = recommend({c: 300 for c in "ab"}, 0.80)  # separation 0.6: between
    assert (advice.strategy, advice.unfreeze) == ("partial", 2)
    assert "300 images per class" in advice.reason


@pytest.mark.slow
def test_advise_cli_probes_the_data(digit_dir: Path) -> None:
    result = CliRunner().invoke(main, ["advise", str(digit_dir), "--backbone",
                                       "timm:test_resnet", "--weights", "none", "--image-size", "32",
                                       "--json", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"strategy"' in result.output and '"probe_accuracy"' in result.output


@pytest.mark.parametrize("command", ["advise", "finetune"])
def test_data_and_labels_are_named_as_for_embed_train_and_probe(
    command: str, digit_dir: Path, tmp_path: Path
) -> None:
    """DATA positional (as `embed` and `probe`); labels as `train` and `probe` take them."""
    out = ["--out", str(tmp_path / "out")] if command == "finetune" else []
    missing = CliRunner().invoke(main, [command, *out])
    assert missing.exit_code == 2 and "give DATA" in missing.output
    twice = CliRunner().invoke(main, [command, str(digit_dir), "--data", str(digit_dir), *out])
    assert twice.exit_code == 2 and "give DATA" in twice.output
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n")
    refused = CliRunner().invoke(main, [command, str(digit_dir), "--labels", str(labels), *out])
    assert refused.exit_code == 2 and "--labels FILE needs a collection" in refused.output
    both = [command, str(digit_dir), "--labels", str(labels), "--labels-from-folders", *out]
    assert "not both" in CliRunner().invoke(main, both).output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_the_gpu_with_bf16_autocast(digit_dir: Path, tmp_path: Path) -> None:
    report = finetune(labelled_images(digit_dir), tmp_path, config(strategy="full", epochs=2),
                      "cuda", progress=False)  # fmt: skip
    assert report.device.startswith("cuda") and report.history[-1].loss > 0
    assert get_backbone(str(tmp_path), device="cuda").spec.dims["embedding"] == 96
