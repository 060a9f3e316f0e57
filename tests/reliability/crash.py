"""Crash cycles: clients upload, re-upload and delete while the whole server is SIGKILLed at random
points (during start-up too); a bulk embed job SIGKILLed mid-run and resumed. Then the ledger of
what was acknowledged is checked against the collection, its saved index and a live server."""

from __future__ import annotations

import collections
import hashlib
import http.client
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from lookalike.index import open_index
from lookalike.server.serve import READY_LINE
from lookalike.store.collection import Collection

from .harness import Client, Server, background, noise_png

ITEMS = "/v1/collections/c/items"
SHARD_SIZE = 3  # bulk runs write many small shards: more places to be killed


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across every cycle."""

    sent: dict[str, int] = field(default_factory=dict)  # sha256 -> seed of every image sent
    acknowledged: dict[int, str] = field(default_factory=dict)  # id -> sha256, from 201s
    deleted: set[int] = field(default_factory=set)  # ids whose DELETE answered 204
    delete_tried: set[int] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # any answer but 201/204 (none expected)
    contradictions: list[str] = field(default_factory=list)  # e.g. the same bytes, another id
    cut_off: int = 0  # requests the crash cut off (connection refused or dropped)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_seed: int = 1_000_000

    def new_seed(self) -> int:
        with self.lock:
            self.next_seed += 1
            return self.next_seed

    def live(self) -> set[int]:
        return set(self.acknowledged) - self.deleted


@dataclass
class CrashReport:
    cycles: int
    killed_while_starting: int
    acknowledged_uploads: int
    acknowledged_deletes: int
    cut_off: int
    checked: int  # acknowledged live items checked on disk and over HTTP
    lost: int  # acknowledged, not deleted, yet missing (or another image under its id)
    lost_why: list[str]  # for each lost item: on disk or over HTTP, and what was found
    deleted_in_doubt: int  # a DELETE cut off by the crash that had taken effect: allowed
    resurrected: int  # acknowledged deletes that came back
    duplicates: int  # live items holding the same bytes as another
    phantoms: int  # items whose bytes no client sent
    unacknowledged_kept: int  # durable before the crash, never answered: allowed
    refused: list[str]
    contradictions: list[str]
    start_seconds: list[float]

    def failures(self) -> list[str]:
        bad = [
            f"{name}: {getattr(self, name)}"
            for name in ("lost", "resurrected", "duplicates", "phantoms")
            if getattr(self, name)
        ]
        return bad + self.lost_why[:5] + self.refused[:5] + self.contradictions[:5]

    def lines(self) -> list[str]:
        starts = np.asarray(self.start_seconds)
        return [
            f"crash cycles survived: {self.cycles} (SIGKILL to master + workers; "
            f"{self.killed_while_starting} while starting)",
            f"acknowledged uploads: {self.acknowledged_uploads}, acknowledged deletes: "
            f"{self.acknowledged_deletes}; attempts cut off or refused while down: {self.cut_off}",
            f"acknowledged items checked: {self.checked}, lost: {self.lost}, deletes undone: "
            f"{self.resurrected}, duplicates: {self.duplicates}, phantom ids: {self.phantoms}; "
            f"written but unanswered (kept, allowed): {self.unacknowledged_kept}; deletes "
            f"cut off that took effect (allowed): {self.deleted_in_doubt}",
            f"server start to ready: median {np.median(starts):.1f} s, max {starts.max():.1f} s",
        ]


def client_loop(
    base: str, headers: dict[str, str], ledger: Ledger, rng: random.Random, stop: threading.Event
) -> None:
    """Upload new images, re-upload acknowledged ones, delete some; record every answer."""
    client = Client(base, headers, timeout=60)
    while not stop.is_set():
        roll = rng.random()
        with ledger.lock:
            live, shas = sorted(ledger.live()), sorted(set(ledger.acknowledged.values()))
        try:
            if roll < 0.12 and live:
                _delete(client, ledger, rng.choice(live))
            elif roll < 0.22 and shas:
                _upload(client, ledger, ledger.sent[rng.choice(shas)])
            else:
                _upload(client, ledger, ledger.new_seed())
        except (OSError, http.client.HTTPException):
            with ledger.lock:
                ledger.cut_off += 1
            time.sleep(0.05)  # down (killed, or not listening yet)
    client.close()


def _client(base, headers, ledger, rngs, number: int, stop: threading.Event) -> None:
    client_loop(base, headers, ledger, rngs[number], stop)


def _upload(client: Client, ledger: Ledger, seed: int) -> None:
    data = noise_png(seed)
    sha = hashlib.sha256(data).hexdigest()
    with ledger.lock:
        ledger.sent[sha] = seed
        before = {i for i, s in ledger.acknowledged.items() if s == sha}
        settled = not (before & ledger.delete_tried)  # no delete of it in doubt
    answer = client.upload(ITEMS, [(f"{seed}.png", data)], label=f"s{seed % 7}")
    if answer.status != 201:
        with ledger.lock:
            ledger.refused.append(f"upload: {answer.status} {answer.body[:200]!r}")
        return
    [item] = answer.json()["items"]
    with ledger.lock:
        live_before = before - ledger.deleted
        if settled and live_before and (item["created"] or {item["id"]} != live_before):
            ledger.contradictions.append(f"bytes of {live_before} answered as {item}")
        ledger.acknowledged[item["id"]] = sha


def _delete(client: Client, ledger: Ledger, item_id: int) -> None:
    with ledger.lock:
        ledger.delete_tried.add(item_id)
    answer = client.request("DELETE", f"{ITEMS}/{item_id}")
    with ledger.lock:
        if answer.status == 204:
            ledger.deleted.add(item_id)
        elif not (answer.status == 404 and item_id in ledger.deleted):  # deleted twice at once
            ledger.refused.append(f"delete {item_id}: {answer.status} {answer.body[:200]!r}")


def crash_cycles(
    path: Path,
    cycles: int,
    seed: int = 0,
    clients: int = 4,
    workers: int = 2,
    max_run: float = 2.5,
    starting_share: float = 0.2,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[CrashReport, Server]:
    """`cycles` times: start the server on collection `path`, let `clients` write, SIGKILL the
    process group at a random moment (a `starting_share` of cycles before it is ready); then
    restart once more and check everything acknowledged. Returns the report and that last
    server, still running (the caller stops it)."""
    ledger, rng, headers = Ledger(), random.Random(seed), headers or {}
    initial = set(Collection.open(path).items(["sha256"]).column("sha256").to_pylist())
    killed_starting, starts = 0, []
    for _ in range(cycles):
        rngs = [random.Random(rng.random()) for _ in range(clients)]
        with (
            Server({"c": path}, env, workers) as server,
            background(partial(_client, server.base, headers, ledger, rngs), clients),
        ):
            if starts and rng.random() < starting_share:
                time.sleep(rng.uniform(0.05, 0.95) * float(np.median(starts)))
                killed_starting += READY_LINE not in server.output()
            else:
                starts.append(server.wait_ready())
                _wait_for_writes(ledger, time.monotonic() + 60)  # writes are under way
                time.sleep(rng.uniform(0.0, max_run))
            server.kill()
    server = Server({"c": path}, env, workers).start()
    try:
        starts.append(server.wait_ready())
        report = check(path, ledger, initial, server.base, headers)
    except BaseException:
        server.kill()
        raise
    report.cycles, report.killed_while_starting = cycles, killed_starting
    report.start_seconds = starts
    return report, server


def _wait_for_writes(ledger: Ledger, deadline: float, uploads: int = 3) -> None:
    """Until `uploads` more uploads are acknowledged in this cycle, and a delete in the run so far
    (or the deadline passes): each cycle has writes under way when it is killed."""
    wanted = len(ledger.acknowledged) + uploads
    while time.monotonic() < deadline and (len(ledger.acknowledged) < wanted or not ledger.deleted):
        time.sleep(0.02)


def check(
    path: Path, ledger: Ledger, initial: set[str], base: str, headers: dict[str, str]
) -> CrashReport:
    """The ledger against the collection, the index the restart saved, and the live server."""
    collection = Collection.open(path)
    open_index(collection)  # raises IndexMismatch unless the saved index holds exactly the items
    items = collection.items(["id", "sha256"]).to_pylist()
    by_id = {row["id"]: row["sha256"] for row in items}
    counts = collections.Counter(by_id.values())
    live = ledger.live()
    in_doubt = ledger.delete_tried - ledger.deleted  # a DELETE the crash cut off: either outcome
    undone_by_doubt = {i for i in live & in_doubt if i not in by_id}
    lost_why = [
        f"item {i}: on disk {by_id.get(i, 'missing')!s:.12}, acknowledged {ledger.acknowledged[i]:.12}"
        for i in sorted(live - undone_by_doubt)
        if by_id.get(i) != ledger.acknowledged[i]
    ]
    on_disk = {int(line.split()[1].rstrip(":")) for line in lost_why}
    lost_why += _not_served(base, headers, sorted(live - on_disk - undone_by_doubt), by_id)
    resurrected = sorted(ledger.deleted & set(by_id))
    answered = set(ledger.acknowledged)
    return CrashReport(
        cycles=0,
        killed_while_starting=0,
        acknowledged_uploads=len(answered),
        acknowledged_deletes=len(ledger.deleted),
        cut_off=ledger.cut_off,
        checked=len(live),
        lost=len(lost_why),
        lost_why=lost_why,
        deleted_in_doubt=len(undone_by_doubt),
        resurrected=len(resurrected),
        duplicates=sum(count - 1 for count in counts.values()),
        phantoms=sum(sha not in ledger.sent and sha not in initial for sha in by_id.values()),
        unacknowledged_kept=len(set(by_id) - answered) - len(initial),
        refused=ledger.refused,
        contradictions=ledger.contradictions,
        start_seconds=[],
    )


def _not_served(base: str, headers, ids: list[int], by_id: dict[int, str]) -> list[str]:
    """Ids the live server does not answer correctly (and what it answered): item metadata, and
    the item itself as the nearest neighbour of its own stored vector (so the worker's index
    holds it)."""
    client, missing = Client(base, headers), []
    for item_id in ids:
        item = client.request("GET", f"{ITEMS}/{item_id}")
        hits = client.json("POST", "/v1/collections/c/search", {"id": item_id, "k": 1})
        found = hits.json()["results"][0]["hits"] if hits.status == 200 else []
        if (
            item.status != 200
            or by_id[item_id] not in item.json()["path"]  # uploads are stored by sha256
            or [h["id"] for h in found] != [item_id]
        ):
            missing.append(
                f"item {item_id}: served GET {item.status} {item.body[:120]!r}, search "
                f"{hits.status} {found or hits.body[:200]!r}"
            )
    client.close()
    return missing


# ----- the bulk embed job ---------------------------------------------------------------------


@dataclass
class BulkReport:
    images: int
    kills: int
    finished_early: int
    embedded_once: int
    missing: int
    twice: int

    def lines(self) -> list[str]:
        return [
            f"bulk embed: {self.kills} SIGKILLs mid-run then resumed ({self.finished_early} runs "
            f"finished before their kill); {self.images} images, embedded exactly once: "
            f"{self.embedded_once}, missing: {self.missing}, embedded twice: {self.twice}"
        ]


def embed_command(folder: Path, collection: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lookalike",
        "-v",
        "embed",
        str(folder),
        "--collection",
        str(collection),
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--image-size",
        "64",
        "--shard-size",
        str(SHARD_SIZE),
        "--batch-size",
        str(SHARD_SIZE),
        "-q",
    ]


def kill_bulk_runs(folder: Path, collection: Path, kills: int, seed: int = 0) -> tuple[int, int]:
    """Run `lookalike embed` up to `kills` times, each SIGKILLed a random few milliseconds after a
    random one of the shards it has left to write; (runs killed, runs that finished first)."""
    rng, killed, finished = random.Random(seed), 0, 0
    images = len(list(folder.iterdir()))
    for _ in range(kills):
        done = len(Collection.open(collection)) if Collection.exists(collection) else 0
        shards = (images - done) // SHARD_SIZE  # what this run has left to write
        if shards < 2:
            break  # too little left to be killed mid-run: the caller's resume finishes it
        process = subprocess.Popen(
            embed_command(folder, collection),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        target, written = rng.randint(1, max(1, (shards - 1) // 3)), 0  # room for more kills
        assert process.stderr is not None
        for line in process.stderr:
            written += "wrote shard" in line
            if written == target:
                time.sleep(rng.uniform(0.0, 0.02))
                process.send_signal(signal.SIGKILL)
                break
        finished += process.wait(timeout=120) == 0
        killed += process.returncode == -signal.SIGKILL
    return killed, finished


def check_bulk(folder: Path, collection_dir: Path, kills: int, finished: int) -> BulkReport:
    """Every image of `folder` is an item exactly once (deleted rows included), by path and bytes."""
    collection = Collection.open(collection_dir)
    rows = collection.items(["path", "sha256"], include_deleted=True).to_pylist()
    paths = collections.Counter(row["path"] for row in rows)
    shas = collections.Counter(row["sha256"] for row in rows)
    files = sorted(str(p) for p in folder.iterdir())
    return BulkReport(
        images=len(files),
        kills=kills,
        finished_early=finished,
        embedded_once=sum(paths[f] == 1 for f in files),
        missing=sum(paths[f] == 0 for f in files),
        twice=sum(c - 1 for c in paths.values()) + sum(c - 1 for c in shas.values()),
    )
