"""`lookalike info` and `lookalike remove`: describe a collection, take items out of it."""

from __future__ import annotations

import click

from lookalike.cli.options import COLLECTION


@click.command()
@COLLECTION
def info(collection_dir) -> None:
    """Describe a collection: its embedder spec, size and failures."""
    from lookalike.store.collection import Collection

    collection = Collection.open(collection_dir)
    spec = collection.spec
    click.echo(f"collection   {collection.path}")
    click.echo(
        f"created      {collection.manifest['created']} (lookalike {collection.manifest['lookalike_version']})"
    )
    click.echo(f"backbone     {spec.backbone} (weights: {spec.weights})")
    click.echo(f"layers       {', '.join(f'{k} ({v})' for k, v in spec.dims.items())}")
    click.echo(f"pooling      {spec.pooling}, normalize={spec.normalize}")
    click.echo(
        f"preprocess   resize {spec.preprocess.resize}, crop {spec.preprocess.crop}, "
        f"{spec.preprocess.interpolation}, mean {spec.preprocess.mean}, std {spec.preprocess.std}"
    )
    click.echo(f"fingerprint  {spec.fingerprint()}")
    click.echo(f"items        {len(collection)} in {len(collection.shards())} shards")
    click.echo(f"failed       {len(collection.failures())} (see failed.jsonl)")


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
