"""The one writer of a collection: appends items and vectors as atomic shards, tombstones deletes,
records failures, and adopts shards staged elsewhere (a Ray task's); see
`lookalike.store.collection` for the layout."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.durable import (
    acquire_lock,
    append_durably,
    atomic_folder,
    commit_folder,
    disk_errors,
    remove_temporaries,
    replace_token,
)
from lookalike.errors import InvalidArgument, UnknownItem
from lookalike.store.layout import DELETED, FAILED, GENERATION, WRITE_LOCK
from lookalike.store.shards import ITEM_SCHEMA, Shard, as_ids, layer_filename, write_shard_files

log = logging.getLogger(__name__)


class CollectionWriter:
    """The one writer of a collection (an exclusive lock): appends items and vectors as shards."""

    def __init__(self, collection: Any, shard_size: int, wait: float = 0.0) -> None:
        # `collection`: the `Collection` written to (its module imports this one, not the reverse)
        self.collection = collection
        self.shard_size = shard_size
        self._lock = acquire_lock(collection.path / WRITE_LOCK, wait)
        remove_temporaries(collection.path / "shards")  # left by a writer that died mid-shard
        shards = collection.shards()
        self._next_shard = int(shards[-1].name) + 1 if shards else 1
        last = [int(collection._shard_ids(shard).max()) for shard in shards]  # deleted too:
        self._next_id = max(last) + 1 if last else 0  # ids are never reused
        self._rows: list[dict[str, Any]] = []
        self._vectors: dict[str, list[np.ndarray]] = {layer: [] for layer in collection.spec.layers}

    def add(self, rows: Sequence[dict[str, Any]], vectors: dict[str, np.ndarray]) -> np.ndarray:
        """Buffer rows and their vectors (one array per layer); returns the ids they get."""
        spec = self.collection.spec
        for layer in spec.layers:
            if vectors[layer].shape != (len(rows), spec.dims[layer]):
                raise InvalidArgument(
                    f"layer {layer!r}: got shape {vectors[layer].shape}, expected ({len(rows)}, {spec.dims[layer]})"
                )
        ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
        self._next_id += len(rows)
        self._rows.extend({**row, "id": int(i)} for row, i in zip(rows, ids, strict=True))
        for layer in spec.layers:
            self._vectors[layer].append(np.asarray(vectors[layer], dtype=np.float32))
        while len(self._rows) >= self.shard_size:
            self._write_shard(self.shard_size)
        return ids

    def flush(self) -> None:
        """Write everything buffered as shards of at most `shard_size` items, atomically."""
        while self._rows:
            self._write_shard(min(self.shard_size, len(self._rows)))

    def _write_shard(self, count: int) -> Shard:
        """Write the first `count` buffered rows as the next shard (visible only once complete)."""
        rows, self._rows = self._rows[:count], self._rows[count:]
        vectors = {}
        for layer, blocks in self._vectors.items():
            stacked = np.concatenate(blocks)
            vectors[layer] = stacked[:count]
            self._vectors[layer] = [stacked[count:]] if len(stacked) > count else []
        final = self.collection.path / "shards" / f"{self._next_shard:06d}"
        with atomic_folder(final) as tmp:
            write_shard_files(tmp, rows, vectors)
        replace_token(self.collection.path / GENERATION)  # readers: a shard came in
        log.info("wrote shard %s: %d items", final.name, count)
        self._next_shard += 1
        return Shard(final)

    def adopt(self, folder: Path, rows: Sequence[dict[str, Any]]) -> Shard | None:
        """Make `folder` the next shard: a complete, fsynced folder on this collection's file
        system holding one float32 .npy per layer whose rows are `rows`, in order (a Ray task's
        staged output). Ids are given here; the folder is moved in whole, never copied. Files
        other than the layers are dropped. An empty `rows` removes the folder; None then."""
        self.flush()
        if not rows:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self._check_staged(folder, len(rows))
        ids = np.arange(self._next_id, self._next_id + len(rows), dtype=np.int64)
        table = pa.Table.from_pylist(
            [{**row, "id": int(i)} for row, i in zip(rows, ids, strict=True)], schema=ITEM_SCHEMA
        )
        final = self.collection.path / "shards" / f"{self._next_shard:06d}"
        layers = {layer_filename(layer) for layer in self.collection.spec.layers}
        with disk_errors(final.parent):
            for extra in folder.iterdir():
                if extra.name not in layers:
                    extra.unlink()
            pq.write_table(table, folder / "items.parquet")
        commit_folder(folder, final)
        self._next_id += len(rows)
        self._next_shard += 1
        replace_token(self.collection.path / GENERATION)
        log.info("adopted %s as shard %s: %d items", folder.name, final.name, len(rows))
        return Shard(final)

    def _check_staged(self, folder: Path, count: int) -> None:
        spec = self.collection.spec
        for layer in spec.layers:
            try:
                block = np.load(folder / layer_filename(layer), mmap_mode="r")
            except (OSError, ValueError) as error:
                raise InvalidArgument(f"staged folder {folder}: layer {layer!r}: {error}") from None
            if block.shape != (count, spec.dims[layer]) or block.dtype != np.float32:
                raise InvalidArgument(
                    f"staged folder {folder}: layer {layer!r} is {block.dtype} {block.shape}, "
                    f"expected float32 ({count}, {spec.dims[layer]})"
                )

    def delete(self, ids: Sequence[int] | np.ndarray, missing_ok: bool = False) -> int:
        """Delete live items durably (tombstones, fsynced); how many. An unknown or deleted id
        raises `UnknownItem` before anything is written, unless `missing_ok` (then it is skipped)."""
        ids = np.unique(as_ids(ids))
        self.flush()
        _, known, _, _ = self.collection._locator()
        gone = ~np.isin(ids, known) | np.isin(ids, self.collection.deleted_ids())
        if gone.any() and not missing_ok:
            raise UnknownItem(
                f"no item with id {', '.join(map(str, ids[gone][:5].tolist()))} in {self.collection.path}"
            )
        ids = ids[~gone]
        if len(ids):
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            lines = "".join(json.dumps({"id": int(i), "time": now}) + "\n" for i in ids)
            append_durably(self.collection.path / DELETED, lines)
        return len(ids)

    def record_failure(self, failure: dict[str, Any]) -> None:
        """Append one failure line (path, reason, ...) durably."""
        line = json.dumps(
            {**failure, "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        )
        append_durably(self.collection.path / FAILED, line + "\n")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._lock.close()

    def __enter__(self) -> CollectionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
