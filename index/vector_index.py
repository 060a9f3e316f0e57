"""A FAISS index keyed by item ids, mutable without a rebuild, tuned to a target recall.

Every index is an ``IndexIDMap`` over a FAISS index built from a factory string: FAISS answers with
the collection's int64 item ids. (Not ``IndexIDMap2``: its reverse map, which only FAISS's own
reconstruct-by-id and removal use, cost about 40 bytes a vector; indexes saved with it still load.) Removal is a mask over FAISS's internal positions (HNSW cannot
remove, and one mechanism for every index type keeps ids stable), applied inside FAISS through an
``IDSelectorBitmap``; `compacted` drops the masked rows. Upsert = remove + add.

Thread safety: FAISS searches may run in parallel (they release the GIL); mutations must be
exclusive. `VectorIndex` takes a readers-writer lock around both, so one object can be shared.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from lookalike.errors import InvalidArgument

from .fill import can_fill, fill_ivf
from .knn import as_matrix, no_results, pad_results
from .locking import ReadWriteLock
from .metric import METRICS
from .tuning import HNSW_EF_GRID, nprobe_grid, tune_parameter

EXACT_SUBSET_MAX = (
    20_000  # a filter that leaves this few rows is answered by exact search over them
)
MAX_K = 10_000
TRAINING_PER_LIST = 64


@dataclass
class IndexMeta:
    """What the index file alone does not say: how it was built and tuned, and for which embedder."""

    factory: str
    metric: str
    dim: int
    spec: dict[str, Any] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    recall: float | None = None
    recall_k: int | None = None
    built: str = ""
    reason: str = ""  # why this factory (the automatic rule's words, or "chosen by the user")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VectorIndex:
    """An id-mapped FAISS index with a deletion mask and tuned search parameters."""

    def __init__(
        self,
        index: faiss.IndexIDMap,
        meta: IndexMeta,
        live: np.ndarray | None = None,
        read_only: bool = False,
    ) -> None:
        self.index = index
        self.inner = faiss.downcast_index(index.index)
        self.meta = meta
        self.labels = faiss.vector_to_array(index.id_map).astype(np.int64)
        self.live = np.ones(len(self.labels), bool) if live is None else live.astype(bool)
        if len(self.live) != len(self.labels):
            raise InvalidArgument(
                f"mask of {len(self.live)} rows for an index of {len(self.labels)}"
            )
        self.read_only = read_only
        self.lock = ReadWriteLock()
        self._ivf = faiss.try_extract_index_ivf(self.inner)
        if self._ivf is not None and not read_only:
            self._ivf.make_direct_map()  # lets exact-subset search reconstruct rows

    # ----- building -------------------------------------------------------------------------

    @classmethod
    def empty(cls, factory: str, metric: str, dim: int, spec: dict[str, Any]) -> VectorIndex:
        if metric not in METRICS:
            raise InvalidArgument(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        try:
            index = faiss.index_factory(dim, f"IDMap,{factory}", METRICS[metric])
        except RuntimeError:
            raise InvalidArgument(
                f"{factory!r} is not a FAISS factory string FAISS can build at width {dim} "
                "(e.g. Flat, HNSW32,Flat, IVF1024,Flat, IVF1024,PQ32)"
            ) from None
        built = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return cls(index, IndexMeta(factory, metric, dim, dict(spec), built=built))

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        xb: np.ndarray,
        factory: str,
        metric: str,
        spec: dict[str, Any],
        seed: int = 0,
    ) -> VectorIndex:
        """Train (on a sample, where the index needs it) and fill an index with `xb` under `ids`."""
        xb = as_matrix(xb)
        index = cls.empty(factory, metric, xb.shape[1], spec)
        if not index.index.is_trained:
            index.train(xb, seed)
        index.add(ids, xb)
        return index

    def training_size(self) -> int:
        """How many sample vectors training (and tuning) wants."""
        nlist = self._ivf.nlist if self._ivf is not None else 1
        return max(TRAINING_PER_LIST * nlist, 10_000)

    def train(self, xb: np.ndarray, seed: int = 0) -> None:
        nlist = self._ivf.nlist if self._ivf is not None else 1
        wanted = self.training_size()
        if len(xb) < nlist:
            raise InvalidArgument(f"{self.meta.factory} needs at least {nlist} vectors to train")
        sample = xb
        if len(xb) > wanted:
            chosen = np.random.default_rng(seed).choice(len(xb), wanted, replace=False)
            sample = xb[np.sort(chosen)]
        if self._ivf is not None and isinstance(faiss.downcast_index(self._ivf), faiss.IndexIVFPQ):
            # polysemous codes serve only Hamming-filtered search, which is never used here;
            # training them took 3 s a sub-quantizer (PQ64: 3 minutes)
            faiss.downcast_index(self._ivf).do_polysemous_training = False
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
        if self._ivf is not None:
            self._ivf.make_direct_map()

    def fill(self, blocks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], bar=None) -> None:
        """Add every (ids, xb) block of `blocks()` to this trained, empty index. An IVF index's
        lists are sized once before any code is added (`fill.py`): memory stays near the
        finished index's. `blocks` is called twice there and must yield the same blocks."""
        if len(self.labels):
            raise InvalidArgument("fill starts from an empty index; use add")
        if not can_fill(self._ivf):
            for ids, xb in blocks():
                self.add(ids, xb)
                if bar is not None:
                    bar.update(len(ids))
            return
        with self.lock.write():
            ids = fill_ivf(self.index, self._ivf, blocks, self._check_rows, bar)
            if len(np.unique(ids)) != len(ids):
                raise InvalidArgument("the blocks repeat ids")
            self.labels, self.live = ids, np.ones(len(ids), bool)

    # ----- mutation ---------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | np.ndarray, xb: np.ndarray) -> None:
        """Add vectors under new ids; an id that is already live is refused (use `upsert`)."""
        ids, xb = self._check_rows(ids, xb)
        with self.lock.write():
            self._add(ids, xb)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Mask the given ids out of every later search; returns how many were live."""
        self._check_writable()
        with self.lock.write():
            return self._remove(np.asarray(ids, dtype=np.int64))

    def upsert(self, ids: Sequence[int] | np.ndarray, xb: np.ndarray) -> None:
        """Replace the vectors of ids that are present, add the others, in one step."""
        ids, xb = self._check_rows(ids, xb)
        with self.lock.write():
            self._remove(ids)
            self._add(ids, xb)

    def _add(self, ids: np.ndarray, xb: np.ndarray) -> None:
        # ids beyond every id held (a build's, in order) need no O(n) check per block
        fresh = not len(ids) or not len(self.labels) or ids.min() > self.labels.max()
        taken = np.empty(0, np.int64) if fresh else np.intersect1d(ids, self.labels[self.live])
        if len(taken):
            raise InvalidArgument(f"ids already indexed: {taken[:5].tolist()} (use upsert)")
        for start in range(0, len(ids), 65536):
            self.index.add_with_ids(xb[start : start + 65536], ids[start : start + 65536])
        self.labels = np.concatenate([self.labels, ids])
        self.live = np.concatenate([self.live, np.ones(len(ids), bool)])

    def _remove(self, ids: np.ndarray) -> int:
        hit = self.live & np.isin(self.labels, ids)
        self.live &= ~hit
        return int(hit.sum())

    def compacted(self) -> VectorIndex:
        """A copy without masked rows (same training, same tuning)."""
        with self.lock.read():
            positions = np.flatnonzero(self.live)
            vectors = self._vectors_at(positions)
            fresh = faiss.clone_index(self.index)
            fresh.reset()
        compact = VectorIndex(fresh, IndexMeta(**self.meta.to_dict()))
        compact.add(self.labels[positions], vectors)
        return compact

    # ----- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.live.sum())

    @property
    def deleted(self) -> int:
        return int(len(self.live) - self.live.sum())

    def ids(self) -> np.ndarray:
        """The live ids, sorted."""
        return np.sort(self.labels[self.live])

    def search(
        self, xq: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the `k` nearest live vectors (restricted to `allowed` ids if given).

        Scores are FAISS's: inner products (larger is closer) or squared L2 (smaller is closer).
        Missing results are id -1.
        """
        xq = self._check_queries(xq)
        if not 0 < k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {k}")
        with self.lock.read():
            mask = self._mask(allowed)
            if mask is None:
                return self.index.search(xq, k, params=self._params())
            if not mask.any():
                return no_results(len(xq), k, self.meta.metric)
            if self._exact_subset(mask):
                positions = np.flatnonzero(mask)
                subset = self._flat(self._vectors_at(positions))
                scores, rows = subset.search(xq, min(k, len(positions)))
                found = np.where(rows >= 0, positions[rows], -1)
            else:
                params = self._params(_bitmap(mask))
                scores, found = self.inner.search(xq, k, params=params)
            ids = np.where(found >= 0, self.labels[np.maximum(found, 0)], -1)
            return pad_results(scores, ids, k, self.meta.metric)

    def range_search(
        self, xq: np.ndarray, radius: float, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (scores, ids) of every live vector within `radius` (FAISS units), best first."""
        xq = self._check_queries(xq)
        with self.lock.read():
            mask = self._mask(allowed)
            if mask is None:
                lims, scores, found = self.index.range_search(xq, radius, params=self._params())
                labels = found
            elif not mask.any():
                return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in xq]
            elif self._exact_subset(mask):
                positions = np.flatnonzero(mask)
                lims, scores, rows = self._flat(self._vectors_at(positions)).range_search(
                    xq, radius
                )
                labels = self.labels[positions[rows]]
            else:
                params = self._params(_bitmap(mask))
                lims, scores, rows = self.inner.range_search(xq, radius, params=params)
                labels = self.labels[rows]
        results = []
        for start, end in itertools.pairwise(lims):
            order = np.argsort(
                -scores[start:end] if self.meta.metric == "ip" else scores[start:end]
            )
            results.append((scores[start:end][order], labels[start:end][order]))
        return results

    # ----- tuning -----------------------------------------------------------------------------

    @property
    def tunable(self) -> str | None:
        if isinstance(self.inner, faiss.IndexHNSW):
            return "efSearch"
        if self._ivf is not None:
            return "nprobe"
        return None

    def param_grid(self) -> list[int]:
        if self.tunable == "efSearch":
            return list(HNSW_EF_GRID)
        if self.tunable == "nprobe":
            return nprobe_grid(self._ivf.nlist)
        return []

    def tune(
        self,
        queries: np.ndarray,
        own_ids: np.ndarray,
        truth: np.ndarray,
        target_recall: float = 0.95,
        k: int = 10,
    ) -> float:
        """Set the search parameter `tuning.tune_parameter` picks for `target_recall`@k on the
        held-out `queries` (their ids `own_ids`, their exact top-k `truth`); returns the recall."""
        tunable = self.tunable

        def search_with(value: int | None, xq: np.ndarray, n: int) -> np.ndarray:
            if tunable:
                self.meta.params = {tunable: value}
            return self.search(xq, n)[1]

        grid: list[int | None] = [*self.param_grid()] or [None]  # nothing to tune: one measure
        value, recall = tune_parameter(search_with, grid, queries, own_ids, truth, target_recall, k)
        if tunable:
            self.meta.params = {tunable: value}
        self.meta.recall, self.meta.recall_k = round(float(recall), 4), k
        return recall

    def param_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.meta.params.items()) or "-"

    # ----- internals --------------------------------------------------------------------------

    def _params(self, selector: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
        tuned = self.meta.params
        if self.tunable == "efSearch":
            return faiss.SearchParametersHNSW(efSearch=tuned.get("efSearch", 64), sel=selector)
        if self.tunable == "nprobe":
            return faiss.SearchParametersIVF(nprobe=tuned.get("nprobe", 8), sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _mask(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """Positions a search may return, or None when every row is live and nothing is filtered."""
        if allowed is None:
            return None if self.live.all() else self.live
        return self.live & np.isin(self.labels, np.asarray(allowed, dtype=np.int64))

    def _exact_subset(self, mask: np.ndarray) -> bool:
        return self.tunable is not None and int(mask.sum()) <= max(
            EXACT_SUBSET_MAX, len(mask) // 20
        )

    def _vectors_at(self, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return np.empty((0, self.meta.dim), np.float32)
        return self.inner.reconstruct_batch(positions.astype(np.int64))

    def _flat(self, vectors: np.ndarray) -> faiss.Index:
        flat = faiss.IndexFlat(self.meta.dim, METRICS[self.meta.metric])
        flat.add(vectors)
        return flat

    def _check_writable(self) -> None:
        if self.read_only:
            raise InvalidArgument(
                "this index was loaded memory-mapped (read-only); load it writable"
            )

    def _check_rows(self, ids, xb) -> tuple[np.ndarray, np.ndarray]:
        self._check_writable()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        xb = self._check_queries(xb)
        if len(ids) != len(xb):
            raise InvalidArgument(f"{len(ids)} ids for {len(xb)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise InvalidArgument("duplicate ids in one call")
        return ids, xb

    def _check_queries(self, xq: np.ndarray) -> np.ndarray:
        return check_vectors(xq, self.meta.dim)


def check_vectors(xq: np.ndarray, dim: int) -> np.ndarray:
    """`xq` as a float32 matrix of width `dim`, finite; `InvalidArgument` otherwise."""
    xq = as_matrix(xq)
    if xq.shape[1] != dim:
        raise InvalidArgument(f"vectors have width {xq.shape[1]}; this index holds width {dim}")
    if not np.isfinite(xq).all():
        raise InvalidArgument("vectors contain NaN or infinity")
    return xq


def set_search_threads(threads: int) -> None:
    """FAISS's OpenMP threads for searches made by the calling thread (OpenMP keeps the setting
    per thread: a thread that never calls this uses every core).

    A server answers one query per request and gets its parallelism from concurrent requests:
    one thread per query measured 0.29 ms against 0.59 ms with two (IVF1024 over 100k x 1280).
    """
    faiss.omp_set_num_threads(threads)


def _bitmap(mask: np.ndarray) -> faiss.IDSelectorBitmap:
    """A FAISS selector of the rows set in `mask` (FAISS reads bits little-endian)."""
    return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
