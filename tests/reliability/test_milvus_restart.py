"""Milvus SIGKILLed and restarted (same port, same data) under two `lookalike serve` replicas:
they serve again by themselves (no restart), `/readyz` says not ready while Milvus cannot answer,
and a write answered 503 meanwhile is durable, pending, and safe to retry (the same id)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port
from milvus_server import fresh_name, start_milvus_lite, stop_milvus_lite

from lookalike.index.milvus_sync import open_milvus
from lookalike.store.collection import Collection

from .crash import ITEMS
from .harness import Client, Server, noise_png

# real servers, clusters, browsers or kills: `make test` runs it, `pytest -m "not slow"` does not
pytestmark = pytest.mark.slow

SEARCH = "/v1/collections/c/search"
RECOVERY_LIMIT = 30.0  # seconds from Milvus accepting connections again to both replicas serving


def _search_ok(base: str, item_id: int) -> bool:
    with contextlib.closing(Client(base, timeout=10)) as client:
        answer = client.json("POST", SEARCH, {"id": item_id, "k": 1})
    return answer.status == 200 and answer.json()["results"][0]["hits"][0]["id"] == item_id


def _poll_readiness(bases: list[str], seen: list[tuple[float, str, int]], stop: threading.Event):
    """Record (time, replica, /readyz status) every 0.2 s until `stop`."""
    while not stop.is_set():
        for base in bases:
            with contextlib.closing(Client(base, timeout=10)) as client:
                seen.append((time.monotonic(), base, client.request("GET", "/readyz").status))
        stop.wait(0.2)


@pytest.mark.slow
def test_replicas_serve_again_by_themselves_after_milvus_restarts(
    tiny_spec, tmp_path: Path
) -> None:
    pytest.importorskip("pymilvus", reason="the `milvus` extra is not installed")
    pytest.importorskip("milvus_lite", reason="the `milvus` extra is not installed")
    data, port = tmp_path / "milvus" / "data", free_port()
    data.parent.mkdir()
    path = Collection.create(tmp_path / "c", tiny_spec).path
    milvus = start_milvus_lite(data, port)
    env = {"LOOKALIKE_STORE": f"milvus://127.0.0.1:{port}/{fresh_name('restart')}"}
    seen: list[tuple[float, str, int]] = []
    stop = threading.Event()
    try:
        with Server({"c": path}, env) as first, Server({"c": path}, env) as second:
            first.wait_ready(), second.wait_ready()
            bases = [first.base, second.base]
            files = [("a.png", noise_png(1)), ("c.png", noise_png(3))]
            kept, doomed = Client(first.base).upload(ITEMS, files).json()["items"]
            assert all(_search_ok(base, kept["id"]) for base in bases)
            poller = threading.Thread(target=_poll_readiness, args=(bases, seen, stop))
            poller.start()
            stop_milvus_lite(milvus, kill=True)
            killed = time.monotonic()
            time.sleep(3)  # past the readiness cache
            down = Client(second.base).upload(ITEMS, [("b.png", noise_png(2))])
            deleted = Client(first.base).request("DELETE", f"{ITEMS}/{doomed['id']}")
            searched_down = _search_ok(first.base, kept["id"])
            restarting = time.monotonic()  # Milvus may answer before start_milvus_lite returns
            milvus = start_milvus_lite(data, port)
            restarted = time.monotonic()
            while not all(_search_ok(base, kept["id"]) for base in bases):
                assert time.monotonic() - restarted < RECOVERY_LIMIT, "replicas did not recover"
                time.sleep(0.5)
            recovered = time.monotonic() - restarted
            time.sleep(2)  # the poller sees them ready again
            stop.set()
            poller.join()
            again = Client(first.base).upload(ITEMS, [("b.png", noise_png(2))])  # the retry
            assert again.status == 201, again.body[:300]
            retried = again.json()["items"][0]
            assert _search_ok(second.base, retried["id"])
            again = Client(second.base).json("POST", SEARCH, {"id": kept["id"], "k": 5})
            assert doomed["id"] not in [hit["id"] for hit in again.json()["results"][0]["hits"]]
            store = open_milvus(env["LOOKALIKE_STORE"], Collection.open(path))
            assert not store.has([doomed["id"]]).any(), "a pending delete never reached Milvus"
            print(f"replicas served again {recovered:.1f} s after Milvus restarted")
    finally:
        stop.set()
        stop_milvus_lite(milvus)
    while_down = [status for at, _, status in seen if killed + 2.5 < at < restarting]
    assert while_down and all(status == 503 for status in while_down), while_down
    at_end = {base: status for _, base, status in seen}
    assert set(at_end.values()) == {200}, at_end
    assert not searched_down
    assert down.status == 503 and "retrying is safe" in down.json()["detail"], down.body[:300]
    assert retried["id"] == down_id(down) and not retried["created"]
    assert deleted.status == 503 and down_id(deleted) == doomed["id"], deleted.body[:300]


def down_id(answer) -> int:
    """The item id a pending write's problem names."""
    return answer.json()["pending_items"][0]
