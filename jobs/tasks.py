"""A bulk run as tasks, each committed exactly once.

The sources to embed are cut into tasks of `size` consecutive sources; a task's key is a hash of
the spec and of its sources, so the same work gets the same key in every run. A task (on any
worker, any number of times) writes its output to ``DIR/staging/<key>/``: the vectors of each
layer (.npy), its item rows and its failures, written under a temporary name and renamed into
place whole. The run's driver alone adopts a staged task into the collection (the folder becomes
a shard; `CollectionWriter.adopt`), once per key: a retried task or a late duplicate is dropped,
and a run killed after a task was staged adopts it on its rerun without embedding it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.durable import atomic_folder, disk_errors
from lookalike.embedder.sources import ImageSource
from lookalike.errors import StorageFull, StorageReadOnly
from lookalike.store.collection import Collection
from lookalike.store.shards import ITEM_SCHEMA, layer_filename

STAGING = "staging"
ROWS = "rows.parquet"  # the item rows, without ids (given when the task is adopted)
FAILURES = "failures.json"
ROW_SCHEMA = pa.schema([f for f in ITEM_SCHEMA if f.name != "id"])


@dataclass(frozen=True)
class Task:
    """A slice of a run's sources, named by what it holds."""

    key: str
    sources: tuple[ImageSource, ...]

    def to_row(self) -> dict[str, Any]:
        """The task as one row of a Ray dataset: its key and its sources as JSON."""
        sources = [[str(s.path), s.label, _within(s)] for s in self.sources]
        return {"key": self.key, "sources": json.dumps(sources)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        sources = tuple(
            ImageSource(_path(path), label, tuple(map(Path, within)) if within else None)
            for path, label, within in json.loads(row["sources"])
        )
        return cls(str(row["key"]), sources)


def _within(source: ImageSource) -> list[str] | None:
    return [str(p) for p in source.within] if source.within else None


def _path(path: str) -> Path | str:
    return path if "://" in path else Path(path)


def plan_tasks(todo: Sequence[ImageSource], fingerprint: str, size: int) -> list[Task]:
    """`todo` cut into tasks of `size` sources, in order."""
    tasks = []
    for start in range(0, len(todo), size):
        chunk = tuple(todo[start : start + size])
        digest = hashlib.sha256(fingerprint.encode())
        for source in chunk:
            digest.update(json.dumps([str(source.path), source.label, _within(source)]).encode())
        tasks.append(Task(digest.hexdigest()[:32], chunk))
    return tasks


@dataclass
class StagedTask:
    """A task's output as staged: where, its item rows (no ids yet) and its failures."""

    folder: Path
    rows: list[dict[str, Any]]
    failures: list[dict[str, Any]]


def staging_dir(collection: Collection | Path) -> Path:
    return Path(getattr(collection, "path", collection)) / STAGING


def stage_task(
    staging: Path,
    key: str,
    rows: list[dict[str, Any]],
    vectors: dict[str, np.ndarray],
    failures: list[dict[str, Any]],
) -> Path:
    """Write a task's output to ``staging/<key>`` atomically; an attempt that finds the key
    already staged leaves that copy (the same work) in place."""
    final = staging / key
    with disk_errors(staging):
        staging.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(final) as temporary:
            pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), temporary / ROWS)
            for layer, block in vectors.items():
                np.save(temporary / layer_filename(layer), np.asarray(block, np.float32))
            (temporary / FAILURES).write_text(json.dumps(failures))
    except (OSError, StorageFull, StorageReadOnly):
        if not (final / FAILURES).exists():  # not another attempt's copy: a real failure
            raise
    return final


def pack_task(
    rows: list[dict[str, Any]], vectors: dict[str, np.ndarray], failures: list[dict[str, Any]]
) -> bytes:
    """A task's output as bytes for the driver to stage (an actor that cannot see the
    collection): an .npz of the vectors by layer, with the rows and failures as JSON; no pickle."""
    arrays = {f"layer:{layer}": np.asarray(block, np.float32) for layer, block in vectors.items()}
    arrays["rows"] = np.array(json.dumps(rows))
    arrays["failures"] = np.array(json.dumps(failures))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack_task(
    data: bytes,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, Any]]]:
    """`pack_task`'s rows, vectors by layer and failures."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        vectors = {name[6:]: arrays[name] for name in arrays.files if name.startswith("layer:")}
        return json.loads(str(arrays["rows"])), vectors, json.loads(str(arrays["failures"]))


def read_staged(staging: Path, key: str) -> StagedTask | None:
    """The task staged under `key`, or None when there is none (or only part of one)."""
    folder = staging / key
    try:
        rows = pq.read_table(folder / ROWS).to_pylist()
        failures = json.loads((folder / FAILURES).read_text())
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    return StagedTask(folder, rows, failures)


def clear_staging(staging: Path, keep: Iterable[str]) -> int:
    """Remove staged folders of tasks not in `keep` (of an older plan) and temporary ones;
    how many were removed."""
    keep = set(keep)
    removed = 0
    for folder in staging.iterdir() if staging.is_dir() else ():
        if folder.name not in keep:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:  # a killed run's token
                folder.unlink(missing_ok=True)
            removed += 1
    return removed
