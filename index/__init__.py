"""Vector stores over a collection (FAISS embedded by default: chosen and tuned automatically, mutable,
crash-safe; Milvus for beyond one machine) behind one interface; search, dedup."""

from .choose import IndexPlan, choose_index
from .dedup import Duplicates, find_duplicates
from .evaluate import Evaluation, evaluate_index
from .live import LiveCollection
from .maintain import IndexMismatch, build_index, open_index, prepare_index, update_index
from .search import Hit, Searcher
from .store import has_index, index_dir, load_index, save_index
from .vector_index import VectorIndex, set_search_threads
from .vector_store import FaissStore, Filters, VectorStore

__all__ = [
    "Duplicates",
    "Evaluation",
    "FaissStore",
    "Filters",
    "Hit",
    "IndexMismatch",
    "IndexPlan",
    "LiveCollection",
    "Searcher",
    "VectorIndex",
    "VectorStore",
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
