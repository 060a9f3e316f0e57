"""`lookalike finetune|advise`: train the backbone itself when frozen features are not enough."""

from __future__ import annotations

import json
from pathlib import Path
from shlex import quote

import click

from lookalike.checks import ADVISE, FINETUNE
from lookalike.cli.options import (
    FOLDERS,
    QUIET,
    labels_options,
    labels_value,
    ranged,
    weights_value,
)
from lookalike.training.options import HEAD_INITS, OPTIMIZERS, STRATEGIES


def labelled_data(command):
    """DATA, as `embed` and `probe` take their images (positional; `--data` still reads), and the
    labels as `train` and `probe` take them (`--labels-from-folders`, `--labels FILE`)."""
    command = click.argument(
        "data", required=False, metavar="DATA", type=click.Path(exists=True, path_type=Path)
    )(command)
    command = click.option(
        "--data", "data_option", hidden=True, type=click.Path(exists=True, path_type=Path)
    )(command)
    return labels_options(command)


def images_of(data, data_option, labels_from_folders, labels_file):
    """The labelled images DATA names: a folder with one sub-folder per class, or a collection
    with labelled items (its recorded folder labels, or a labels file)."""
    from lookalike.training.images import labelled_images

    if (data is None) == (data_option is None):
        raise click.UsageError("give DATA: a folder with one sub-folder per class, or a collection")
    data = data or data_option
    labels = labels_value(labels_from_folders, labels_file)
    if labels != FOLDERS and not (data / "manifest.json").is_file():
        raise click.UsageError(
            "a folder is labelled by its sub-folders; --labels FILE needs a collection"
        )
    return data, labelled_images(data, None if labels == FOLDERS else labels)


BACKBONE = click.option(
    "--backbone", default="default", show_default=True, help="Registry name of the base model."
)
WEIGHTS = click.option(
    "--weights", default="default", show_default=True, help="default, none, an id or a file."
)
IMAGE_SIZE = click.option(
    "--image-size", type=ranged(FINETUNE["image_size"]), help="Crop size (default: the weights')."
)


