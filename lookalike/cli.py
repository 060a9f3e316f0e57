"""The `lookalike` command line: parsing and printing only; the work is in the library."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

import click

from lookalike import __version__
from lookalike.cli_options import COLLECTION, LAYER, collection_option, weights_value
from lookalike.errors import LookalikeError

USER_ERRORS = (LookalikeError, ValueError, KeyError, OSError)


class LookalikeGroup(click.Group):
    """Turns the library's errors into one-line messages (a traceback with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            if ctx.params.get("verbose"):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise click.ClickException(str(message)) from error


@click.group(cls=LookalikeGroup)
@click.version_option(__version__, prog_name="lookalike")
@click.option(
    "-v", "--verbose", count=True, help="More logging (-v: info, -vv: debug); tracebacks."
)
def main(verbose: int) -> None:
    """Embed images with a frozen pretrained backbone; search and classify the cached features."""
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * verbose),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@collection_option("Collection directory (created on first use).")
@click.option(
    "--backbone",
    help="Backbone name: default, a torchvision model, timm:<name>, hub:<repo>:<entry>.",
)
@click.option("--weights", help="default, none (random init), a weights id, or a checkpoint file.")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Layer(s) to embed: 'embedding' or a module name. Repeatable.",
)
@click.option(
    "--pooling",
    type=click.Choice(["avg", "max", "gem", "cls"]),
    help="Pooling for spatial maps / tokens.",
)
@click.option(
    "--normalize/--no-normalize", default=None, help="L2-normalise embeddings (default: on)."
)
@click.option(
    "--image-size", type=int, help="Crop size override (the resize keeps the weights' ratio)."
)
@click.option(
    "--labels-from-folders",
    is_flag=True,
    help="Label each image by its first sub-folder under the root.",
)
@click.option("--batch-size", type=int, help="Images per batch (default: 8 on CPU, 128 on GPU).")
@click.option(
    "--workers",
    type=int,
    help="Decoders: threads on CPU (default: one per core), processes on GPU (cores - 1, at most 8).",
)
@click.option("--device", help="cuda, mps or cpu (default: the best available).")
@click.option(
    "--precision",
    default="auto",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    help="Autocast precision on GPU.",
)
@click.option(
    "--engine",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "onnx", "torch"]),
    help="auto: ONNX Runtime on a CPU where the backbone exports and matches torch, else torch.",
)
@click.option(
    "--shard-size", default=1024, show_default=True, help="Items per shard (the unit of resume)."
)
@click.option(
    "--retry-failed", is_flag=True, help="Try again files that failed before and have not changed."
)
@click.option(
    "--max-pixels", default=64_000_000, show_default=True, help="Refuse images with more pixels."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def embed(
    images,
    collection_dir,
    backbone,
    weights,
    layers,
    pooling,
    normalize,
    image_size,
    labels_from_folders,
    batch_size,
    workers,
    device,
    precision,
    engine,
    shard_size,
    retry_failed,
    max_pixels,
    quiet,
) -> None:
    """Embed every image under IMAGES (folders or files) into a collection; resumable."""
    from lookalike.bulk import embed_images

    options = {
        "name": backbone,
        "weights": weights,
        "layers": layers or None,
        "pooling": pooling,
        "normalize": normalize,
        "image_size": image_size,
    }
    embedder = {k: v for k, v in options.items() if v is not None}
    if weights is not None:
        embedder["weights"] = weights_value(weights)
    report = embed_images(
        images,
        collection_dir,
        embedder,
        labels_from_folders=labels_from_folders,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        precision=precision,
        engine=engine,
        shard_size=shard_size,
        retry_failed=retry_failed,
        max_pixels=max_pixels,
        progress=not quiet,
    )
    for failure in report.failed:
        click.echo(f"failed: {failure['path']}: {failure['reason']}", err=True)
    click.echo(report.summary())


@main.command()
@click.argument("backbone", default="default")
@click.option(
    "--weights",
    default="none",
    show_default=True,
    help="Weights to build with (shapes do not depend on them).",
)
@click.option("--image-size", type=int, help="Input size (default: the weights' crop size).")
@click.option(
    "--filter", "pattern", help="Only layers matching this glob, e.g. 'layer*' or 'blocks.*'."
)
def layers(backbone, weights, image_size, pattern) -> None:
    """List the hookable layers of BACKBONE with their output shapes for one image."""
    from lookalike.embedder import list_layers

    rows = list_layers(backbone, weights=weights_value(weights), image_size=image_size)
    rows = [r for r in rows if not pattern or fnmatch.fnmatch(r[0], pattern)]
    width = max((len(name) for name, _, _ in rows), default=10)
    click.echo(f"{'layer':<{width}}  {'type':<24}  output shape")
    click.echo(f"{'embedding':<{width}}  {'(model output, no head)':<24}  (pooled to a vector)")
    for name, kind, shape in rows:
        click.echo(f"{name:<{width}}  {kind:<24}  {tuple(shape)}")


@main.command()
@click.option(
    "--source", type=click.Choice(["torchvision", "timm"]), help="Only this source's names."
)
@click.option("--filter", "pattern", help="Glob on names, e.g. 'resnet*' or 'timm:vit_*'.")
def backbones(source, pattern) -> None:
    """List backbone names (hub:<repo>:<entry> and checkpoint files work too)."""
    from lookalike.embedder import list_backbones

    for name in list_backbones(source):
        if not pattern or fnmatch.fnmatch(name, pattern):
            click.echo(name)


@main.command()
@click.option(
    "-c", "--collection", "collection_dir", required=True, type=click.Path(path_type=Path)
)
def info(collection_dir) -> None:
    """Describe a collection: its embedder spec, size and failures."""
    from lookalike.collection import Collection

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


@main.command()
@click.option("--workdir", default="demo-data", show_default=True, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(workdir, quiet) -> None:
    """Embed a small real image set (digits, photos); search it; train and use a digit classifier."""
    from lookalike.demo import demo_classifier, demo_neighbours, run_demo

    report, counts = run_demo(workdir, progress=not quiet)
    click.echo(
        f"wrote {counts['digits']} digit images and {counts['photos']} photos under {workdir / 'images'}"
    )
    click.echo(report.summary())
    results, sheet = demo_neighbours(workdir)
    for query, hits in results:
        click.echo(f"nearest to {query}:")
        for hit in hits:
            click.echo(f"  {hit.distance:.3f}  {hit.label or '-':<4} {hit.path}")
    click.echo(f"contact sheet of those neighbours: {sheet}")
    trained, predictions = demo_classifier(workdir)
    scores = trained.evaluation
    click.echo(
        f"classifier 'digits' ({trained.card['model']}) trained from the cached features in "
        f"{trained.card['fit_seconds']:.2f} s: {scores.method} accuracy {scores.accuracy:.3f}, "
        f"macro-F1 {scores.macro_f1:.3f}; confusion matrix: {trained.path / 'confusion.png'}"
    )
    for prediction in predictions:
        confidence = prediction.probabilities[prediction.label]
        click.echo(
            f"held-out {Path(prediction.source).name}: predicted {prediction.label} "
            f"(p={confidence:.3f}); nearest labels "
            f"{', '.join(hit.label or '-' for hit in prediction.neighbours)}"
        )
    click.echo(f"inspect it with: lookalike info --collection {report.collection}")


@main.group()
def index() -> None:
    """Build, update, evaluate and describe a collection's FAISS index."""


@index.command("build")
@COLLECTION
@LAYER
@click.option(
    "--factory", help="A FAISS factory string instead of the automatic choice, e.g. HNSW32,Flat."
)
@click.option(
    "--target-recall", default=0.95, show_default=True, help="Tune search to this recall@k."
)
@click.option("--k", default=10, show_default=True, help="The k of the recall target.")
@click.option("--memory-budget", default=8.0, show_default=True, help="GiB the index may use.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index_build(collection_dir, layer, factory, target_recall, k, memory_budget, quiet) -> None:
    """Choose, train, fill and tune an index over the collection, and save it."""
    from lookalike.collection import Collection
    from lookalike.index import build_index

    built = build_index(
        Collection.open(collection_dir),
        layer,
        factory=factory,
        target_recall=target_recall,
        k=k,
        memory_budget=int(memory_budget * 2**30),
        progress=not quiet,
    )
    meta = built.meta
    click.echo(
        f"built {meta.factory} over {len(built)} vectors of width {meta.dim} ({meta.metric})"
    )
    click.echo(f"why: {meta.reason}")
    click.echo(
        f"tuned {built.param_text()}: recall@{meta.recall_k} {meta.recall:.3f} (target {target_recall})"
    )


@index.command("update")
@COLLECTION
@LAYER
def index_update(collection_dir, layer) -> None:
    """Add items embedded since the index was built; drop items the collection no longer has."""
    from lookalike.collection import Collection
    from lookalike.index import update_index

    report = update_index(Collection.open(collection_dir), layer)
    click.echo(f"added {report.added}, removed {report.removed}; the index holds {report.total}")


@index.command("eval")
@COLLECTION
@LAYER
@click.option("--k", default=10, show_default=True)
@click.option("--queries", default=1000, show_default=True, help="Stored vectors used as queries.")
def index_eval(collection_dir, layer, k, queries) -> None:
    """Recall@k against exact search and the QPS of both, measured in this run."""
    from lookalike.index import Searcher, evaluate_index

    searcher = Searcher.open(collection_dir, layer)
    click.echo(
        evaluate_index(searcher.collection, searcher.index, searcher.layer, k, queries).summary()
    )


@index.command("info")
@COLLECTION
@LAYER
def index_info(collection_dir, layer) -> None:
    """Describe the index: type, metric, tuning, size, and whether it matches the collection."""
    from lookalike.collection import Collection
    from lookalike.index import index_dir, load_index
    from lookalike.index.maintain import check_items, check_spec

    collection = Collection.open(collection_dir)
    layer = layer or collection.spec.layers[0]
    built = load_index(index_dir(collection.path, layer), read_only=True)
    meta = built.meta
    click.echo(f"index        {meta.factory} ({meta.metric}, width {meta.dim}), built {meta.built}")
    click.echo(f"vectors      {len(built)} live, {built.deleted} deleted (masked until a rebuild)")
    click.echo(f"tuning       {built.param_text()}: recall@{meta.recall_k} {meta.recall}")
    try:
        check_spec(built, collection)
        check_items(built, collection)
        click.echo("collection   in agreement")
    except LookalikeError as error:
        click.echo(f"collection   DISAGREES: {error}")


def _filters(labels, path_prefix):
    from lookalike.index import Filters

    return Filters(tuple(labels), path_prefix)


@main.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@COLLECTION
@LAYER
@click.option("--id", "ids", multiple=True, type=int, help="Query by stored item id. Repeatable.")
@click.option("-k", "--k", default=10, show_default=True, help="Neighbours per query.")
@click.option(
    "--threshold",
    type=float,
    help="Only neighbours within this distance (cosine distance on normalised embeddings).",
)
@click.option("--label", "labels", multiple=True, help="Only items with this label. Repeatable.")
@click.option("--path-prefix", help="Only items whose path starts with this.")
@click.option("--sheet", type=click.Path(path_type=Path), help="Write a contact sheet PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def search(
    images, collection_dir, layer, ids, k, threshold, labels, path_prefix, sheet, as_json
) -> None:
    """Find the items most like IMAGES (files) and/or stored items (--id)."""
    import json

    from lookalike.index import Searcher
    from lookalike.sheet import contact_sheet

    if not images and not ids:
        raise click.UsageError("give image files and/or --id")
    searcher = Searcher.open(collection_dir, layer)
    options = {"threshold": threshold, "filters": _filters(labels, path_prefix)}
    queries: list[tuple[str, str | None]] = []
    results = []
    if images:
        results += searcher.search_images(images, k, **options)
        queries += [(str(p), str(p)) for p in images]
    if ids:
        results += searcher.search_ids(ids, k, **options)
        queries += [(f"id {i}", searcher.item(i)["path"]) for i in ids]
    for (name, _), hits in zip(queries, results, strict=True):
        if as_json:
            click.echo(json.dumps({"query": name, "hits": [h.to_dict() for h in hits]}))
            continue
        click.echo(f"query {name}: {len(hits)} neighbours")
        click.echo(f"  {'rank':>4}  {'id':>8}  {'distance':>8}  {'label':<12}  path")
        for rank, hit in enumerate(hits, 1):
            click.echo(
                f"  {rank:>4}  {hit.id:>8}  {hit.distance:>8.4f}  {hit.label or '-'!s:<12}  {hit.path}"
            )
    if sheet:
        rows = [
            [
                (path, "query"),
                *[(h.path, f"#{h.id} d={h.distance:.3f}\n{h.label or ''}") for h in hits],
            ]
            for (_, path), hits in zip(queries, results, strict=True)
        ]
        click.echo(f"contact sheet: {contact_sheet(rows, sheet)}")


@main.command()
@COLLECTION
@LAYER
@click.option(
    "--threshold", type=float, required=True, help="Pairs closer than this distance are duplicates."
)
@click.option("--out", type=click.Path(path_type=Path), help="Write clusters as .csv or .parquet.")
@click.option(
    "--sheet", type=click.Path(path_type=Path), help="Contact sheet PNG of the largest clusters."
)
@click.option("--show", default=10, show_default=True, help="Clusters to print / draw.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def dedup(collection_dir, layer, threshold, out, sheet, show, quiet) -> None:
    """Find every pair of near-duplicate items and group them into clusters."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from lookalike.index import Searcher, find_duplicates
    from lookalike.sheet import contact_sheet

    searcher = Searcher.open(collection_dir, layer)
    found = find_duplicates(searcher, threshold, progress=not quiet)
    in_clusters = sum(len(c) for c in found.clusters)
    click.echo(
        f"{len(found.pairs)} pairs within {threshold}; {len(found.clusters)} clusters, {in_clusters} items"
    )
    for number, members in enumerate(found.clusters[:show]):
        click.echo(
            f"cluster {number} ({len(members)}): "
            + ", ".join(searcher.item(i)["path"] for i in members[:5])
        )
    if out:
        table = found.cluster_table(searcher)
        if out.suffix == ".parquet":
            pq.write_table(table, out)
        else:
            pacsv.write_csv(table, out)
        click.echo(f"clusters written to {out}")
    if sheet and found.clusters:
        rows = [
            [(searcher.item(i)["path"], f"#{i}") for i in members[:8]]
            for members in found.clusters[:show]
        ]
        click.echo(f"contact sheet: {contact_sheet(rows, sheet)}")


def _register_commands() -> None:
    from lookalike.cli_classify import classifiers, predict, probe, train
    from lookalike.cli_distill import distill
    from lookalike.cli_finetune import advise, finetune
    from lookalike.cli_serve import serve

    for command in (train, predict, probe, classifiers, serve, finetune, advise, distill):
        main.add_command(command)


_register_commands()
