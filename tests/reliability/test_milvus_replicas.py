"""Two `lookalike serve` replicas on one collection and one Milvus (a real Milvus Lite server):
writes on one are seen by searches on the other at once; a replica SIGKILLed during uploads loses
no acknowledged item, and its restart reconciles Milvus with the collection."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from milvus_server import fresh_name

from lookalike.index.milvus_sync import open_milvus
from lookalike.store.collection import Collection

from .crash import ITEMS, Ledger, _client, _not_served, _wait_for_writes
from .harness import Client, Server, background, noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

SEARCH = "/v1/collections/c/search"


def _ids(answer) -> list[int]:
    assert answer.status == 200, answer.body[:300]
    return [hit["id"] for hit in answer.json()["results"][0]["hits"]]


@pytest.fixture(scope="module")
def replicas(tiny_spec, milvus_uri: str, tmp_path_factory: pytest.TempPathFactory):
    """Two replicas (one worker each) of one empty collection on one Milvus collection; the
    tests below share them (the second kills one)."""
    path = Collection.create(tmp_path_factory.mktemp("replicas") / "c", tiny_spec).path
    uri = f"{milvus_uri}/{fresh_name('replicas')}"
    env = {"LOOKALIKE_STORE": uri}
    with Server({"c": path}, env) as survivor, Server({"c": path}, env) as victim:
        survivor.wait_ready(), victim.wait_ready()
        yield Replicas(path, uri, env, survivor, victim)


@dataclass
class Replicas:
    path: Path
    uri: str
    env: dict[str, str]
    survivor: Server
    victim: Server


def test_replicas_see_each_others_writes_at_once(replicas: Replicas) -> None:
    first, second = Client(replicas.victim.base), Client(replicas.survivor.base)
    answer = first.upload(ITEMS, [("a.png", noise_png(1)), ("b.png", noise_png(2))], label="x")
    assert answer.status == 201, answer.body
    kept, dropped = (item["id"] for item in answer.json()["items"])
    assert _ids(second.json("POST", SEARCH, {"id": kept, "k": 1})) == [kept]
    filtered = second.json("POST", SEARCH, {"id": kept, "k": 5, "labels": ["x"]})
    assert sorted(_ids(filtered)) == sorted([kept, dropped])
    assert second.request("DELETE", f"{ITEMS}/{dropped}").status == 204
    assert _ids(first.json("POST", SEARCH, {"id": kept, "k": 5})) == [kept]
    again = second.upload(ITEMS, [("a.png", noise_png(1))]).json()["items"][0]
    assert again["id"] == kept and not again["created"]


def test_a_replica_killed_during_uploads_loses_no_acknowledged_item(replicas: Replicas) -> None:
    ledger, rngs = Ledger(), [random.Random(seed) for seed in range(3)]
    with background(partial(_client, replicas.victim.base, {}, ledger, rngs), len(rngs)):
        _wait_for_writes(ledger, time.monotonic() + 120, uploads=12)
        time.sleep(random.Random(7).uniform(0.0, 0.5))
        replicas.victim.kill()
    collection = Collection.open(replicas.path)
    stored = set(open_milvus(replicas.uri, collection).ids().tolist())
    live = ledger.live()
    assert len(live) >= 8 and ledger.deleted, (len(live), ledger.deleted)
    assert live <= stored, f"acknowledged, not in Milvus: {sorted(live - stored)}"
    assert not ledger.deleted & stored, "acknowledged deletes still in Milvus"
    by_id = {row["id"]: row["sha256"] for row in collection.items(["id", "sha256"]).to_pylist()}
    assert _not_served(replicas.survivor.base, {}, sorted(live), by_id) == []
    assert not ledger.refused and not ledger.contradictions
    with Server({"c": replicas.path}, replicas.env) as restarted:  # reconciles on start
        restarted.wait_ready()
    wanted = sorted(Collection.open(replicas.path).items(["id"]).column("id").to_pylist())
    assert open_milvus(replicas.uri, Collection.open(replicas.path)).ids().tolist() == wanted
