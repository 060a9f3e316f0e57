"""Predict with a saved classifier: class probabilities, labelled neighbours, optionally the embedding."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from lookalike.checks import PREDICT, check_ranges
from lookalike.embedder.sources import DEFAULT_MAX_PIXELS
from lookalike.errors import ClassifierError, InvalidArgument
from lookalike.index import Hit, IndexMismatch, Searcher, has_index, open_index
from lookalike.index.maintain import exact_index
from lookalike.store.collection import Collection

from .store import load_classifier

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    source: str
    label: str
    probabilities: dict[str, float]
    neighbours: list[Hit]
    embedding: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "source": self.source,
            "label": self.label,
            "probabilities": self.probabilities,
            "neighbours": [hit.to_dict() for hit in self.neighbours],
        }
        if self.embedding is not None:
            data["embedding"] = self.embedding
        return data


class Predictor:
    """A classifier with the collection it belongs to; the collection's embedder handles new images.

    Neighbours come from the layer's saved index, or, where none was built, from an exact
    in-memory index over the cached embeddings.
    """

    def __init__(self, model: Pipeline, card: dict[str, Any], searcher: Searcher) -> None:
        self.model = model
        self.card = card
        self.classes: list[str] = card["classes"]
        self.searcher = searcher

    @classmethod
    def open(cls, collection_dir: str | Path, name: str) -> Predictor:
        collection = Collection.open(collection_dir)
        model, card = load_classifier(collection, name)
        layer = card["layer"]
        index = None
        if has_index(collection.path, layer):
            try:
                index = open_index(collection, layer)
            except IndexMismatch as error:
                log.warning("%s; neighbours from an exact in-memory search instead", error)
        if index is None:
            log.info("no usable index over %s; neighbours from an exact search", layer)
            index = exact_index(collection, layer)
        return cls(model, card, Searcher(collection, index, layer))

    @classmethod
    def from_searcher(cls, searcher: Searcher, name: str) -> Predictor:
        """A classifier of the searcher's collection that shares its index and embedder."""
        model, card = load_classifier(searcher.collection, name)
        if card["layer"] != searcher.layer:
            raise ClassifierError(
                f"classifier {name!r} uses layer {card['layer']!r}, not the searched layer "
                f"{searcher.layer!r}"
            )
        return cls(model, card, searcher)

    @property
    def layers(self) -> list[str]:
        """The layers whose vectors, side by side, the classifier reads (older cards: one)."""
        return list(self.card.get("layers") or [self.card["layer"]])

    @property
    def needed_layers(self) -> list[str]:
        """The classifier's layers and the neighbours' layer (the card's `layer`)."""
        return list(dict.fromkeys([*self.layers, self.card["layer"]]))

    def predict_vectors(
        self,
        vectors: np.ndarray | Mapping[str, np.ndarray],
        sources: Sequence[str],
        k: int = 5,
        with_embedding: bool = False,
    ) -> list[Prediction]:
        """Predictions for already-embedded vectors: one array (a one-layer classifier) or
        arrays by layer. Neighbours are searched with the card's `layer` (the searched one)."""
        check_ranges({"k": k}, PREDICT)
        by_layer = vectors if isinstance(vectors, Mapping) else {self.layers[0]: vectors}
        missing = [layer for layer in self.needed_layers if layer not in by_layer]
        if missing:
            raise InvalidArgument(f"classifier {self.card['name']!r} also needs layers {missing}")
        features = np.hstack([np.asarray(by_layer[layer], np.float32) for layer in self.layers])
        queries = np.asarray(by_layer[self.card["layer"]], np.float32)
        probabilities = self.model.predict_proba(features)
        neighbours = self.searcher.search_vectors(queries, k) if k else [[] for _ in sources]
        return [
            Prediction(
                source=source,
                label=self.classes[int(self.model.classes_[np.argmax(row)])],
                probabilities={
                    self.classes[int(code)]: round(float(p), 6)
                    for code, p in zip(self.model.classes_, row, strict=True)
                },
                neighbours=hits,
                embedding=vector.tolist() if with_embedding else None,
            )
            for source, row, hits, vector in zip(
                sources, probabilities, neighbours, queries, strict=True
            )
        ]

    def predict_images(
        self,
        images: Sequence[str | Path | bytes],
        k: int = 5,
        with_embedding: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[Prediction]:
        """Embed images never seen before (one pass each) and predict them."""
        check_ranges({"k": k}, PREDICT)  # before the images are embedded
        sources = [
            f"upload {n + 1}" if isinstance(image, bytes) else str(image)
            for n, image in enumerate(images)
        ]
        by_layer = self.searcher.embed_layers(images, max_pixels)
        return self.predict_vectors(by_layer, sources, k, with_embedding)

    def predict_ids(
        self, ids: Sequence[int], k: int = 5, with_embedding: bool = False
    ) -> list[Prediction]:
        """Predict stored items from their cached embeddings (each is its own first neighbour)."""
        collection = self.searcher.collection
        by_layer = {layer: collection.vectors(ids, layer) for layer in self.needed_layers}
        return self.predict_vectors(by_layer, [f"id {i}" for i in ids], k, with_embedding)

    def close(self) -> None:
        self.searcher.close()
