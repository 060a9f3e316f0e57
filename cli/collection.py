"""`lookalike info` and `lookalike remove`: describe a collection, take items out of it."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

import click

from lookalike.cli.options import COLLECTION

if TYPE_CHECKING:
    from lookalike.store.collection import Collection


@click.command()
@COLLECTION
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(collection_dir, as_json) -> None:
    """Describe a collection: its embedder spec, size, labels, splits and failures."""
    from lookalike.classify.labels import label_summary, split_label_warning
    from lookalike.store.collection import Collection

    collection = Collection.open(collection_dir)
    described = describe(collection)
    warning = split_label_warning(described["labels"])
    described["warnings"] = [warning] if warning else []
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    spec = collection.spec
    click.echo(f"collection   {collection.path}")
    click.echo(f"created      {described['created']} (lookalike {described['lookalike_version']})")
    click.echo(f"backbone     {spec.backbone} (weights: {spec.weights})")
    click.echo(f"layers       {', '.join(f'{k} ({v})' for k, v in spec.dims.items())}")
    click.echo(f"pooling      {spec.pooling}, normalize={spec.normalize}")
    click.echo(
        f"preprocess   resize {spec.preprocess.resize}, crop {spec.preprocess.crop}, "
        f"{spec.preprocess.interpolation}, mean {spec.preprocess.mean}, std {spec.preprocess.std}"
    )
    click.echo(f"fingerprint  {described['fingerprint']}")
    click.echo(f"items        {described['items']} in {described['shards']} shards")
    labels = label_summary(described["labels"]) or "none"
    click.echo(f"labels       {labels}; {described['unlabelled']} items without a label")
    splits = label_summary(described["splits"]) or "none (no train/test/val folder on the paths)"
    click.echo(f"splits       {splits}")
    click.echo(f"failed       {described['failed']} (see failed.jsonl)")
    for line in described["warnings"]:
        click.echo(f"warning: {line}", err=True)


def describe(collection: Collection) -> dict:
    """What `info` says of a collection, as JSON-ready values."""
    from lookalike.embedder.sources import split_of_path

    items = collection.items(["path", "label"])
    labels = Counter(label for label in items["label"].to_pylist() if label is not None)
    splits = Counter(filter(None, map(split_of_path, items["path"].to_pylist())))
    return {
        "collection": str(collection.path),
        "created": collection.manifest["created"],
        "lookalike_version": collection.manifest["lookalike_version"],
        "spec": collection.spec.to_dict(),
        "fingerprint": collection.spec.fingerprint(),
        "items": len(collection),
        "shards": len(collection.shards()),
        "labels": dict(labels.most_common()),
        "unlabelled": len(items) - sum(labels.values()),
        "splits": dict(splits.most_common()),
        "failed": len(collection.failures()),
    }


@click.command()
@click.argument("ids", nargs=-1, type=click.IntRange(min=0))
@COLLECTION
@click.option("--missing", is_flag=True, help="Remove every item whose file is no longer on disk.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
def remove(ids, collection_dir, missing, dry_run) -> None:
    """Remove items (by id, and/or --missing) from a collection; its saved index follows."""
    from lookalike.index import has_index, update_index
    from lookalike.store.collection import Collection
    from lookalike.store.sync import missing_items, remove_items

    if not ids and not missing:
        raise click.UsageError("give item ids and/or --missing")
    collection = Collection.open(collection_dir)
    chosen = sorted({*ids, *(missing_items(collection).tolist() if missing else ())})
    if dry_run:
        for item_id in chosen:
            click.echo(f"would remove {item_id}")
        click.echo(f"{len(chosen)} items would be removed")
        return
    removed = remove_items(collection, chosen)
    click.echo(f"removed {removed} items; {len(collection)} remain")
    layer = collection.spec.layers[0]
    if has_index(collection.path, layer):
        report = update_index(collection, layer)
        click.echo(f"index: removed {report.removed}; it holds {report.total}")
