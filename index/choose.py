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
  fit (recall may stay under the target; ``lookalike index eval`` shows it).

HNSW (``--factory HNSW32,Flat``) stays available: its single-query latency is as low and it needs
no training, but on these CPUs it answers batches slower than IVF at the same recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lookalike.errors import InvalidArgument

FLAT_MAX_VALUES = 20 * 2**20 // 4  # 20 MiB of float32 scanned per query
DEFAULT_MEMORY_BUDGET = 8 * 2**30  # bytes


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS factory string (without the id map) and why it was chosen."""

    factory: str
    reason: str

    @staticmethod
    def nlist_for(n: int) -> int:
        """IVF lists: about 4 sqrt(n), a power of two, between 16 and 65536."""
        return int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))


def choose_index(
    n: int, d: int, metric: str, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> IndexPlan:
    """The index for `n` vectors of width `d` (see the module docstring for the rule)."""
    raw = n * d * 4
    if n * d <= FLAT_MAX_VALUES:
        return IndexPlan("Flat", f"{n} x {d} <= {FLAT_MAX_VALUES:,} values: exact search is fast")
    nlist = IndexPlan.nlist_for(n)
    if raw <= memory_budget:
        return IndexPlan(
            f"IVF{nlist},Flat",
            f"{n} vectors, raw vectors fit the budget: fastest at recall >= 0.95",
        )
    if n * d <= memory_budget:
        return IndexPlan(
            f"IVF{nlist},SQ8",
            f"{raw / 2**30:.1f} GiB of raw vectors exceed the budget: 8-bit scalar quantized",
        )
    per_vector = max(1, memory_budget // max(n, 1) - 16)
    m = next((m for m in (64, 48, 32, 24, 16, 12, 8, 4) if m <= per_vector and d % m == 0), None)
    if m is None:
        raise InvalidArgument(
            f"{n} vectors of width {d} do not fit a {memory_budget / 2**30:.1f} GiB budget even "
            "compressed; raise the memory budget"
        )
    return IndexPlan(
        f"IVF{nlist},PQ{m}",
        f"{n * d / 2**30:.1f} GiB even at 8 bits a value exceed the budget: {m} bytes a vector "
        "(product quantization; recall may stay under the target, `index eval` shows it)",
    )
