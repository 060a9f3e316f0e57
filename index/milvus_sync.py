"""Milvus as a collection's vector store: where it is (a URI), push (copy, resumable), the index
type and its search parameter tuned to a recall target, and reconcile (for a server's start).

Store URIs: ``milvus://HOST:PORT/NAME`` (a Milvus server: standalone, distributed, or
``python -m milvus_lite server``), or ``PATH.db/NAME`` (a Milvus Lite file, one process at a time).
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from lookalike.durable import acquire_lock
from lookalike.errors import CollectionError, InvalidArgument, VectorStoreUnavailable
from lookalike.store.collection import Collection
from lookalike.store.layout import WRITE_LOCK

from .choose import FLAT_MAX_VALUES, IndexPlan
from .knn import held_out_truth
from .maintain import sync_index
from .milvus_store import COMPLETE, FILLING, MilvusStore, milvus_errors
from .tuning import nprobe_grid, query_rows, tune_parameter
from .vector_store import padded

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class StoreAddress:
    """A parsed store URI: what `MilvusClient` connects to, and the Milvus collection's name."""

    client_uri: str
    name: str
    shown: str  # for messages: the server or file, never credentials

    @classmethod
    def parse(cls, uri: str, default_name: str | None = None) -> StoreAddress:
        """``milvus://HOST:PORT[/NAME]`` or ``PATH.db[/NAME]``; NAME defaults to `default_name`."""
        if uri.startswith("milvus://"):
            parts = urlsplit(uri)
            if not parts.hostname or parts.port is None:
                raise InvalidArgument(f"a Milvus store is milvus://HOST:PORT/NAME, got {uri!r}")
            client_uri, shown = (
                f"http://{parts.hostname}:{parts.port}",
                f"{parts.hostname}:{parts.port}",
            )
            name = parts.path.strip("/")
        elif ".db" in uri:
            path, _, name = uri.partition(".db")
            client_uri = shown = str(Path(path + ".db").expanduser().resolve())
            name = name.strip("/")
        else:
            raise InvalidArgument(
                f"unknown vector store {uri!r}: give milvus://HOST:PORT/NAME or PATH.db/NAME"
            )
        name = name or default_name or ""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidArgument(
                f"a Milvus collection name is letters, digits and underscores, not starting with "
                f"a digit; got {name!r} (give it as the URI's last part: .../NAME)"
            )
        return cls(client_uri, name, shown)


def check_store_uri(uri: str, served: list[str]) -> None:
    """Refuse a store URI that is malformed, or that names one Milvus collection for several
    served collections (they would overwrite each other's ids)."""
    names = {StoreAddress.parse(uri, name).name for name in served or ["store"]}
    if len(names) < len(served):
        raise InvalidArgument(
            f"store {uri!r} names one Milvus collection for {len(served)} collections; give "
            "milvus://HOST:PORT (each goes to the Milvus collection of its served name)"
        )


def check_reachable(uri: str, workers: int = 1, timeout: float = 5.0) -> None:
    """Refuse, before any process forks, a Milvus server that does not accept connections (a
    plain TCP connect: no gRPC channel in a process about to fork), or a Milvus Lite file for
    more than one worker (one process at a time may open it)."""
    address = StoreAddress.parse(uri, "unchecked")
    if not uri.startswith("milvus://"):
        if workers > 1:
            raise InvalidArgument(
                f"a Milvus Lite file ({address.shown}) serves one worker; run "
                "`python -m milvus_lite server` and give milvus://HOST:PORT for more"
            )
        return
    host, port = urlsplit(uri).hostname, urlsplit(uri).port
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise VectorStoreUnavailable(
            f"Milvus at {address.shown} is not reachable: {error}"
        ) from None


