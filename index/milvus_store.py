"""The vector store in Milvus: one Milvus collection per lookalike collection layer, shared by
every process (server replicas, pushes) that points at it.

Each row holds the item id (primary key), its vector, and `label` and `path` as scalar fields for
filters. The collection records the embedder spec and the layer it was filled from (checked on
connect, as for a FAISS index), and its tuned search parameter. Metric: inner product on
normalised embeddings (cosine; not Milvus's COSINE, which would also normalise the query and so
move thresholds away from FAISS's), L2 otherwise (Milvus answers squared L2, as FAISS does). Searches run at Strong consistency: a write acknowledged by one process is seen by the
next search of any other. Milvus Lite (`python -m milvus_lite server`) speaks the same protocol.

Labels and paths are cut by one rule (`fit`) on every way in (push, reconcile, live writes) and in
filters. A collection records its state: "filling" while a push copies into it, "complete" once in
step; readers refuse a filling one. A call that finds Milvus restarted (the collection released)
or the connection lost waits, reloads the collection and retries once (`MilvusStore._call`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from lookalike.embedder.sources import MAX_LABEL_LENGTH
from lookalike.errors import CollectionError, InvalidArgument, SpecMismatch, VectorStoreUnavailable
from lookalike.store.collection import Collection

from .metric import metric_for
from .vector_index import MAX_K, check_vectors
from .vector_store import Filters, Results

log = logging.getLogger(__name__)

MILVUS_METRICS = {"ip": "IP", "l2": "L2"}
SPEC_KEY, LAYER_KEY, TUNING_KEY = "lookalike.spec", "lookalike.layer", "lookalike.tuning"
STATE_KEY, FILLING, COMPLETE = "lookalike.state", "filling", "complete"
# VARCHAR lengths, in UTF-8 bytes (Milvus counts bytes; Milvus Lite characters): any label ingest
# allows fits a new collection's field (at most 4 bytes a character); older collections hold 1024
MAX_LABEL_BYTES, MAX_PATH = 4 * MAX_LABEL_LENGTH, 4096
RETRY_WAIT = 0.5  # seconds before the one retry after a restart or a lost connection
RECOVERABLE = ("released", "not loaded", "connect", "unavailable")  # in Milvus's messages
T = TypeVar("T")
BATCH_BYTES = 16 * 2**20  # rows per insert kept under gRPC's 64 MiB message limit
ID_BATCH = 16_384  # Milvus's largest query/search limit
RESULTS_PER_CALL = 65_536  # queries x limit in one search call


@contextlib.contextmanager
def milvus_errors(where: str) -> Iterator[None]:
    """Milvus failures as `VectorStoreUnavailable` naming `where` (one line, no traceback)."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as error:
        raise VectorStoreUnavailable(f"Milvus at {where}: {error.message}") from None


def fit(text: str | None, limit: int) -> str | None:
    """`text` cut to at most `limit` UTF-8 bytes at a character boundary: the one rule for the
    text fields written to Milvus and the values filters compare them with."""
    if text is None or len(text) * 4 <= limit:
        return text
    return text.encode()[:limit].decode(errors="ignore")


def _recoverable(error: Exception) -> bool:
    """A failure a reload and a retry may cure: Milvus restarted (the collection released) or the
    connection dropped; not a refused request."""
    message = str(getattr(error, "message", error)).lower()
    return getattr(error, "code", None) in (2, 101) or any(w in message for w in RECOVERABLE)


