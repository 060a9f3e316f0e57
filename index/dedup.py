"""Near-duplicates: every pair of items closer than a threshold, grouped into clusters; equal
items (`equal.equal_groups`) grouped first, so copies cost one query, not all their pairs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from lookalike.errors import InvalidArgument

from .equal import EqualGroups, equal_groups
from .search import Filters, Searcher

BLOCK = 2048  # queries per range search: memory stays bounded by a block's results
MAX_PAIRS = 1_000_000  # pairs of distinct vectors listed at most
RESOLUTION = 1e-6  # cosine distances below this are 0 to the range search (`metric.radius`)


@dataclass
class Duplicates:
    """Groups of equal items (`exact`: identical vectors or files, each sorted, largest first),
    near-duplicate pairs (a < b, distance) between distinct vectors, and clusters (connected
    components, largest first). In a pair, an id that heads an exact group stands for its whole
    group: the pairs of copies are counted (`pair_count`), never listed."""

    pairs: pa.Table
    clusters: list[list[int]]
    exact: list[list[int]] = field(default_factory=list)

    @property
    def pair_count(self) -> int:
        """Every pair of items within the threshold: each group's own pairs, and each listed
        pair's two groups times each other."""
        size = {group[0]: len(group) for group in self.exact}
        inside = sum(n * (n - 1) // 2 for n in size.values())
        firsts, seconds = self.pairs["a"].to_pylist(), self.pairs["b"].to_pylist()
        return inside + sum(
            size.get(a, 1) * size.get(b, 1) for a, b in zip(firsts, seconds, strict=True)
        )

    def item_pairs(self) -> Iterator[tuple[int, int, float]]:
        """Every pair of items (a < b, distance), the groups expanded: `pair_count` of them, so
        only for callers that know the groups are small."""
        members = {group[0]: group for group in self.exact}
        for group in self.exact:
            yield from ((a, b, 0.0) for a, b in itertools.combinations(group, 2))
        for row in self.pairs.to_pylist():
            for a in members.get(row["a"], [row["a"]]):
                for b in members.get(row["b"], [row["b"]]):
                    yield min(a, b), max(a, b), row["distance"]

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
    """Group equal items (`equal_groups`), range-search one representative of each group, block
    by block, and join the groups its hits fall in; more than `max_pairs` pairs of distinct
    vectors is refused (`InvalidArgument`) before memory runs out (copies never count)."""
    equal = equal_groups(searcher, filters)
    firsts, seconds, distances = _near_pairs(
        searcher, equal, threshold, filters, progress, max_pairs
    )
    pairs = pa.table(
        {
            "a": pa.array(firsts, pa.int64()),
            "b": pa.array(seconds, pa.int64()),
            "distance": pa.array(distances, pa.float32()),
        }
    )
    exact = [group.tolist() for group in equal.groups]
    return Duplicates(pairs, _clusters(exact, firsts, seconds), exact)


def _near_pairs(
    searcher: Searcher,
    equal: EqualGroups,
    threshold: float,
    filters: Filters | None,
    progress: bool,
    max_pairs: int,
) -> tuple[list[int], list[int], list[float]]:
    """(a, b, distance) lists: each representative's hits mapped to their groups' representatives,
    each pair once (a < b) at its smallest distance."""
    firsts: list[int] = []
    seconds: list[int] = []
    distances: list[float] = []
    with tqdm(
        total=len(equal.representatives), unit="vec", desc="dedup", disable=not progress
    ) as bar:
        for ids, vectors in searcher.collection.iter_embeddings(searcher.layer):
            keep = np.isin(ids, equal.representatives)
            ids, vectors = ids[keep], np.asarray(vectors)[keep]
            for start in range(0, len(ids), BLOCK):
                block_ids = ids[start : start + BLOCK]
                found = searcher.within(vectors[start : start + BLOCK], threshold, filters)
                for query_id, (hit_ids, hit_distances) in zip(block_ids, found, strict=True):
                    heads, near = _nearest_per_group(equal, query_id, hit_ids, hit_distances)
                    firsts.extend([int(query_id)] * len(heads))
                    seconds.extend(heads.tolist())
                    distances.extend(near.tolist())
                bar.update(len(block_ids))
                if len(firsts) > max_pairs:
                    raise InvalidArgument(_too_many(max_pairs, threshold))
    return firsts, seconds, distances


def _nearest_per_group(
    equal: EqualGroups, query_id: int, hit_ids: np.ndarray, hit_distances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The groups a query's hits fall in (their representatives, each larger than the query's:
    each pair once, never a group with itself), each at its nearest hit."""
    heads = equal.representative_of(hit_ids)
    later = heads > query_id
    heads, near = heads[later], hit_distances[later]
    order = np.lexsort((near, heads))
    heads, near = heads[order], near[order]
    first = np.r_[True, heads[1:] != heads[:-1]][: len(heads)]
    return heads[first], near[first]


def _too_many(max_pairs: int, threshold: float) -> str:
    """The refusal: what lies within the threshold, and what can still be done."""
    copies = "exact copies are grouped apart and not counted"
    if threshold > RESOLUTION:
        return (
            f"more than {max_pairs:,} pairs of distinct items lie within {threshold:g} ({copies}): "
            "at that distance dedup pairs look-alikes, not only copies; give a smaller threshold, "
            "or fewer items (filters)"
        )
    return (
        f"more than {max_pairs:,} pairs of items whose vectors differ only by rounding lie "
        f"within {threshold:g} (distances under {RESOLUTION:g} count as 0; {copies}): no smaller "
        "threshold separates them; give fewer items (filters)"
    )


def _clusters(exact: list[list[int]], firsts: list[int], seconds: list[int]) -> list[list[int]]:
    """Connected components of the pairs, each group standing for its items, expanded; the
    exact groups no pair touches are clusters of their own; largest first, members sorted."""
    members = {group[0]: group for group in exact}
    linked = connected_components(firsts, seconds)
    touched = {head for component in linked for head in component}
    units = linked + [[head] for head in members if head not in touched]
    clusters = (
        sorted(item for head in unit for item in members.get(head, [head])) for unit in units
    )
    return sorted(clusters, key=lambda c: (-len(c), c[0]))


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
