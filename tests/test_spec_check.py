"""The one spec check (`BackboneSpec.check_same`): a collection opened with another embedder, an
index or a classifier copied in from another collection, and query vectors from another embedder
are all refused with the same message shape, naming the fields that differ and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_collection, separable, synthetic_spec

from lookalike.classify import load_classifier, train_classifier
from lookalike.classify.store import classifier_dir
from lookalike.errors import SpecMismatch
from lookalike.index import build_index
from lookalike.index.maintain import open_index
from lookalike.index.search import Searcher
from lookalike.index.store import index_dir
from lookalike.store.collection import Collection

SHAPE = r"comes from another embedder spec than .* \(pooling: .* != .*\); \w+"


@pytest.fixture
def two(tmp_path: Path) -> tuple[Collection, Collection]:
    """Two collections alike but for the pooling their embedder used."""
    vectors, labels = separable(10)
    mine = make_collection(tmp_path / "mine", labels, vectors)
    theirs = make_collection(tmp_path / "theirs", labels, vectors, synthetic_spec(pooling="gem"))
    return mine, theirs


def test_a_collection_asked_for_with_another_spec(two: tuple[Collection, Collection]) -> None:
    mine, theirs = two
    with pytest.raises(SpecMismatch, match=SHAPE):
        Collection.open_or_create(mine.path, theirs.spec)


def test_an_index_copied_from_another_collection(two: tuple[Collection, Collection]) -> None:
    mine, theirs = two
    build_index(theirs, "embedding", progress=False)
    shutil.copytree(index_dir(theirs.path, "embedding"), index_dir(mine.path, "embedding"))
    with pytest.raises(SpecMismatch, match=SHAPE + ".*index build"):
        open_index(mine, "embedding")


def test_a_classifier_copied_from_another_collection(two: tuple[Collection, Collection]) -> None:
    mine, theirs = two
    train_classifier(theirs, "m")
    classifier_dir(mine, "m").parent.mkdir()
    shutil.copytree(classifier_dir(theirs, "m"), classifier_dir(mine, "m"))
    with pytest.raises(SpecMismatch, match=SHAPE):
        load_classifier(mine, "m")


def test_query_vectors_from_another_embedder(two: tuple[Collection, Collection]) -> None:
    mine, theirs = two
    searcher = Searcher.open(mine.path, "embedding", read_only=False)
    fingerprint = r"comes from another embedder spec than .* \(fingerprint: .* != .*\); \w+"
    with pytest.raises(SpecMismatch, match=fingerprint):
        searcher.search_vectors(np.zeros(16), spec_fingerprint=theirs.spec.fingerprint())
