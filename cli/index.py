"""`lookalike index ...`: build, update, evaluate and describe a collection's FAISS index; push it
to Milvus."""

from __future__ import annotations

import click

from lookalike.cli.options import COLLECTION, LAYER, STORE, FiniteRange
from lookalike.errors import LookalikeError


@click.group()
def index() -> None:
    """Build, update, evaluate and describe a collection's FAISS index; push it to Milvus."""


@index.command("build")
@COLLECTION
@LAYER
@click.option(
    "--factory", help="A FAISS factory string instead of the automatic choice, e.g. HNSW32,Flat."
)
@click.option(
    "--target-recall",
    default=0.95,
    show_default=True,
    type=FiniteRange(0, 1, min_open=True),
    help="Tune search to this recall@k.",
)
@click.option(
    "--k",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="The k of the recall target.",
)
@click.option(
    "--memory-budget",
    default=8.0,
    show_default=True,
    type=FiniteRange(min=0, min_open=True),
    help="GiB the index may use.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index_build(collection_dir, layer, factory, target_recall, k, memory_budget, quiet) -> None:
    """Choose, train, fill and tune an index over the collection, and save it."""
    from lookalike.index import build_index
    from lookalike.store.collection import Collection

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
    from lookalike.index import update_index
    from lookalike.store.collection import Collection

    report = update_index(Collection.open(collection_dir), layer)
    click.echo(f"added {report.added}, removed {report.removed}; the index holds {report.total}")


@index.command("eval")
@COLLECTION
@LAYER
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--queries",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Stored vectors used as queries.",
)
@STORE
def index_eval(collection_dir, layer, k, queries, store) -> None:
    """Recall@k against exact search and the QPS of both, measured in this run."""
    from lookalike.index import Searcher, evaluate_index

    searcher = Searcher.open(collection_dir, layer, store=store)
    click.echo(
        evaluate_index(
            searcher.collection, searcher.vector_store, searcher.layer, k, queries
        ).summary()
    )


@index.command("push")
@COLLECTION
@LAYER
@click.option(
    "--to",
    "uri",
    required=True,
    help="The Milvus collection: milvus://HOST:PORT/NAME, or PATH.db/NAME (Milvus Lite).",
)
@click.option(
    "--target-recall",
    default=0.95,
    show_default=True,
    type=FiniteRange(0, 1, min_open=True),
    help="Tune Milvus's search parameter to this recall@k.",
)
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index_push(collection_dir, layer, uri, target_recall, k, quiet) -> None:
    """Copy the collection's vectors, labels and paths into Milvus (resumable: ids already
    there are skipped, ids the collection no longer has are removed), then tune its index."""
    from lookalike.index.milvus_sync import push
    from lookalike.store.collection import Collection

    report = push(
        Collection.open(collection_dir),
        uri,
        layer,
        target_recall=target_recall,
        k=k,
        progress=not quiet,
    )
    click.echo(
        f"pushed: added {report.added}, removed {report.removed}; Milvus holds {report.total}"
    )
    recall = "exact" if report.recall is None else f"recall@{k} {report.recall:.3f}"
    click.echo(f"index {report.index} ({report.params}): {recall}")


@index.command("info")
@COLLECTION
@LAYER
def index_info(collection_dir, layer) -> None:
    """Describe the index: type, metric, tuning, size, and whether it matches the collection."""
    from lookalike.index import index_dir, load_index
    from lookalike.index.maintain import check_items, check_spec
    from lookalike.store.collection import Collection

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