@click.command()
@labelled_data
@BACKBONE
@WEIGHTS
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="partial",
    show_default=True,
    help="head: frozen backbone; partial: top --unfreeze groups; full: all, discriminative "
    "rates; gradual: one more group an epoch from the top.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option(
    "--unfreeze",
    type=ranged(FINETUNE["unfreeze"]),
    default=2,
    show_default=True,
    help="partial: top groups to train.",
)
@click.option("--epochs", type=ranged(FINETUNE["epochs"]), default=5, show_default=True)
@click.option("--batch-size", type=ranged(FINETUNE["batch_size"]), default=32, show_default=True)
@click.option(
    "--lr",
    type=ranged(FINETUNE["lr"]),
    default=1e-3,
    show_default=True,
    help="The new head's learning rate.",
)
@click.option(
    "--backbone-lr",
    type=ranged(FINETUNE["backbone_lr"]),
    help="The top group's rate (default: lr / 10).",
)
@click.option(
    "--lr-decay",
    type=ranged(FINETUNE["lr_decay"]),
    default=0.5,
    show_default=True,
    help="Rate ratio, group to group.",
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw")
@click.option(
    "--weight-decay", type=ranged(FINETUNE["weight_decay"]), default=0.01, show_default=True
)
@click.option(
    "--warmup",
    type=ranged(FINETUNE["warmup_fraction"]),
    default=0.1,
    show_default=True,
    help="Warm-up fraction of the steps.",
)
@click.option(
    "--label-smoothing", type=ranged(FINETUNE["label_smoothing"]), default=0.0, show_default=True
)
@IMAGE_SIZE
@click.option(
    "--val-fraction", type=ranged(FINETUNE["val_fraction"]), default=0.2, show_default=True
)
@click.option(
    "--patience",
    type=ranged(FINETUNE["patience"]),
    default=3,
    show_default=True,
    help="Early stopping, in epochs.",
)
@click.option(
    "--freeze-bn/--train-bn",
    default=True,
    show_default=True,
    help="BatchNorm keeps its pretrained statistics in trained groups too (scale/shift train).",
)
@click.option(
    "--head-init",
    type=click.Choice(HEAD_INITS),
    default="probe",
    show_default=True,
    help="probe: start the head at a linear probe of the frozen features (LP-FT).",
)
@click.option("--seed", type=ranged(FINETUNE["seed"]), default=0, show_default=True)
@click.option(
    "--workers",
    type=ranged(FINETUNE["workers"]),
    default=0,
    show_default=True,
    help="DataLoader worker processes.",
)
@click.option("--device", help="cuda, cpu, ... (default: the best available).")
@click.option("--restart", is_flag=True, help="Start over instead of resuming from --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@QUIET
def finetune(
    data,
    data_option,
    labels_from_folders,
    labels_file,
    out,
    weights,
    warmup,
    device,
    restart,
    as_json,
    quiet,
    **options,
) -> None:
    """Fine-tune a backbone on labelled images; the best epoch becomes an embedder.

    Resumes from OUT/last.pt when it exists. Embed with the result:
    `lookalike embed IMAGES -c COLLECTION --backbone OUT`.
    """
    from lookalike.training.finetune import FinetuneConfig
    from lookalike.training.finetune import finetune as run

    _, images = images_of(data, data_option, labels_from_folders, labels_file)
    config = FinetuneConfig(weights=weights_value(weights), warmup_fraction=warmup, **options)
    report = run(images, out, config, device, resume=not restart, progress=not quiet)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for record in report.history:
        click.echo(
            f"epoch {record.epoch}: {record.unfrozen} groups trained, loss {record.loss:.4f}, "
            f"train accuracy {record.train_accuracy:.4f}, validation {record.val_accuracy:.4f} "
            f"({record.seconds:.0f} s)"
        )
    stopped = " (stopped early)" if report.stopped_early else ""
    click.echo(
        f"best: epoch {report.best_epoch}, validation accuracy "
        f"{report.best_val_accuracy:.4f}{stopped}; {report.skipped_images} images skipped"
    )
    if report.frozen_val_accuracy is not None:
        click.echo(
            f"frozen baseline: validation accuracy {report.frozen_val_accuracy:.4f} (a linear "
            "probe of the frozen backbone, same split; `lookalike train` on cached features)"
        )
    if config.strategy == "head":
        click.echo(
            "note: strategy head trains no backbone group: the exported backbone embeds as the "
            "base model does, under a new spec; `lookalike train` on a collection's cached "
            "features trains this head without embedding again"
        )
    click.echo(f"embedder: {out / 'backbone.safetensors'} (lookalike embed ... --backbone {out})")


@click.command()
@labelled_data
@BACKBONE
@WEIGHTS
@IMAGE_SIZE
@click.option(
    "--sample",
    type=ranged(ADVISE["sample"]),
    default=2000,
    show_default=True,
    help="Images probed at most.",
)
@click.option("--json", "as_json", is_flag=True)
@QUIET
def advise(
    data,
    data_option,
    labels_from_folders,
    labels_file,
    backbone,
    weights,
    image_size,
    sample,
    as_json,
    quiet,
) -> None:
    """Recommend head, partial, gradual or full fine-tuning for a labelled dataset, and why."""
    from lookalike.training.advise import advise as recommend

    data, images = images_of(data, data_option, labels_from_folders, labels_file)
    advice = recommend(
        images, backbone, weights_value(weights), image_size, sample, progress=not quiet
    )
    embedder = {"--backbone": backbone, "--weights": weights, "--image-size": image_size}
    command = advised_command(advice.strategy, advice.unfreeze, data, labels_file, embedder)
    if as_json:
        click.echo(json.dumps({**advice.to_dict(), "command": command}, indent=2))
        return
    click.echo(f"strategy: {advice.strategy}")
    click.echo(f"why: {advice.reason}")
    click.echo(f"run: {command}")


def advised_command(
    strategy: str, unfreeze: int, data: Path, labels_file: str | None, embedder: dict
) -> str:
    """The command that carries the advice out. A head on frozen features is `train` on the
    collection's cached embeddings (seconds, and the embeddings stay the base model's: a
    `finetune --strategy head` would export an unchanged backbone under a new spec), after
    `embed` for a folder; other strategies are a `finetune` run."""
    given = [f"{flag} {quote(str(value))}" for flag, value in embedder.items()
             if value is not None and value != "default"]  # fmt: skip
    labels = [f"--labels {quote(labels_file)}" if labels_file else "--labels-from-folders"]
    if strategy != "head":
        unfrozen = [f"--unfreeze {unfreeze}"] if strategy == "partial" else []
        words = ["lookalike finetune", quote(str(data)), *given, *labels]
        return " ".join([*words, f"--strategy {strategy}", *unfrozen, "--out finetuned"])
    if (data / "manifest.json").is_file():  # a collection: its features are cached already
        return " ".join(["lookalike train -c", quote(str(data)), "--name head", *labels])
    collection = quote(f"{data.name}.lookalike")
    embed = ["lookalike embed", quote(str(data)), "-c", collection, *given, *labels]
    train = ["lookalike train -c", collection, "--name head", *labels]
    return f"{' '.join(embed)} && {' '.join(train)}"
