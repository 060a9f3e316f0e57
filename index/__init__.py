"""FAISS indexes over a collection: chosen and tuned automatically, mutable, crash-safe; search, dedup."""

from .choose import IndexPlan, choose_index
from .dedup import Duplicates, find_duplicates
from .evaluate import Evaluation, evaluate_index
from .live import LiveCollection
from .maintain import IndexMismatch, build_index, open_index, prepare_index, update_index
from .search import Filters, Hit, Searcher
from .store import has_index, index_dir, load_index, save_index
from .vector_index import VectorIndex, set_search_threads

__all__ = [
    "Duplicates",
    "Evaluation",
    "Filters",
    "Hit",
    "IndexMismatch",
    "IndexPlan",
    "LiveCollection",
    "Searcher",
    "VectorIndex",
    "build_index",
    "choose_index",
    "evaluate_index",
    "find_duplicates",
    "has_index",
    "index_dir",
    "load_index",
    "open_index",
    "prepare_index",
    "save_index",
    "set_search_threads",
    "update_index",
]
