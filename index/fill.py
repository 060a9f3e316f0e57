"""Filling a new IVF index from blocks in memory bounded by the index's own final size.

FAISS grows each inverted list by reallocation as vectors arrive (a `std::vector` doubling), and
the buffers it frees stay in the process heap: a build measured about 2.4x the codes. Here a first
pass only assigns each block to its lists (the coarse quantizer's search, which adding would do
anyway: the assignments are kept, 4 bytes a vector), every list is then sized once to its final
length, and a second pass encodes and appends the codes into that room with the kept assignments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

from lookalike.errors import InvalidArgument

Blocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
Checked = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def can_fill(ivf: faiss.IndexIVF | None) -> bool:
    """Whether `ivf` keeps its lists in memory (`ArrayInvertedLists`), where they can be sized."""
    if ivf is None:
        return False
    return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.ArrayInvertedLists)


def fill_ivf(
    idmap: faiss.IndexIDMap, ivf: faiss.IndexIVF, blocks: Blocks, check: Checked, bar=None
) -> np.ndarray:
    """Add every (ids, xb) block of `blocks()` to the empty `ivf` inside `idmap`; returns the
    ids in the order added. `blocks` is called twice and must yield the same blocks each time;
    `check` validates a block (width, finite values, ids) before it is used."""
    parts, assignments, sizes = _assign(ivf, blocks, check)
    _reserve(ivf, sizes)
    again = iter(blocks())
    for wanted, assigned in zip(parts, assignments, strict=True):
        ids, xb = check(*next(again, (np.empty(0, np.int64), np.empty((0, ivf.d)))))
        if not np.array_equal(ids, wanted):
            raise InvalidArgument("the blocks changed between the two passes over them")
        add_preassigned(ivf, xb, assigned.astype(np.int64))
        if bar is not None:
            bar.update(len(ids))
    if next(again, None) is not None:
        raise InvalidArgument("the blocks changed between the two passes over them")
    ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
    faiss.copy_array_to_vector(ids, idmap.id_map)  # the id map sized once too
    idmap.ntotal = ivf.ntotal
    return ids


def _assign(
    ivf: faiss.IndexIVF, blocks: Blocks, check: Checked
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Each block's ids and list numbers (int32), and how many vectors each list will hold."""
    parts, assignments, sizes = [], [], np.zeros(ivf.nlist, np.int64)
    for block_ids, block in blocks():
        ids, xb = check(block_ids, block)
        assigned = ivf.quantizer.assign(xb, 1).ravel().astype(np.int32)
        sizes += np.bincount(assigned, minlength=ivf.nlist)
        parts.append(ids)
        assignments.append(assigned)
    return parts, assignments, sizes


def _reserve(ivf: faiss.IndexIVF, sizes: np.ndarray) -> None:
    """Give each inverted list (and the direct map) room for its final size, allocated once.

    Resizing a `std::vector` down keeps its capacity: resize to the final size, then back."""
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    for list_no, size in enumerate(sizes.tolist()):
        held = lists.list_size(list_no)
        lists.resize(list_no, held + size)
        lists.resize(list_no, held)
    if ivf.direct_map.type == faiss.DirectMap.Array:
        direct = ivf.direct_map.array
        held = direct.size()
        direct.resize(held + int(sizes.sum()))
        direct.resize(held)
