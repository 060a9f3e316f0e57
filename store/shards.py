"""A shard: one item table (parquet) and one embedding matrix per layer (.npy), same row order,
written once under a temporary name and never changed after."""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.errors import CollectionError, UnknownItem, UnknownLayer

SHARD_NAME = re.compile(r"^\d{6}$")
ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("label", pa.string()),
    ]
)


def layer_filename(layer: str) -> str:
    return f"{quote(layer, safe='')}.npy"


class Shard:
    """One complete shard: an item table and one embedding matrix per layer, same row order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def items(self, columns: Sequence[str] | None = None) -> pa.Table:
        return pq.read_table(
            self.path / "items.parquet", columns=list(columns) if columns else None
        )

    def embeddings(self, layer: str, mmap: bool = True) -> np.ndarray:
        path = self.path / layer_filename(layer)
        if not path.exists():
            raise UnknownLayer(f"shard {self.name} has no layer {layer!r}")
        return np.load(path, mmap_mode="r" if mmap else None)

    def rows(self, layer: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a layer, read into memory of their own: an anonymous map the
        system takes back when the array is dropped. (Mapped file pages stay resident while the
        map lives, and freed heap buffers of this size stay in the process: a build's blocks
        left it 30 MB larger.)"""
        mapped = self.embeddings(layer)
        start, stop = min(start, len(mapped)), min(stop, len(mapped))
        shape = (stop - start, *mapped.shape[1:])
        size = (stop - start) * mapped.strides[0]
        buffer = mmap.mmap(-1, max(size, 1))
        with open(mapped.filename, "rb") as file:
            file.seek(mapped.offset + start * mapped.strides[0])
            if file.readinto(memoryview(buffer)[:size]) != size:
                raise CollectionError(f"shard {self.name} ends early: rewrite it")
        return np.frombuffer(buffer, mapped.dtype, int(np.prod(shape))).reshape(shape)

    def __len__(self) -> int:
        return pq.read_metadata(self.path / "items.parquet").num_rows


def write_shard_files(
    folder: Path, rows: list[dict[str, Any]], vectors: dict[str, np.ndarray]
) -> None:
    """The item table and one .npy per layer in `folder` (`atomic_folder` makes them durable)."""
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), folder / "items.parquet")
    for layer, block in vectors.items():
        np.save(folder / layer_filename(layer), block)


def as_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Item ids as int64; an id beyond int64 cannot exist (UnknownItem, not an overflow)."""
    try:
        return np.asarray(ids, dtype=np.int64).ravel()
    except OverflowError:
        raise UnknownItem("no item with an id beyond 64 bits") from None


def merged_blocks(
    blocks: Iterator[tuple[np.ndarray, np.ndarray]], rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, xb) blocks copied together until each holds at least `rows` rows (the last: the
    rest); a block that holds them alone passes as it is (a memory-mapped one is not copied)."""
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for ids, xb in blocks:
        pending.append((ids, xb))
        count += len(ids)
        if count >= rows:
            yield _concatenated(pending)
            pending, count = [], 0
    if pending:
        yield _concatenated(pending)


def _concatenated(blocks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate([ids for ids, _ in blocks]), np.concatenate([xb for _, xb in blocks])
