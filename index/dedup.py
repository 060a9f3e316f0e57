"""Near-duplicates: every pair of items closer than a threshold, grouped into clusters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from lookalike.errors import InvalidArgument

from .search import Filters, Searcher

BLOCK = 2048  # queries per range search: memory stays bounded by a block's results
MAX_PAIRS = 1_000_000


@dataclass
class Duplicates:
    """Pairs (a < b) with their distance, and clusters (connected components), largest first."""

    pairs: pa.Table
    clusters: list[list[int]]

    def cluster_table(self, searcher: Searcher) -> pa.Table:
        rows = [
            {"cluster": number, **searcher.item(item_id)}
            for number, members in enumerate(self.clusters)
            for item_id in members
        ]
        schema = pa.schema(
            [
                ("cluster", pa.int64()),
                ("id", pa.int64()),
                ("path", pa.string()),
                ("label", pa.string()),
            ]
        )
        return pa.Table.from_pylist(rows, schema=schema)


def find_duplicates(
    searcher: Searcher,
    threshold: float,
    filters: Filters | None = None,
    progress: bool = True,
    max_pairs: int = MAX_PAIRS,
) -> Duplicates:
    """Range-search every stored vector (of the items `filters` keeps), block by block, and group
    the pairs it finds; more than `max_pairs` is refused (`InvalidArgument`) before memory runs
    out: a threshold that pairs that much does not find near-duplicates."""
    firsts, seconds, distances = [], [], []
    allowed = searcher.allowed_ids(filters) if filters else None
    total = len(searcher.collection) if allowed is None else len(allowed)
    with tqdm(total=total, unit="vec", desc="dedup", disable=not progress) as bar:
        for ids, vectors in searcher.collection.iter_embeddings(searcher.layer):
            if allowed is not None:
                keep = np.isin(ids, allowed)
                ids, vectors = ids[keep], np.asarray(vectors)[keep]
            for start in range(0, len(ids), BLOCK):
                block_ids = ids[start : start + BLOCK]
                hits = searcher.search_vectors(
                    np.asarray(vectors[start : start + BLOCK]),
                    k=None,
                    threshold=threshold,
                    filters=filters,
                )
                for query_id, found in zip(block_ids, hits, strict=True):
                    for hit in found:
                        if hit.id > query_id:  # each pair once, never an item with itself
                            firsts.append(int(query_id))
                            seconds.append(hit.id)
                            distances.append(hit.distance)
                bar.update(len(block_ids))
                if len(firsts) > max_pairs:
                    raise InvalidArgument(
                        f"more than {max_pairs:,} pairs lie within {threshold}: that pairs "
                        "distinct items, not near-duplicates; give a smaller threshold"
                    )
    pairs = pa.table(
        {
            "a": pa.array(firsts, pa.int64()),
            "b": pa.array(seconds, pa.int64()),
            "distance": pa.array(distances, pa.float32()),
        }
    )
    return Duplicates(pairs, connected_components(firsts, seconds))


def connected_components(firsts: list[int], seconds: list[int]) -> list[list[int]]:
    """Union-find over the pairs; clusters of 2+ items, largest first, members sorted."""
    parent: dict[int, int] = {}

    def root(item: int) -> int:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(firsts, seconds, strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for item in parent:
        groups.setdefault(root(item), []).append(item)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
