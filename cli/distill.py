"""`lookalike distill`: train a smaller or lower-resolution backbone to reproduce a teacher's."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lookalike.checks import COUNT, DISTILL
from lookalike.cli.options import QUIET, ranged, weights_callback
from lookalike.training.options import BATCHNORM_MODES, LOSSES

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.option("--teacher", default="default", show_default=True, help="The backbone to imitate.")
@click.option(
    "--teacher-weights",
    default="default",
    show_default=True,
    callback=weights_callback,
    help="default, none (random init), a weights id, or a checkpoint file.",
)
@click.option(
    "--teacher-size",
    type=ranged(DISTILL["teacher_image_size"]),
    help="The teacher's crop size (default: its own).",
)
@click.option(
    "--student",
    default="default",
    show_default=True,
    help="The backbone to train: a registry name or an exported backbone.",
)
@click.option(
    "--student-weights",
    default="default",
    show_default=True,
    callback=weights_callback,
    help="Where the student starts: default, none (random init), a weights id, or a file.",
)
@click.option(
    "--student-size",
    type=ranged(COUNT),  # DISTILL["student_image_size"], or 0
    default=144,
    show_default=True,
    help="The student's crop size (0: its own); fewer pixels run faster.",
)
@click.option("--data", required=True, type=FOLDER, help="Folder of images to distil on.")
@click.option(
    "--eval-data",
    type=FOLDER,
    help="Held-out images for the recall figure (default: --holdout of --data).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for backbone.safetensors and distill.json.",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default="cosine",
    show_default=True,
    help="Loss on the vectors.",
)
@click.option(
    "--kl-weight",
    type=ranged(DISTILL["kl_weight"]),
    default=0.0,
    show_default=True,
    help="Weight of the KL term on the teacher's classifier logits (0: off).",
)
@click.option("--temperature", type=ranged(DISTILL["temperature"]), default=4.0, show_default=True)
@click.option(
    "--center/--no-center",
    default=True,
    show_default=True,
    help="Compare vectors minus the teacher's mean (what tells neighbours apart).",
)
@click.option("--epochs", type=ranged(DISTILL["epochs"]), default=3, show_default=True)
@click.option("--batch-size", type=ranged(DISTILL["batch_size"]), default=32, show_default=True)
@click.option(
    "--lr", type=ranged(DISTILL["lr"]), default=3e-4, show_default=True, help="AdamW's peak rate."
)
@click.option(
    "--batchnorm",
    type=click.Choice(BATCHNORM_MODES),
    default="auto",
    show_default=True,
    help="BatchNorm statistics: auto keeps a pretrained student's, updates a random one's.",
)
@click.option("--holdout", type=ranged(DISTILL["holdout"]), default=0.2, show_default=True)
@click.option("--seed", type=ranged(DISTILL["seed"]), default=0, show_default=True)
@click.option("--device", help="cuda, mps or cpu (default: the best available).")
@QUIET
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def distill(
    teacher, teacher_weights, teacher_size, student, student_weights, student_size, data,
    eval_data, out, loss, kl_weight, temperature, center, epochs, batch_size, lr, batchnorm, holdout,
    seed, device, quiet, as_json,
) -> None:  # fmt: skip
    """Train --student to reproduce --teacher's embeddings of the images in --data; report its
    recall@10 of the teacher's neighbours on held-out images and its speed against the teacher."""
    from lookalike.training.distill import DistillConfig
    from lookalike.training.distill import distill as run_distillation

    config = DistillConfig(
        teacher=teacher, teacher_weights=teacher_weights, teacher_image_size=teacher_size,
        student=student, student_weights=student_weights, student_image_size=student_size or None,
        loss=loss, center=center, kl_weight=kl_weight, temperature=temperature, epochs=epochs,
        batch_size=batch_size, lr=lr, batchnorm=batchnorm, holdout=holdout, seed=seed,
    )  # fmt: skip
    report = run_distillation(data, out, config, eval_data, device, progress=not quiet)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
