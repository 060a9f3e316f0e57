"""`lookalike train|predict|probe|classifiers`: classifiers on cached features, from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lookalike.checks import AT_LEAST_ONE, PREDICT, PROBE, TRAIN, Range
from lookalike.classify.models import MODELS
from lookalike.cli.options import (
    COLLECTION,
    QUIET,
    labels_options,
    labels_value,
    ranged,
    weights_value,
)
from lookalike.embedder.spec import POOLINGS

ITEM_ID = Range(0, 2**63 - 1, integer=True)  # ids are int64


@click.command()
@COLLECTION
@click.option("--name", required=True, help="Classifier name (letters, digits, . _ -).")
@labels_options
@click.option(
    "--model",
    default="logreg",
    show_default=True,
    type=click.Choice(list(MODELS)),
    help="The estimator.",
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="'auto' (the default): choose among the collection's cached layers, and all of them side "
    "by side, by inner CV; or the layer(s) to read, side by side. Repeatable.",
)
@click.option(
    "--nested",
    is_flag=True,
    help="With --layer auto: score the choice by nested CV (honest; folds + 1 times the fits) "
    "instead of reporting its selection score.",
)
@click.option(
    "--folds",
    type=ranged(TRAIN["folds"]),
    default=5,
    show_default=True,
    help="Stratified k-fold CV folds.",
)
@click.option(
    "--holdout",
    type=ranged(TRAIN["holdout"]),
    help="Evaluate on this held-out fraction instead of CV.",
)
@click.option(
    "--split",
    help="Train on one split only (train, val, ...: the items with a folder of that name on "
    "their path); the others, a test split say, stay unseen.",
)
@click.option("--overwrite", is_flag=True, help="Replace a classifier of the same name.")
@click.option("--seed", type=ranged(TRAIN["seed"]), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the classifier card as JSON.")
def train(
    collection_dir,
    name,
    labels_from_folders,
    labels_file,
    model,
    layers,
    nested,
    folds,
    holdout,
    split,
    overwrite,
    seed,
    as_json,
) -> None:
    """Train a classifier on the collection's cached embeddings (the backbone never runs)."""
    from lookalike.classify import train_classifier

    report = train_classifier(
        collection_dir,
        name,
        labels_value(labels_from_folders, labels_file),
        model,
        layers or "auto",
        folds,
        holdout,
        overwrite,
        seed,
        nested=nested,
        split=split,
    )
    click.echo(json.dumps(report.card, indent=2) if as_json else report.summary())


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@COLLECTION
@click.option("--name", required=True, help="The classifier to use.")
@click.option(
    "--id", "ids", multiple=True, type=ranged(ITEM_ID), help="Predict a stored item. Repeatable."
)
@click.option(
    "-k",
    "--k",
    type=ranged(PREDICT["k"]),
    default=5,
    show_default=True,
    help="Labelled neighbours to show (0: none).",
)
@click.option("--embedding", is_flag=True, help="Include the embedding (with --json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of text.")
def predict(images, collection_dir, name, ids, k, embedding, as_json) -> None:
    """Class probabilities and labelled neighbours for IMAGES (new files) and/or --id items."""
    from lookalike import service

    if not images and not ids:
        raise click.UsageError("give image files and/or --id")
    with service.open(collection_dir, read_only=True) as library:
        results = []
        if images:
            results += library.predict_images(name, images, k, embedding)
        if ids:
            results += library.predict_ids(name, ids, k, embedding)
    for result in results:
        if as_json:
            click.echo(json.dumps(result.to_dict()))
            continue
        top = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:3]
        click.echo(
            f"{result.source}: {result.label} ({', '.join(f'{label} {p:.3f}' for label, p in top)})"
        )
        for hit in result.neighbours:
            click.echo(f"  {hit.distance:.3f}  {hit.label or '-'!s:<12} {hit.path}")


@click.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-c",
    "--collection",
    "collection_dir",
    type=click.Path(path_type=Path),
    help="Probe the collection's labelled images with its own backbone.",
)
@labels_options
@click.option("--backbone", default="default", show_default=True, help="Backbone for FOLDER.")
@click.option("--weights", default="default", show_default=True, help="Weights for FOLDER.")
@click.option("--image-size", type=ranged(AT_LEAST_ONE), help="Crop size override for FOLDER.")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Layers to probe (default: the deepest stages); blocks.5/gem: that pooling only.",
)
@click.option(
    "--pooling",
    "poolings",
    multiple=True,
    type=click.Choice(POOLINGS),
    help="Poolings to compare (default: avg, max, gem).",
)
@click.option(
    "--sample",
    type=ranged(PROBE["sample"]),
    default=2000,
    show_default=True,
    help="At most this many images (stratified).",
)
@click.option("--folds", type=ranged(PROBE["folds"]), default=5, show_default=True)
@click.option("--chart", type=click.Path(path_type=Path), help="Write the bar chart PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@QUIET
def probe(
    folder,
    collection_dir,
    labels_from_folders,
    labels_file,
    backbone,
    weights,
    image_size,
    layers,
    poolings,
    sample,
    folds,
    chart,
    as_json,
    quiet,
) -> None:
    """Rank layers and poolings by how well a linear probe (and kNN) separates the labels."""
    from lookalike.classify import probe_collection, probe_folder

    if bool(folder) == bool(collection_dir):
        raise click.UsageError("give a labelled FOLDER (one sub-folder per class) or --collection")
    labels = labels_value(labels_from_folders, labels_file)
    if folder and labels != "folders":
        raise click.UsageError("a FOLDER is labelled by its sub-folders; --labels FILE needs -c")
    options = {
        "layers": layers or None,
        "poolings": poolings or ("avg", "max", "gem"),
        "sample": sample,
        "folds": folds,
        "progress": not quiet,
    }
    if collection_dir:
        report = probe_collection(collection_dir, labels, **options)
    else:
        embedder = {"name": backbone, "weights": weights_value(weights)}
        if image_size:
            embedder["image_size"] = image_size
        report = probe_folder(folder, embedder=embedder, **options)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    chart = chart or (Path(collection_dir) / "probe.png" if collection_dir else None)
    if chart:
        chart.write_bytes(report.chart())
        if not as_json:
            click.echo(f"chart: {chart}")


@click.command()
@COLLECTION
def classifiers(collection_dir) -> None:
    """List the classifiers saved in a collection."""
    from lookalike.classify import list_classifiers
    from lookalike.store.collection import Collection

    cards = list_classifiers(Collection.open(collection_dir))
    if not cards:
        click.echo("no classifiers yet (train one with `lookalike train`)")
    for card in cards:
        metrics, layers = card["metrics"], "+".join(card.get("layers") or [card["layer"]])
        click.echo(
            f"{card['name']:<20} {card['model']:<10} layer {layers:<12} "
            f"{len(card['classes'])} classes, {card['n_train']} items, "
            f"accuracy {metrics['accuracy']:.3f} ({metrics['method']}), {card['created']}"
        )
