"""The served collections, each opened once per process with its index, embedder and classifiers."""

from __future__ import annotations

import threading
from pathlib import Path

from lookalike.classify import Predictor
from lookalike.classify.store import classifier_dir
from lookalike.collection import Collection
from lookalike.index import Searcher

from .errors import ApiError
from .settings import Settings


class Served:
    """Lazily opened searchers and predictors by collection name; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._searchers: dict[str, Searcher] = {}
        self._predictors: dict[tuple[str, str], tuple[float, Predictor]] = {}

    def names(self) -> list[str]:
        return sorted(self.settings.collections)

    def path(self, name: str) -> Path:
        if name not in self.settings.collections:
            raise ApiError(
                404, f"no collection named {name!r}; served: {', '.join(self.names()) or 'none'}"
            )
        return self.settings.collections[name]

    def searcher(self, name: str) -> Searcher:
        """The collection with its checked index (built by `lookalike index build`)."""
        path = self.path(name)
        with self._lock:
            if name not in self._searchers:
                self._searchers[name] = Searcher.open(path)
            return self._searchers[name]

    def collection(self, name: str) -> Collection:
        with self._lock:
            if name in self._searchers:
                return self._searchers[name].collection
        return Collection.open(self.path(name))

    def predictor(self, name: str, classifier: str) -> Predictor:
        """The named classifier over the collection's searcher; reloaded when it is retrained."""
        searcher = self.searcher(name)
        card = classifier_dir(searcher.collection, classifier) / "card.json"
        stamp = card.stat().st_mtime if card.exists() else -1.0
        with self._lock:
            cached = self._predictors.get((name, classifier))
            if cached and cached[0] == stamp:
                return cached[1]
        predictor = Predictor.from_searcher(searcher, classifier)
        with self._lock:
            self._predictors[(name, classifier)] = (stamp, predictor)
        return predictor

    def forget_predictor(self, name: str, classifier: str) -> None:
        with self._lock:
            self._predictors.pop((name, classifier), None)

    def warm(self) -> None:
        """Open every collection's index and embedder now (what /readyz reports)."""
        for name in self.names():
            self.searcher(name).backbone()

    def ready(self) -> dict[str, str]:
        with self._lock:
            return {
                name: "ready"
                if name in self._searchers and self._searchers[name].embedder_loaded
                else "not loaded"
                for name in self.names()
            }

    def close(self) -> None:
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers.clear()
            self._predictors.clear()
