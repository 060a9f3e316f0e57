"""Two `lookalike serve` replicas on one collection and one Milvus (a real Milvus Lite server):
writes on one are seen by searches on the other at once; a replica SIGKILLed during uploads loses
no acknowledged item, and its restart reconciles Milvus with the collection."""

from __future__ import annotations

import random
import time
from functools import partial
from pathlib import Path

from milvus_server import fresh_name

from lookalike.index.milvus_sync import open_milvus
from lookalike.store.collection import Collection

from .crash import ITEMS, Ledger, _client, _not_served, _wait_for_writes
from .harness import Client, Server, background, noise_png

SEARCH = "/v1/collections/c/search"


def _ids(answer) -> list[int]:
    assert answer.status == 200, answer.body[:300]
    return [hit["id"] for hit in answer.json()["results"][0]["hits"]]


def test_replicas_see_each_others_writes_at_once(empty_collection: Path, milvus_uri: str) -> None:
    env = {"LOOKALIKE_STORE": f"{milvus_uri}/{fresh_name('replicas')}"}
    with Server({"c": empty_collection}, env) as one, Server({"c": empty_collection}, env) as two:
        one.wait_ready(), two.wait_ready()
        first, second = Client(one.base), Client(two.base)
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


def test_a_replica_killed_during_uploads_loses_no_acknowledged_item(
    empty_collection: Path, milvus_uri: str
) -> None:
    uri = f"{milvus_uri}/{fresh_name('crash')}"
    env, ledger = {"LOOKALIKE_STORE": uri}, Ledger()
    rngs = [random.Random(seed) for seed in range(3)]
    with Server({"c": empty_collection}, env) as survivor:
        survivor.wait_ready()
        with Server({"c": empty_collection}, env) as victim:
            victim.wait_ready()
            with background(partial(_client, victim.base, {}, ledger, rngs), len(rngs)):
                _wait_for_writes(ledger, time.monotonic() + 120, uploads=12)
                time.sleep(random.Random(7).uniform(0.0, 0.5))
                victim.kill()
        collection = Collection.open(empty_collection)
        stored = set(open_milvus(uri, collection).ids().tolist())
        live = ledger.live()
        assert len(live) >= 8 and ledger.deleted, (len(live), ledger.deleted)
        assert live <= stored, f"acknowledged, not in Milvus: {sorted(live - stored)}"
        assert not ledger.deleted & stored, "acknowledged deletes still in Milvus"
        rows = collection.items(["id", "sha256"]).to_pylist()
        by_id = {row["id"]: row["sha256"] for row in rows}
        assert _not_served(survivor.base, {}, sorted(live), by_id) == []
        assert not ledger.refused and not ledger.contradictions
    with Server({"c": empty_collection}, env) as restarted:  # reconciles on start
        restarted.wait_ready()
    wanted = sorted(Collection.open(empty_collection).items(["id"]).column("id").to_pylist())
    assert open_milvus(uri, Collection.open(empty_collection)).ids().tolist() == wanted
