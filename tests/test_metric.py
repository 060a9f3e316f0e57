"""The one metric rule (`lookalike.index.metric`): a distance measured between two stored vectors
(calibration's variants) is the distance a search reports for the same pair, for both metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_spec
from synthetic import WIDTH, make_collection, separable

from lookalike.errors import InvalidArgument
from lookalike.index.metric import pair_distances, radius
from lookalike.index.search import Searcher


@pytest.mark.parametrize("normalize", [True, False])
def test_a_pair_distance_is_what_search_reports(tmp_path: Path, normalize: bool) -> None:
    vectors, labels = separable(20)
    if normalize:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    collection = make_collection(
        tmp_path / "c",
        labels,
        vectors,
        make_spec(dims={"embedding": WIDTH, "layer3": WIDTH}, normalize=normalize),
    )
    searcher = Searcher.open(collection.path, "embedding", read_only=False)
    assert searcher.metric == ("ip" if normalize else "l2")
    hits = searcher.search_ids([0], k=8)[0]
    measured = pair_distances(
        searcher.metric, np.repeat(vectors[:1], len(hits), 0), vectors[[h.id for h in hits]]
    )
    assert [h.distance for h in hits] == pytest.approx(measured.tolist(), abs=1e-5)
    assert hits[0].distance == 0.0 and hits[-1].distance > 0.1
    within = searcher.search_ids([0], k=None, threshold=hits[3].distance + 1e-4)[0]
    assert {h.id for h in within} >= {h.id for h in hits[:4]}


def test_a_cosine_threshold_beyond_two_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="at most 2"):
        radius("ip", 2.5)
    assert radius("l2", 3.0) == 9.0
