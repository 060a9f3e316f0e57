"""Which FAISS index a collection gets, from its size, width and a memory budget.

The rule, from ``bench/index_bench.py`` on a 2-core machine (100k x 1280 clustered, L2-normalised
vectors, ratios against exact search in the same run; the README has the table):

- up to ``FLAT_MAX_VALUES`` floats (n x d <= 5.2M: ~4k vectors of width 1280, 20k of width 256): ``Flat``,
  exact. No training, always right, and one query scans at most 20 MiB (a couple of milliseconds).
  Exact search is bound by memory bandwidth: a single query over 20k x 1280 took 10 ms, too slow
  for a server answering 1000 queries/s (``bench/server_bench.py``).
- above that, while raw vectors fit the budget: ``IVF<nlist>,Flat`` with nlist ~ 4 sqrt(n), a
  power of two. Measured at 100k: 35x exact QPS at recall@10 0.97 (25x at 0.98 on more spread
  data), against 25x (12x) for HNSW32, with a faster build, and it memory-maps.
- when raw vectors do not fit: ``IVF<nlist>,SQ8`` (a byte a value, recall barely moves: 34x at
  0.96), and where even that does not fit, ``IVF<nlist>,PQ<m>`` with the most sub-quantizers that
  fit (recall may stay under the target; ``lookalike index eval`` shows it). Under L2, FAISS also keeps
  a precomputed table of nlist x m KiB for PQ; the choice counts it (inner product builds none).

HNSW (``--factory HNSW32,Flat``) stays available: its single-query latency is as low and it needs
no training, but on these CPUs it answers batches slower than IVF at the same recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lookalike.errors import InvalidArgument

FLAT_MAX_VALUES = 20 * 2**20 // 4  # 20 MiB of float32 scanned per query
DEFAULT_MEMORY_BUDGET = 8 * 2**30  # bytes
# Bytes a vector costs besides its code: its id in an inverted list, in the id map, in the direct
# map and in `VectorIndex.labels` (8 each), its live flag (1), and, while a build runs, its kept id
# and list number (12): 45, the rest margin (lists are sized once: `fill.py`).
BYTES_PER_ID = 64
SAMPLE_SHARE = 4  # training reads at most budget / 4 of vectors (it copies them once: residuals)
POINTS_PER_LIST = 39  # FAISS's k-means wants this many training vectors per list at least
# (factory suffix, code bytes per value), most precise first
ENCODINGS = (("Flat", 4.0), ("SQ8", 1.0), ("SQ6", 0.75), ("SQ4", 0.5))
PQ_SUBQUANTIZERS = (256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 4)
# IVF,PQ under L2 keeps a float per list, sub-quantizer and centroid (nlist x m x 1 KiB), built
# at training and again at each load; inner product builds none
PQ_TABLE_BYTES = 256 * 4


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS factory string (without the id map) and why it was chosen."""

    factory: str
    reason: str

    @staticmethod
    def nlist_for(n: int) -> int:
        """IVF lists: about 4 sqrt(n), a power of two, between 16 and 65536."""
        return int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))


def sample_limit(d: int, memory_budget: int) -> int:
    """The most training vectors of width `d` a build reads into memory: a share of the budget."""
    return max(1_000, memory_budget // SAMPLE_SHARE // (4 * d))


def block_rows(d: int, memory_budget: int) -> int:
    """Rows a build adds (or searches exactly) at once: 1/16 of the budget, at least 1,024."""
    return max(1_024, memory_budget // 16 // (4 * d))


def nlist_within(n: int, d: int, memory_budget: int) -> int:
    """`nlist_for(n)`, fewer where the budget's sample would train each list on too few vectors."""
    trainable = sample_limit(d, memory_budget) // POINTS_PER_LIST
    return max(16, min(IndexPlan.nlist_for(n), 2 ** int(math.log2(max(trainable, 1)))))


def choose_index(
    n: int, d: int, metric: str, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> IndexPlan:
    """The index for `n` vectors of width `d` (see the module docstring for the rule)."""
    if n * d <= FLAT_MAX_VALUES:
        return IndexPlan("Flat", f"{n} x {d} <= {FLAT_MAX_VALUES:,} values: exact search is fast")
    nlist = nlist_within(n, d, memory_budget)
    raw = f"{n * d * 4 / 2**30:.2f} GiB of raw vectors"
    for encoding, per_value in ENCODINGS:
        size = n * (math.ceil(d * per_value) + BYTES_PER_ID)
        if size <= memory_budget:
            return IndexPlan(f"IVF{nlist},{encoding}", _reason(encoding, raw, size, memory_budget))
    m = next(
        (
            m
            for m in PQ_SUBQUANTIZERS
            if d % m == 0 and pq_bytes(n, m, nlist, metric) <= memory_budget
        ),
        None,
    )
    if m is None:
        raise InvalidArgument(
            f"{n} vectors of width {d} do not fit a {memory_budget / 2**30:.2f} GiB budget even "
            "compressed; raise the memory budget"
        )
    return IndexPlan(
        f"IVF{nlist},PQ{m}",
        f"{raw}; even 4 bits a value exceed the {memory_budget / 2**30:.2f} GiB budget: {m} bytes a "
        "vector (product quantization; recall may stay under the target, `index eval` shows it)",
    )


def pq_bytes(n: int, m: int, nlist: int, metric: str) -> int:
    """Memory of `IVF<nlist>,PQ<m>` over `n` vectors: codes, ids, and L2's precomputed table."""
    table = nlist * m * PQ_TABLE_BYTES if metric == "l2" else 0
    return n * (m + BYTES_PER_ID) + table


def _reason(encoding: str, raw: str, size: int, memory_budget: int) -> str:
    fits = f"{size / 2**30:.2f} GiB of {memory_budget / 2**30:.2f} GiB budget"
    if encoding == "Flat":
        return f"{raw} fit the budget ({fits}): fastest at recall >= 0.95"
    bits = {"SQ8": 8, "SQ6": 6, "SQ4": 4}[encoding]
    return f"{raw} exceed the budget: {bits}-bit scalar quantized, the most bits that fit ({fits})"
