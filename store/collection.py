"""The on-disk collection: manifest (embedder spec) + atomic shards (.npy per layer, parquet items).

Layout::

    DIR/manifest.json            embedder spec, its fingerprint, lookalike version, creation time
    DIR/shards/000001/items.parquet   id (int64), path, sha256, width, height, bytes, mtime_ns, label
    DIR/shards/000001/<layer>.npy     float32 (rows, dim), row i belongs to items row i
    DIR/failed.jsonl             one JSON line per file that could not be embedded
    DIR/deleted.jsonl            one JSON line per deleted item id (shards are never rewritten)
    DIR/.lock                    held (flock) by the one writer, for one commit
    DIR/.embed.lock              held (flock) by the one bulk embedding run, for the whole run
    DIR/.generation              a token replaced after each shard is renamed in
    DIR/staging/<task>/          a bulk task's shard before the run adopts it (lookalike.jobs.tasks)

A shard is written under ``shards/.tmp-*`` and renamed into place once every file in it is
complete and fsynced, so readers (and a run resumed after ``kill -9``) see whole shards only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lookalike import __version__
from lookalike.durable import read_records, write_atomic
from lookalike.embedder.spec import BackboneSpec
from lookalike.errors import CollectionError, UnknownItem, UnknownLayer
from lookalike.store.layout import (
    DELETED,
    EMBED_LOCK,
    FAILED,
    FORMAT_VERSION,
    GENERATION,
    MANIFEST,
    UPLOADS,
)
from lookalike.store.shards import ITEM_SCHEMA, SHARD_NAME, Shard, as_ids, merged_blocks
from lookalike.store.writer import CollectionWriter

# the layout's names and the writer stay importable from here, where they always were
__all__ = ["EMBED_LOCK", "MANIFEST", "UPLOADS", "Collection", "CollectionWriter", "Shard"]

log = logging.getLogger(__name__)


class Collection:
    """A collection directory. Create with `create`, open with `open` (or `open_or_create`)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.spec = BackboneSpec.from_dict(manifest["spec"])
        self._located: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None
        self._deleted: tuple[tuple[int, int], np.ndarray] | None = None
        self._tables: dict[str, pa.Table] = {}  # shard name -> its item table (shards never change)
        self._ids: dict[str, np.ndarray] = {}  # shard name -> its id column alone

    @classmethod
    def create(cls, path: str | Path, spec: BackboneSpec) -> Collection:
        path = Path(path)
        if (path / MANIFEST).exists():
            raise CollectionError(f"{path} already holds a collection")
        (path / "shards").mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT_VERSION,
            "lookalike_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "fingerprint": spec.fingerprint(),
            "spec": spec.to_dict(),
        }
        write_atomic(path / MANIFEST, json.dumps(manifest, indent=2).encode())
        return cls(path, manifest)

    @classmethod
    def open(cls, path: str | Path) -> Collection:
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise CollectionError(f"{path} is not a collection (no {MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CollectionError(f"{path / MANIFEST} is damaged: {error}") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise CollectionError(
                f"{path} has format {manifest.get('format')}, expected {FORMAT_VERSION}"
            )
        return cls(path, manifest)

    @classmethod
    def open_or_create(cls, path: str | Path, spec: BackboneSpec) -> Collection:
        """Open the collection at `path` (refusing another spec), or create it with `spec`."""
        if not (Path(path) / MANIFEST).exists():
            return cls.create(path, spec)
        collection = cls.open(path)
        collection.check_spec(spec)
        return collection

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).exists()

    def check_spec(self, spec: BackboneSpec) -> None:
        """Raise `SpecMismatch`, saying which fields differ, unless `spec` is this collection's."""
        spec.check_same(
            self.spec,
            f"collection {self.path}",
            "the one asked for",
            "embed into a new collection, or drop the conflicting options to reuse its spec",
        )

    def shards(self) -> list[Shard]:
        folder = self.path / "shards"
        names = [p.name for p in folder.iterdir()] if folder.exists() else []
        return [Shard(folder / name) for name in sorted(names) if SHARD_NAME.match(name)]

    def __len__(self) -> int:
        stored = sum(len(self._shard_ids(shard)) for shard in self.shards())
        return stored - len(self.deleted_ids())

    def ids(self) -> np.ndarray:
        """Every live item id, in order of writing, read from the shards' id columns alone."""
        parts = [self._shard_ids(shard) for shard in self.shards()]
        ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
        deleted = self.deleted_ids()
        return ids[~np.isin(ids, deleted)] if len(deleted) else ids

    def _shard_ids(self, shard: Shard) -> np.ndarray:
        """A shard's ids, read once and alone: counting, locating and indexing 2M items need
        16 MB of ids, not their whole item tables (paths, hashes: hundreds of MB)."""
        if shard.name not in self._ids:
            table = self._tables.get(shard.name)
            table = shard.items(["id"]) if table is None else table
            self._ids[shard.name] = table.column("id").to_numpy()
        return self._ids[shard.name]

    def _table(self, shard: Shard) -> pa.Table:
        """A shard's whole item table, read once per Collection object: a shard never changes
        once renamed into place, and a server writing one shard per upload would otherwise read
        every shard again on every write (an upload took 1.3 s at 400 shards)."""
        table = self._tables.get(shard.name)
        if table is None:
            table = self._tables[shard.name] = shard.items()
        return table

    def generation(self) -> tuple[str, int]:
        """A stamp that changes whenever items are added or deleted, by any process: the token a
        writer replaces after each shard it renames in, and the tombstone file's size. (The
        shards folder's mtime is not enough: a file system's clock ticks every few milliseconds,
        and two shards renamed in within one tick left it unchanged.)"""
        try:
            token = (self.path / GENERATION).read_text()
        except FileNotFoundError:
            token = ""
        try:
            deleted = (self.path / DELETED).stat().st_size
        except FileNotFoundError:
            deleted = 0
        return (token, deleted)

    def deleted_ids(self) -> np.ndarray:
        """Sorted ids of deleted items (tombstones in ``deleted.jsonl``; shards are immutable)."""
        path = self.path / DELETED
        try:
            stat = path.stat()
        except FileNotFoundError:
            return np.empty(0, np.int64)
        key = (stat.st_size, stat.st_mtime_ns)
        cached = self._deleted  # read once: another thread may replace it
        if cached is not None and cached[0] == key:
            return cached[1]
        ids = [r["id"] for r in read_records(path) if type(r.get("id")) is int]
        deleted = np.unique(np.asarray(ids, np.int64))
        self._deleted = (key, deleted)
        return deleted

    def items(
        self, columns: Sequence[str] | None = None, include_deleted: bool = False
    ) -> pa.Table:
        """Every live item row (optionally some columns only), in id order of writing."""
        deleted = np.empty(0, np.int64) if include_deleted else self.deleted_ids()
        wanted = None if columns is None else list(columns)
        if len(deleted) and wanted is not None and "id" not in wanted:
            wanted = [*wanted, "id"]
        tables = [
            self._table(shard).select(wanted) if wanted else self._table(shard)
            for shard in self.shards()
        ]
        if not tables:
            schema = (
                ITEM_SCHEMA
                if columns is None
                else pa.schema([ITEM_SCHEMA.field(c) for c in columns])
            )
            return schema.empty_table()
        table = pa.concat_tables(tables)
        if len(deleted):
            table = table.filter(pc.invert(pc.is_in(table["id"], pa.array(deleted))))
            if columns is not None:
                table = table.select(list(columns))
        return table

    def iter_embeddings(
        self,
        layer: str | None = None,
        block_rows: int | None = None,
        *,
        shards: Sequence[Shard] | None = None,
        deleted: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, xb) shard by shard, memory-mapped: bounded memory for any collection size. With
        `block_rows`, blocks of about that many rows in memory: a larger shard is read in slices,
        smaller consecutive shards are copied together (fewer, larger FAISS calls in a known
        amount of memory). `shards` and `deleted` (from `shards()` and `deleted_ids()`) pin the
        collection as it stood then: passes read again see the same items, whatever was written
        meanwhile."""
        blocks = self._iter_shards(layer or self.spec.layers[0], block_rows, shards, deleted)
        return blocks if block_rows is None else merged_blocks(blocks, block_rows)

    def _iter_shards(
        self,
        layer: str,
        rows: int | None = None,
        shards: Sequence[Shard] | None = None,
        deleted: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, xb) per shard (memory-mapped), or per slice of at most `rows` rows of a larger
        shard (read into memory: the pages of a map held for the whole shard would all stay
        resident until its end)."""
        self.check_layer(layer)
        deleted = self.deleted_ids() if deleted is None else deleted
        for shard in self.shards() if shards is None else shards:
            shard_ids = self._shard_ids(shard)
            sliced = rows is not None and len(shard_ids) > rows
            step = rows if sliced else max(len(shard_ids), 1)
            for start in range(0, max(len(shard_ids), 1), step):
                ids = shard_ids[start : start + step]
                if sliced:
                    vectors = shard.rows(layer, start, start + step)
                else:
                    vectors = shard.embeddings(layer)
                if len(deleted):
                    keep = ~np.isin(ids, deleted)
                    if not keep.all():
                        ids, vectors = ids[keep], vectors[keep]
                yield ids, vectors

    def embeddings(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, xb) of the whole collection in memory."""
        layer = layer or self.spec.layers[0]
        blocks = list(self.iter_embeddings(layer))
        if not blocks:
            return np.empty(0, np.int64), np.empty((0, self.spec.dims[layer]), np.float32)
        return (
            np.concatenate([ids for ids, _ in blocks]),
            np.concatenate([np.asarray(xb) for _, xb in blocks]),
        )

    def vectors(
        self, ids: Sequence[int] | np.ndarray, layer: str | None = None, deleted_ok: bool = False
    ) -> np.ndarray:
        """The stored vectors of `ids`, in order; `UnknownItem` for an unknown or deleted id."""
        layer = layer or self.spec.layers[0]
        self.check_layer(layer)
        ids = as_ids(ids)
        shards, sorted_ids, shard_of, row_of = self._locator()
        where = np.searchsorted(sorted_ids, ids)
        found = (where < len(sorted_ids)) & (
            sorted_ids[np.minimum(where, len(sorted_ids) - 1)] == ids
        )
        if not deleted_ok:
            found &= ~np.isin(ids, self.deleted_ids())
        if not found.all():
            missing = ids[~found][:5].tolist()
            raise UnknownItem(f"no item with id {', '.join(map(str, missing))} in {self.path}")
        out = np.empty((len(ids), self.spec.dims[layer]), np.float32)
        for shard_no in np.unique(shard_of[where]):
            pick = shard_of[where] == shard_no
            out[pick] = shards[shard_no].embeddings(layer)[row_of[where[pick]]]
        return out

    def _locator(self) -> tuple[list[Shard], np.ndarray, np.ndarray, np.ndarray]:
        """Sorted ids with the shard and row of each; rebuilt when shards were added."""
        shards = self.shards()
        names = [s.name for s in shards]
        located = self._located  # read once: another thread may replace it
        if located is None or located[0] != names:
            ids, shard_of, row_of = [], [], []
            for number, shard in enumerate(shards):
                shard_ids = self._shard_ids(shard)
                ids.append(shard_ids)
                shard_of.append(np.full(len(shard_ids), number, np.int32))
                row_of.append(np.arange(len(shard_ids)))
            ids_all = np.concatenate(ids) if ids else np.empty(0, np.int64)
            order = np.argsort(ids_all, kind="stable")
            located = (
                names,
                ids_all[order],
                np.concatenate(shard_of)[order] if ids else np.empty(0, np.int32),
                np.concatenate(row_of)[order] if ids else np.empty(0, np.int64),
            )
            self._located = located
        return shards, *located[1:]

    def check_layer(self, layer: str) -> None:
        """`UnknownLayer`, naming the collection's layers, unless it holds `layer`."""
        if layer not in self.spec.layers:
            raise UnknownLayer(
                f"layer {layer!r} is not in this collection; it has {list(self.spec.layers)}"
            )

    def failures(self) -> list[dict[str, Any]]:
        """The latest failure record per path, for paths that have not been embedded since."""
        latest = {r["path"]: r for r in read_records(self.path / FAILED) if "path" in r}
        embedded = set(self.items(["path"]).column("path").to_pylist())
        return [r for p, r in latest.items() if p not in embedded]

    def writer(self, shard_size: int = 1024, wait: float = 0.0) -> CollectionWriter:
        """The collection's one writer; waits up to `wait` seconds for another process's."""
        return CollectionWriter(self, shard_size, wait)