class MilvusStore:
    """A Milvus collection behind the vector-store interface (see `vector_store.VectorStore`)."""

    shared = True

    def __init__(self, client: Any, name: str, collection: Collection, layer: str, where: str):
        self.client, self.name, self.where = client, name, where
        self.collection, self.layer = collection, layer
        self.metric = metric_for(collection.spec)
        self.dim = collection.spec.dims[layer]
        self.tuning: dict[str, Any] = {"index": "FLAT", "params": {}}
        self.label_limit = MAX_LABEL_BYTES  # the label field's own, read by `check`
        self.state = FILLING
        self._items: tuple[Any, dict[int, tuple[str, str | None]]] | None = None

    # ----- creating and checking ------------------------------------------------------------

    def create(self) -> None:
        """Create the Milvus collection (FLAT index), recording the spec and layer; it is
        "filling" until `mark(COMPLETE)`."""
        from pymilvus import DataType

        client = self.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_LABEL_BYTES, nullable=True)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH)
        properties = {
            SPEC_KEY: json.dumps(self.collection.spec.to_dict(), sort_keys=True),
            LAYER_KEY: self.layer,
            TUNING_KEY: json.dumps(self.tuning),
            STATE_KEY: FILLING,
        }
        with milvus_errors(self.where):
            client.create_collection(
                self.name,
                schema=schema,
                index_params=self._index_params("FLAT", {}),
                consistency_level="Strong",
                properties=properties,
            )

    def check(self) -> None:
        """Refuse a Milvus collection filled from another embedder spec, layer or width; read
        its tuning, state and label length."""
        description = self._call("describe_collection", self.name)
        properties = description.get("properties", {})
        recorded = json.loads(properties.get(SPEC_KEY, "{}"))
        layer = properties.get(LAYER_KEY)
        self.collection.spec.check_same(
            recorded,
            f"Milvus collection {self.name!r} at {self.where}",
            str(self.collection.path),
            "push into a new name",
        )
        if layer != self.layer:
            raise SpecMismatch(
                f"Milvus collection {self.name!r} holds layer {layer!r}, not {self.layer!r}"
            )
        self.tuning = json.loads(properties.get(TUNING_KEY, json.dumps(self.tuning)))
        self.state = properties.get(STATE_KEY, COMPLETE)  # older pushes recorded no state
        for field in description.get("fields", []):
            if field.get("name") == "label":
                self.label_limit = int(field.get("params", {}).get("max_length", MAX_LABEL_BYTES))
                break

    def check_complete(self) -> None:
        """Refuse a collection a push is filling or was cut off filling (partly copied)."""
        if self.state != COMPLETE:
            raise CollectionError(
                f"Milvus collection {self.name!r} at {self.where} is incomplete: a push into it "
                "is under way or was cut off; run `lookalike index push` again to complete it"
            )

    def mark(self, state: str) -> None:
        """Record the collection's state for every process: FILLING or COMPLETE."""
        if state != self.state:
            self._call("alter_collection_properties", self.name, properties={STATE_KEY: state})
            self.state = state

    def set_index(self, index_type: str, build: dict[str, int], search: dict[str, int]) -> None:
        """Replace the vector index (e.g. HNSW with M/efConstruction) and the search parameters
        every process uses from now on (recorded in the collection)."""
        self._call("release_collection", self.name)
        self._call("drop_index", self.name, "vector")
        self._call("create_index", self.name, self._index_params(index_type, build))
        self._call("load_collection", self.name)
        self.set_search_params(index_type, search)

    def set_search_params(self, index_type: str, search: dict[str, int]) -> None:
        self.tuning = {"index": index_type, "params": dict(search)}
        properties = {TUNING_KEY: json.dumps(self.tuning)}
        self._call("alter_collection_properties", self.name, properties=properties)

    def _index_params(self, index_type: str, build: dict[str, int]) -> Any:
        params = self.client.prepare_index_params()
        metric = MILVUS_METRICS[self.metric]
        params.add_index("vector", index_type=index_type, metric_type=metric, params=build)
        return params

    # ----- calling Milvus ----------------------------------------------------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`client.<method>(...)`, retried once as `_retrying` says."""
        return self._retrying(lambda: getattr(self.client, method)(*args, **kwargs))

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call()`; where Milvus restarted (the collection released: every process must load it
        again) or the connection dropped, wait `RETRY_WAIT`, load the collection, retry once.
        Every call retried is idempotent (reads, upserts by id, deletes by id, properties).
        `VectorStoreUnavailable` (a 503 worth retrying) if it fails again."""
        from pymilvus.exceptions import MilvusException

        with milvus_errors(self.where):
            try:
                return call()
            except MilvusException as error:
                if not _recoverable(error):
                    raise
                log.warning("Milvus at %s: %s; reloading, then retrying", self.where, error.message)
            time.sleep(RETRY_WAIT)
            self.client.load_collection(self.name)
            return call()

    def ping(self) -> None:
        """Raise `VectorStoreUnavailable` unless Milvus answers with the collection loaded; one
        Milvus released (after a restart) is loaded again. Cheap: for readiness probes."""
        from pymilvus.client.types import LoadState

        if self._call("get_load_state", self.name)["state"] != LoadState.Loaded:
            self._call("load_collection", self.name)

    # ----- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        rows = self._call("query", self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        """Every id in the store, sorted (read in pages)."""
        return self._retrying(self._read_ids)

    def _read_ids(self) -> np.ndarray:
        found: list[int] = []
        pages = self.client.query_iterator(self.name, batch_size=ID_BATCH, output_fields=["id"])
        while page := pages.next():
            found.extend(row["id"] for row in page)
        pages.close()
        return np.sort(np.asarray(found, dtype=np.int64))

    def has(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        present: set[int] = set()
        for start in range(0, len(ids), ID_BATCH):
            block = ids[start : start + ID_BATCH].tolist()
            rows = self._call("get", self.name, ids=block, output_fields=["id"])
            present.update(row["id"] for row in rows)
        return np.isin(ids, np.fromiter(present, np.int64, len(present)))

    def describe(self) -> tuple[str, str]:
        params = self.tuning.get("params", {})
        text = ", ".join(f"{key}={value}" for key, value in params.items()) or "-"
        return f"Milvus {self.tuning.get('index', 'FLAT')}", text

    # ----- writing ----------------------------------------------------------------------------

    def add(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None:
        """Add vectors under new ids; an id already stored is refused (use `upsert`)."""
        ids, xb = self._check_rows(ids, xb)
        taken = ids[self.has(ids)]
        if len(taken):
            raise InvalidArgument(f"ids already indexed: {taken[:5].tolist()} (use upsert)")
        self._write(ids, xb, fields)

    def upsert(self, ids, xb: np.ndarray, fields: Mapping[str, Sequence] | None = None) -> None:
        """Replace the rows of ids already stored, add the others (idempotent: resumable)."""
        self._write(*self._check_rows(ids, xb), fields)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete the ids' rows; returns how many were stored."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        held = int(self.has(ids).sum())
        for start in range(0, len(ids), ID_BATCH):
            self._call("delete", self.name, ids=ids[start : start + ID_BATCH].tolist())
        return held

    def _write(self, ids: np.ndarray, xb: np.ndarray, fields: Mapping[str, Sequence] | None):
        labels, paths = self._fields(ids, fields)
        rows_per_batch = max(1, BATCH_BYTES // (4 * self.dim + 512))
        for start in range(0, len(ids), rows_per_batch):
            stop = start + rows_per_batch
            rows = [
                {"id": int(i), "vector": v, "label": fit(label, self.label_limit),
                 "path": fit(path, MAX_PATH)}
                for i, v, label, path in zip(
                    ids[start:stop], xb[start:stop].tolist(), labels[start:stop],
                    paths[start:stop], strict=True,
                )
            ]  # fmt: skip
            self._call("upsert", self.name, rows)

    def _fields(self, ids: np.ndarray, fields: Mapping[str, Sequence] | None):
        """Labels and paths per id: given, or read from the collection's item table."""
        if fields is None:
            known = self._known_items()
            pairs = [known.get(int(i), ("", None)) for i in ids]
            return [p[1] for p in pairs], [p[0] for p in pairs]
        labels, paths = list(fields.get("label", [None] * len(ids))), list(fields["path"])
        if len(labels) != len(ids) or len(paths) != len(ids):
            raise InvalidArgument(f"fields for {len(paths)} rows, {len(ids)} ids")
        return [None if label is None else str(label) for label in labels], paths

    def _known_items(self) -> dict[int, tuple[str, str | None]]:
        """id -> (path, label) of every item, deleted ones too; read again when items change."""
        generation = self.collection.generation()
        if self._items is None or self._items[0] != generation:
            table = self.collection.items(["id", "path", "label"], include_deleted=True)
            rows = zip(table["path"].to_pylist(), table["label"].to_pylist(), strict=True)
            self._items = (generation, dict(zip(table["id"].to_pylist(), rows, strict=True)))
        return self._items[1]

    def _check_rows(self, ids, xb) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        xb = check_vectors(xb, self.dim)
        if len(ids) != len(xb):
            raise InvalidArgument(f"{len(ids)} ids for {len(xb)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise InvalidArgument("duplicate ids in one call")
        return ids, xb

    # ----- searching --------------------------------------------------------------------------

    def search(
        self,
        xq: np.ndarray,
        k: int | None = 10,
        radius: float | None = None,
        filters: Filters | None = None,
    ) -> Results:
        """Top `k` and/or everything within `radius` (FAISS units: a range search), filtered by
        a Milvus expression. Without `k`, at most `MAX_K` results per query."""
        xq = check_vectors(xq, self.dim)
        if k is None and radius is None:
            raise InvalidArgument("give k, a radius, or both")
        if k is not None and not 0 < k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {k}")
        params = dict(self.tuning.get("params", {}))
        if radius is not None:
            params["radius"] = float(radius)
        limit = k or MAX_K
        per_call = max(1, RESULTS_PER_CALL // limit)  # bounded answers: range searches are large
        expression = filter_expression(filters, self.label_limit) if filters else ""
        results: Results = []
        for start in range(0, len(xq), per_call):
            answers = self._call(
                "search",
                self.name,
                data=xq[start : start + per_call].tolist(),
                limit=limit,
                filter=expression,
                search_params={"params": params},
                anns_field="vector",
                output_fields=["id"],
            )
            results.extend(_arrays(hits) for hits in answers)
        return results


def _arrays(hits: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.fromiter((hit["distance"] for hit in hits), np.float32, len(hits))
    ids = np.fromiter((hit["id"] for hit in hits), np.int64, len(hits))
    return scores, ids


def filter_expression(filters: Filters, label_limit: int = MAX_LABEL_BYTES) -> str:
    """A Milvus boolean expression keeping what `filters` keeps: labels by `in` (cut as stored:
    `fit`), the path prefix as a string range (``prefix <= path < next``: exact, with no LIKE
    wildcards to escape)."""
    parts = []
    if filters.labels:
        labels = (quoted(fit(label, label_limit) or "") for label in filters.labels)
        parts.append(f"label in [{', '.join(labels)}]")
    if filters.path_prefix:
        prefix = fit(filters.path_prefix, MAX_PATH) or ""
        parts.append(f"path >= {quoted(prefix)}")
        upper = prefix_end(prefix)
        if upper is not None:
            parts.append(f"path < {quoted(upper)}")
    return " and ".join(parts)


def quoted(text: str) -> str:
    """`text` as a double-quoted Milvus string literal."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(ch, ch) for ch in text) + '"'


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(chr(0x10FFFF))
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters
        following = 0xE000
    return stripped[:-1] + chr(following)