def open_milvus(
    uri: str,
    collection: Collection,
    layer: str | None = None,
    create: bool = False,
    default_name: str | None = None,
) -> MilvusStore:
    """The Milvus store at `uri` for `layer` of `collection`, its spec checked; created (empty,
    "filling") if missing and `create`, else `CollectionError`. Without `create` (a reader), one
    a push is filling or left incomplete is refused (`CollectionError`)."""
    address = StoreAddress.parse(uri, default_name)
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise InvalidArgument(
            "a Milvus store needs pymilvus: pip install 'lookalike[milvus]'"
        ) from None
    layer = layer or collection.spec.layers[0]
    collection.check_layer(layer)
    # pymilvus installs its own stderr handler on import and logs each failed call with its
    # traceback; the failure reaches the caller anyway, as one `VectorStoreUnavailable` line
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    with milvus_errors(address.shown):
        client = MilvusClient(uri=address.client_uri, timeout=CONNECT_TIMEOUT)
        exists = client.has_collection(address.name)
        if exists:
            client.load_collection(address.name)  # a reopened Milvus Lite file starts released
    store = MilvusStore(client, address.name, collection, layer, address.shown)
    if exists:
        store.check()
        if not create:
            store.check_complete()
    elif create:
        store.create()
    else:
        raise CollectionError(
            f"no Milvus collection {address.name!r} at {address.shown}; copy the collection "
            "there first with `lookalike index push`"
        )
    return store


@dataclass
class PushReport:
    added: int
    removed: int
    total: int
    index: str
    params: str
    recall: float | None


def push(
    collection: Collection,
    uri: str,
    layer: str | None = None,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    progress: bool = True,
) -> PushReport:
    """Copy the collection's vectors (with labels and paths) into Milvus in batches, skipping ids
    already there (so a cut-off push resumes) and removing ids the collection no longer has;
    then choose and tune the Milvus index to `target_recall`@`k`. The Milvus collection is
    marked "filling" meanwhile (readers refuse it) and "complete" once every vector is in."""
    if not 0 < target_recall <= 1:
        raise InvalidArgument(f"target recall must be in (0, 1], got {target_recall}")
    store = open_milvus(uri, collection, layer, create=True)
    store.mark(FILLING)
    added, removed = sync_index(store, collection, store.layer, progress=progress)
    store.mark(COMPLETE)
    recall = tune_milvus(store, target_recall, k)
    index, params = store.describe()
    return PushReport(added, removed, len(store), index, params, recall)


def reconcile(store: MilvusStore, wait: float = 30.0) -> tuple[int, int]:
    """Bring Milvus in step with the collection (ids missing on either side): (added, removed).
    Under the collection's write lock, so no write of another replica falls between the two
    reads (an id written to disk but not yet to Milvus is added; nothing acknowledged dropped).
    Then it is complete (a push cut off before is completed so)."""
    with acquire_lock(store.collection.path / WRITE_LOCK, wait):
        added_removed = sync_index(store, store.collection, store.layer)
    store.mark(COMPLETE)
    return added_removed


def tune_milvus(
    store: MilvusStore,
    target_recall: float = 0.95,
    k: int = 10,
    flat_max_values: int = FLAT_MAX_VALUES,
) -> float | None:
    """FLAT where exact search is cheap (n x d <= `flat_max_values`: FAISS's own rule), else
    IVF_FLAT with `nprobe` tuned to `target_recall`@k on held-out stored vectors, measured as
    `index build` measures FAISS; None for FLAT (exact)."""
    n = len(store)
    if n * store.dim <= flat_max_values or n < 2:
        if store.tuning.get("index") != "FLAT":
            store.set_index("FLAT", {}, {})
        return None
    nlist = IndexPlan.nlist_for(n)
    store.set_index("IVF_FLAT", {"nlist": nlist}, {"nprobe": 1})
    queries, own = _tuning_queries(store.collection, store.layer)
    truth = held_out_truth(
        store.collection.iter_embeddings(store.layer), queries, own, k, store.metric
    )

    def search_with(nprobe: int, xq: np.ndarray, n: int) -> np.ndarray:
        store.tuning = {"index": "IVF_FLAT", "params": {"nprobe": nprobe}}
        return padded(store.search(xq, n), n, store.metric)[1]

    # IVF_FLAT keeps raw vectors (exact at nprobe = nlist): no plateau stops it short
    nprobe, recall = tune_parameter(
        search_with, nprobe_grid(nlist), queries, own, truth, target_recall, k, plateau=None
    )
    store.tuning = {"index": "IVF_FLAT", "params": {"nprobe": nprobe}}
    store.set_search_params("IVF_FLAT", store.tuning["params"])
    log.info("Milvus IVF_FLAT nlist=%d %s: recall@%d %.3f", nlist, store.tuning, k, recall)
    return recall


def _tuning_queries(collection: Collection, layer: str) -> tuple[np.ndarray, np.ndarray]:
    ids = collection.ids()
    chosen = np.sort(ids[query_rows(len(ids))])
    return collection.vectors(chosen, layer), chosen
