"""Vector stores over a collection behind one interface (FAISS embedded by default: chosen and
tuned automatically, mutable, crash-safe; Milvus for beyond one machine); search, dedup.

Exports load lazily: building or opening an index imports no torch (only searching by image does).
"""

from lookalike.lazy import lazy_exports

_WHERE = {
    "IndexPlan": "choose",
    "choose_index": "choose",
    "Duplicates": "dedup",
    "find_duplicates": "dedup",
    "EqualGroups": "equal",
    "equal_groups": "equal",
    "Evaluation": "evaluate",
    "evaluate_index": "evaluate",
    "LiveCollection": "live",
    "IndexMismatch": "maintain",
    "build_index": "maintain",
    "open_index": "maintain",
    "prepare_index": "maintain",
    "update_index": "maintain",
    "Filters": "vector_store",
    "Hit": "search",
    "Searcher": "search",
    "has_index": "store",
    "index_dir": "store",
    "load_index": "store",
    "save_index": "store",
    "VectorIndex": "vector_index",
    "set_search_threads": "vector_index",
    "FaissStore": "vector_store",
    "VectorStore": "vector_store",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
